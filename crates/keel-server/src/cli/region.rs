//! `keel region status|promote`: where a node's region stands, and the promotion of a standby
//! region (straight on its database, like `keel keys create -c`: the primary may be gone).

use std::path::Path;

use anyhow::Context;
use keel_core::clock::{Clock, SystemClock};
use keel_core::config::{self, Overrides};
use keel_store::StoreOptions;
use serde_json::Value;

use super::client::{print_json, KeelClient};
use super::table::Table;

pub(crate) async fn status(client: &KeelClient, json: bool) -> anyhow::Result<()> {
    let region = client.get_json("/v1/region").await?;
    if json {
        print_json(&region);
        return Ok(());
    }
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_owned(),
        Some(v) => v.to_string(),
    };
    println!(
        "region {} ({}): {}, epoch {}, primary {}",
        text(region.get("name")),
        text(region.get("role")),
        text(region.get("standing")),
        text(region.get("epoch")),
        text(region.get("primary"))
    );
    let peers = region.get("peers").and_then(Value::as_array).cloned().unwrap_or_default();
    if !peers.is_empty() {
        let mut table = Table::with_header(["PEER", "URL", "REACHABLE", "STANDING", "EPOCH", "PRIMARY"]);
        for p in &peers {
            table.row([
                text(p.get("name")),
                text(p.get("url")),
                text(p.get("reachable")),
                text(p.get("standing").or(p.get("error"))),
                text(p.get("epoch")),
                text(p.get("primary")),
            ]);
        }
        print!("{table}");
    }
    Ok(())
}

/// Promotes the region of the config at `path`: ends its replica's recovery and raises the
/// epoch to name it. Its running nodes see it within a second and begin admitting; nodes of
/// the old primary stand down as soon as they see the new epoch.
pub(crate) async fn promote(path: &Path, json: bool) -> anyhow::Result<()> {
    let config = config::load(Some(path), &Overrides::from_process_env()).map_err(anyhow::Error::new)?;
    let region = config.region.as_ref().context("the config has no [region]: nothing to promote")?;
    if region.role == keel_core::region::Role::Active {
        anyhow::bail!("region {} is active-active: it admits already, there is nothing to promote", region.name);
    }
    let store = keel_store::open(&StoreOptions { url: config.storage.url.clone(), fsync: config.storage.fsync })
        .context("cannot open the region's database")?;
    let now = SystemClock.now_ms();
    let promotion = keel_server::regions::promote(store.as_ref(), &region.name, now)
        .await
        .with_context(|| format!("promoting region {}", region.name))?;
    let loss = keel_server::regions::loss_warning(&promotion, now);
    let epoch = &promotion.epoch;
    if json {
        let last = promotion.last_replayed.map(keel_core::clock::rfc3339);
        print_json(&serde_json::json!({
            "region": region.name, "epoch": epoch.number, "primary": epoch.primary, "last_replayed_commit": last,
        }));
    } else {
        println!("region {} is primary at epoch {}", epoch.primary, epoch.number);
        if let Some(loss) = loss {
            eprintln!("note: {loss}");
        }
    }
    Ok(())
}
