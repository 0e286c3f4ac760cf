//! This node's region (`[region]`): where it stands — active, standby or fenced — kept current by
//! a watch of its database and its peers, the refusal of writes while it does not admit, and the
//! promotion of a standby region.
//!
//! The decision is `keel_core::region::standing`; this module reads what it needs and acts on
//! what it says. A standby node serves reads from its replica and starts no work; when its
//! database is promoted and the epoch names its region, it begins admitting and dispatching
//! without a restart (`watch` calls the node's `activate`). An active node that learns of a
//! newer epoch naming another region stops dispatching and admitting at once and writes that
//! epoch into its own database, so a restart keeps it fenced.

mod forward;
pub(crate) mod replicate;

pub(crate) use forward::{forward_home, forward_named};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keel_core::config::RegionConfig;
use keel_core::region::{Epoch, LocalView, PeerView, Role, Standing};
use keel_core::store::Store;
use serde::Serialize;
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::client::{Access, KeelClient};
use crate::problem::Problem;
use crate::state::Shared;

/// How often a node looks at its database and its peers.
pub(crate) const LOOK_EVERY: Duration = Duration::from_secs(1);
/// How long a peer has to answer one look.
const PEER_TIMEOUT: Duration = Duration::from_secs(2);

/// The region's live state on one node.
#[derive(Debug)]
pub(crate) struct Region {
    config: Option<RegionConfig>,
    peers: Vec<Peer>,
    standing: watch::Sender<Standing>,
    /// The epoch row at the last look.
    epoch: Mutex<Option<Epoch>>,
    /// Each peer's last answer (or why there was none).
    seen: Mutex<BTreeMap<String, Result<PeerAnswer, String>>>,
}

#[derive(Debug)]
struct Peer {
    name: String,
    url: String,
    /// Sends the `[region] key`: looks, replication, KV calls forwarded to their home.
    client: Option<KeelClient>,
    /// Sends nothing of its own: requests forwarded for their `keel-region` carry the caller's
    /// credentials.
    plain: Option<KeelClient>,
}

/// What `GET /v1/region` answers: this node's region and where it stands.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub(crate) struct RegionView {
    /// `[region] name`; absent on a node without `[region]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "eu")]
    pub(crate) name: Option<String>,
    /// `primary`, `standby` or `active`, as configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "primary")]
    pub(crate) role: Option<String>,
    /// `active` (admits and dispatches), `standby` (serves reads) or `fenced` (a newer epoch
    /// names another region primary).
    #[schema(example = "active")]
    pub(crate) standing: String,
    /// Promotions the region's database has seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 1)]
    pub(crate) epoch: Option<u64>,
    /// The region the epoch names primary.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "eu")]
    pub(crate) primary: Option<String>,
    #[serde(default)]
    pub(crate) peers: Vec<PeerStatus>,
}

/// A peer region as this node last saw it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub(crate) struct PeerStatus {
    #[schema(example = "us")]
    pub(crate) name: String,
    #[schema(example = "https://keel-us.internal:7733")]
    pub(crate) url: String,
    pub(crate) reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) standing: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) epoch: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) primary: Option<String>,
    /// Why the last look got no answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

/// The part of a peer's [`RegionView`] a look uses.
#[derive(Debug, Clone, serde::Deserialize)]
struct PeerAnswer {
    name: Option<String>,
    standing: String,
    epoch: Option<u64>,
    primary: Option<String>,
}

impl Region {
    pub(crate) fn new(config: Option<&RegionConfig>) -> Self {
        let initial = match config.map(|c| c.role) {
            Some(Role::Standby) => Standing::Standby { primary: None },
            _ => Standing::Active,
        };
        let peers = config
            .map(|c| {
                c.peers
                    .iter()
                    .map(|(name, url)| {
                        let access = Access { url: url.clone(), api_key: c.key.clone(), ca_file: None };
                        let client = KeelClient::connect(&access)
                            .map_err(|e| tracing::error!(peer = %name, error = %e, "cannot talk to this peer"))
                            .ok();
                        let plain = KeelClient::connect(&Access { api_key: None, ..access }).ok();
                        Peer { name: name.clone(), url: url.clone(), client, plain }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            config: config.cloned(),
            peers,
            standing: watch::channel(initial).0,
            epoch: Mutex::new(None),
            seen: Mutex::new(BTreeMap::new()),
        }
    }

    pub(crate) fn config(&self) -> Option<&RegionConfig> {
        self.config.as_ref()
    }

    pub(crate) fn standing(&self) -> Standing {
        self.standing.borrow().clone()
    }

    pub(crate) fn is_active(&self) -> bool {
        self.standing.borrow().is_active()
    }

    /// This region's name, when `[region]` is configured.
    pub(crate) fn name(&self) -> Option<&str> {
        self.config.as_ref().map(|c| c.name.as_str())
    }

    /// The names of the peer regions.
    pub(crate) fn peer_names(&self) -> impl Iterator<Item = &str> {
        self.peers.iter().map(|p| p.name.as_str())
    }

    /// A client for a peer, sending the `[region] key` (`keyed`) or no credentials of its own.
    pub(crate) fn peer_client(&self, region: &str, keyed: bool) -> Option<KeelClient> {
        let peer = self.peers.iter().find(|p| p.name == region)?;
        if keyed {
            peer.client.clone()
        } else {
            peer.plain.clone()
        }
    }

    /// The base URL of a peer region's API, when configured.
    pub(crate) fn peer_url(&self, region: &str) -> Option<String> {
        self.peers.iter().find(|p| p.name == region).map(|p| p.url.clone())
    }

    /// Why this node refuses a write now: `None` while it admits.
    pub(crate) fn refusal(&self) -> Option<Problem> {
        if self.is_active() {
            return None;
        }
        let me = self.config.as_ref().map_or("", |c| c.name.as_str());
        let problem = match self.standing() {
            Standing::Active => return None,
            Standing::Standby { primary } => {
                let detail = match &primary {
                    Some(primary) => {
                        format!("region {me} is a standby: it serves reads; writes go to region {primary}")
                    }
                    None => format!(
                        "region {me} is a standby: it serves reads and admits once promoted (`keel region promote`)"
                    ),
                };
                let url = primary.as_deref().and_then(|p| self.peer_url(p));
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "standby", "Standby region", detail).primary(primary, url)
            }
            Standing::Fenced { epoch, primary } => {
                let detail = format!(
                    "region {me} was failed over: epoch {epoch} made region {primary} primary, so this node admits and dispatches nothing"
                );
                let url = self.peer_url(&primary);
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "fenced", "Fenced region", detail)
                    .primary(Some(primary), url)
            }
        };
        Some(problem.retry_after(1))
    }

    /// What `GET /v1/region` answers.
    pub(crate) fn view(&self) -> RegionView {
        let epoch = self.epoch.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let peers = self
            .peers
            .iter()
            .map(|peer| {
                let last = seen.get(&peer.name);
                let answer = last.and_then(|l| l.as_ref().ok());
                PeerStatus {
                    name: peer.name.clone(),
                    url: peer.url.clone(),
                    reachable: answer.is_some(),
                    standing: answer.map(|a| a.standing.clone()),
                    epoch: answer.and_then(|a| a.epoch),
                    primary: answer.and_then(|a| a.primary.clone()),
                    error: last.and_then(|l| l.as_ref().err().cloned()),
                }
            })
            .collect();
        RegionView {
            name: self.config.as_ref().map(|c| c.name.clone()),
            role: self.config.as_ref().map(|c| c.role.as_str().to_owned()),
            standing: self.standing().as_str().to_owned(),
            epoch: epoch.as_ref().map(|e| e.number),
            primary: epoch.map(|e| e.primary),
            peers,
        }
    }

    /// Asks every peer where it stands, at once.
    async fn ask_peers(&self) -> Vec<(String, Result<PeerAnswer, String>)> {
        let mut asks = tokio::task::JoinSet::new();
        for (i, peer) in self.peers.iter().enumerate() {
            let client = peer.client.clone();
            asks.spawn(async move {
                let Some(client) = client else { return (i, Err("no client".to_owned())) };
                let answer = match tokio::time::timeout(PEER_TIMEOUT, client.get_json("/v1/region")).await {
                    Err(_) => Err(format!("no answer within {} s", PEER_TIMEOUT.as_secs())),
                    Ok(Err(e)) => Err(e.to_string()),
                    Ok(Ok(json)) => {
                        serde_json::from_value::<PeerAnswer>(json).map_err(|e| format!("not a region: {e}"))
                    }
                };
                (i, answer)
            });
        }
        let mut answers: Vec<_> = asks.join_all().await;
        answers.sort_by_key(|(i, _)| *i);
        answers.into_iter().map(|(i, answer)| (self.peers[i].name.clone(), answer)).collect()
    }

    /// Reads the database and the peers, decides, and writes what the decision needs written
    /// (a primary's first epoch, a fence). Returns the new standing; a database that cannot be
    /// read leaves the standing as it was.
    pub(crate) async fn look(&self, store: &Arc<dyn Store>, now: keel_core::clock::Millis) -> Standing {
        let Some(config) = &self.config else { return Standing::Active };
        let before = self.standing();
        if matches!(before, Standing::Fenced { .. }) {
            // Fenced for good: only a restart (which reads the fence back) looks again.
            return before;
        }
        let answers = self.ask_peers().await;
        let peers: Vec<PeerView> = answers
            .iter()
            .filter_map(|(name, answer)| {
                let answer = answer.as_ref().ok()?;
                Some(PeerView {
                    region: answer.name.clone().unwrap_or_else(|| name.clone()),
                    epoch: answer.epoch?,
                    primary: answer.primary.clone()?,
                })
            })
            .collect();
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = answers.into_iter().collect();
        let (mut local, read) = match store.region_view().await {
            Ok(local) => (local, true),
            Err(e) => {
                // Decided on what was known: a standby stays one; a primary still heeds a peer
                // with a newer epoch, so a database that comes back finds it fenced already.
                tracing::warn!(error = %e, "region: cannot read the database's role and epoch");
                let epoch = self.epoch.lock().unwrap_or_else(|p| p.into_inner()).clone();
                (LocalView { in_recovery: config.role == Role::Standby, epoch }, false)
            }
        };
        let mut standing = keel_core::region::standing(&config.name, config.role, &local, &peers);
        if read && standing.is_active() && local.epoch.is_none() {
            // A primary's first start: epoch 1 names it.
            let first = keel_core::region::promoted(&config.name, None);
            match store.raise_epoch(first, now).await {
                Ok(_) => local = store.region_view().await.unwrap_or(local),
                Err(e) => tracing::warn!(error = %e, "region: cannot write the first epoch"),
            }
            standing = keel_core::region::standing(&config.name, config.role, &local, &peers);
        }
        if let Standing::Fenced { epoch, primary } = &standing {
            let ours = local.epoch.as_ref().is_some_and(|e| e.primary == config.name);
            if ours && !local.in_recovery {
                // In the background: an old primary with synchronous replication and no standby
                // left cannot commit at all (itself a fence), and the node must not wait on it.
                let (store, fence) = (store.clone(), Epoch { number: *epoch, primary: primary.clone() });
                tokio::spawn(async move {
                    match store.raise_epoch(fence, now).await {
                        Ok(_) => tracing::info!("region: the fence is written to this region's database"),
                        Err(e) => {
                            tracing::warn!(error = %e, "region: fenced, but the fence could not be written to the database")
                        }
                    }
                });
            }
        }
        if read {
            *self.epoch.lock().unwrap_or_else(|p| p.into_inner()) = local.epoch.clone();
        }
        if standing != before {
            match &standing {
                Standing::Active => {
                    tracing::info!(region = %config.name, epoch = ?local.epoch.as_ref().map(|e| e.number), "region: active: admitting and dispatching")
                }
                Standing::Standby { primary } => {
                    tracing::info!(region = %config.name, primary = ?primary, "region: standby: serving reads, refusing writes")
                }
                Standing::Fenced { epoch, primary } => {
                    tracing::error!(region = %config.name, epoch, primary = %primary, "region: fenced: a newer epoch made another region primary; this node stops admitting and dispatching")
                }
            }
            self.standing.send_replace(standing.clone());
        }
        standing
    }

    /// Whether a standby's primary has stopped answering as an active region.
    fn primary_answers(&self) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.values().any(|answer| answer.as_ref().is_ok_and(|a| a.standing == "active"))
    }
}

/// The peer region a KV namespace lives in, when it is not this one (`[kv.NS] home`).
pub(crate) fn home_elsewhere(shared: &Shared, ns: &str) -> Option<String> {
    let home = shared.config.kv.get(ns)?.home.as_deref()?;
    (Some(home) != shared.region.name()).then(|| home.to_owned())
}

/// What a promotion did: the epoch the database holds now, and when the last transaction the
/// replica replayed had committed on the old primary (`None`: the database was no replica).
#[derive(Debug, Clone)]
pub struct Promotion {
    pub epoch: Epoch,
    pub last_replayed: Option<keel_core::clock::Millis>,
}

/// Promotes region `me`'s database: ends the replica's recovery (when it is one), then raises
/// the epoch so that it names `me`. What `keel region promote` and an automatic failover do.
pub async fn promote(store: &dyn Store, me: &str, now: keel_core::clock::Millis) -> keel_core::Result<Promotion> {
    let last_replayed = store.promote().await?;
    let local: LocalView = store.region_view().await?;
    if let Some(epoch) = local.epoch.as_ref().filter(|e| e.primary == me) {
        return Ok(Promotion { epoch: epoch.clone(), last_replayed });
    }
    let epoch = keel_core::region::promoted(me, local.epoch.as_ref());
    store.raise_epoch(epoch, now).await?;
    // Another promoter may have raised it first: report what the database holds.
    let local = store.region_view().await?;
    let epoch = local.epoch.ok_or_else(|| keel_core::Error::Unavailable("the epoch was not written".into()))?;
    Ok(Promotion { epoch, last_replayed })
}

/// What a promotion says about data possibly lost: under asynchronous replication, writes the
/// old primary acknowledged after the last replayed commit did not reach this region.
pub fn loss_warning(promotion: &Promotion, now: keel_core::clock::Millis) -> Option<String> {
    let at = promotion.last_replayed?;
    Some(format!(
        "the last transaction replayed from the old primary committed there at {} ({} ms before the promotion): \
         with asynchronous replication, writes it acknowledged after that are not in this region",
        keel_core::clock::rfc3339(at),
        (now - at).max(0)
    ))
}

/// Looks every [`LOOK_EVERY`] until `stop`; calls `activate` the first time the node becomes
/// active (a standby promoted), and `fence` when it is fenced. A standby with `failover_after`
/// promotes its region once no peer has answered as an active region for that long.
pub(crate) async fn watch(
    shared: Arc<Shared>,
    mut activate: Option<Box<dyn FnOnce() + Send>>,
    fence: Box<dyn Fn() + Send>,
    mut stop: watch::Receiver<bool>,
) {
    let region = shared.region.clone();
    let Some(config) = region.config().cloned() else { return };
    let mut primary_seen = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(LOOK_EVERY) => {}
        }
        let standing = region.look(&shared.store, shared.clock.now_ms()).await;
        match standing {
            Standing::Active => {
                if let Some(activate) = activate.take() {
                    activate();
                }
            }
            Standing::Fenced { .. } => {
                fence();
                return;
            }
            Standing::Standby { .. } => {
                if region.primary_answers() {
                    primary_seen = tokio::time::Instant::now();
                }
                let Some(after) = config.failover_after else { continue };
                if primary_seen.elapsed() >= after {
                    tracing::warn!(region = %config.name, after = ?after, "region: the primary has not answered as active; promoting this region");
                    match promote(shared.store.as_ref(), &config.name, shared.clock.now_ms()).await {
                        Ok(promotion) => {
                            let loss = loss_warning(&promotion, shared.clock.now_ms()).unwrap_or_default();
                            tracing::warn!(region = %config.name, epoch = promotion.epoch.number, loss, "region: promoted");
                        }
                        Err(e) => tracing::error!(error = %e, "region: the automatic promotion failed; trying again"),
                    }
                }
            }
        }
    }
}

/// Why a request with `method` is refused now: anything but GET, HEAD and OPTIONS could write,
/// and a standby or fenced node admits nothing (`standby`, `fenced`, naming the primary). The
/// API's access layer asks this once a caller is allowed the route.
pub(crate) fn refuse_writes(shared: &Shared, method: &Method) -> Option<Problem> {
    match matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        true => None,
        false => shared.region.refusal(),
    }
}

/// [`refuse_writes`] as a layer, for the console's actions. Signing in and out of the console
/// write nothing and stay open.
pub(crate) async fn guard(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let session = matches!(request.uri().path(), "/console/sign-in" | "/console/sign-out");
    if !session {
        if let Some(refusal) = refuse_writes(&shared, request.method()) {
            return refusal.into_response();
        }
    }
    next.run(request).await
}
