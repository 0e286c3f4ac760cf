//! LISTEN/NOTIFY: a transaction that makes work due tells every node, through the `keel_work`
//! channel, which function it concerns; each node's listener wakes that function's dispatcher.
//!
//! Notifications are sent at commit and deduplicated within a transaction, so a group commit of
//! a thousand enqueues sends one per function. They are a shortcut, not the source of truth: a
//! node that missed some (its listener was reconnecting) wakes every function with due work once
//! it listens again, and dispatchers still sleep only until their next known due time.

use std::time::Duration;

use keel_core::store::WakeFn;
use keel_core::Result;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};

use super::rows::{db_err, execute, Tx};

const CHANNEL: &str = "keel_work";
/// Pause before reconnecting a lost listener, doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Tells the other nodes (at commit) that `functions` have work due.
pub(crate) async fn notify(tx: &Tx<'_>, functions: &[String]) -> Result<()> {
    if functions.is_empty() {
        return Ok(());
    }
    execute(tx, "SELECT pg_notify('keel_work', f) FROM unnest($1::TEXT[]) AS f", &[&functions])
        .await
        .map_err(db_err)?;
    Ok(())
}

/// Listens on a connection of its own (pooled ones are shared) until aborted, reconnecting
/// whenever the database goes away.
pub(crate) fn spawn_listener(config: tokio_postgres::Config, wake: WakeFn) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match listen(&config, &wake).await {
                Ok(()) => backoff = FIRST_BACKOFF,
                Err(e) => tracing::warn!(error = %super::rows::describe(&e), "LISTEN connection lost; reconnecting"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    })
}

/// One listening connection, from connect to loss.
async fn listen(config: &tokio_postgres::Config, wake: &WakeFn) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (heard, mut functions) = mpsc::unbounded_channel::<String>();
    // The connection only makes progress while polled; notifications arrive through it.
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    let _ = heard.send(n.payload().to_string());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    let pending =
        client.query("SELECT DISTINCT function FROM invocations WHERE status IN ('queued', 'retrying')", &[]).await?;
    for row in pending {
        wake(row.get::<_, &str>(0));
    }
    while let Some(function) = functions.recv().await {
        wake(&function);
    }
    drop(client);
    driver.await.unwrap_or(Ok(()))
}
