//! Regions: which region may admit and dispatch, decided from what a node sees — its database
//! (a streaming replica still in recovery, or writable, and the epoch row stored in it) and what
//! its peer regions say about themselves. Pure: the server reads, this decides.
//!
//! Active-passive: one region is the primary; the standby's PostgreSQL is a replica of the
//! primary's. `keel region promote` promotes the replica and raises the **epoch**, a number stored
//! in the database with the name of the region it made primary. A node admits and dispatches only
//! while its database is writable and names its region primary, and while no peer reports a
//! newer epoch naming another region: the old primary, back after a failover, sees the new
//! primary's epoch and stands down (**fenced**), and writes that epoch into its own database so
//! it stays fenced across restarts, even when the peers cannot be reached then.

mod active;

pub use active::{replicates_to, replication_backoff, route, Route};
use serde::Serialize;

/// `[region] role`: how the region starts out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Active-passive: the region that admits, until a standby is promoted over it.
    Primary,
    /// Active-passive: serves reads from a replica and refuses writes until promoted.
    Standby,
    /// Active-active: admits locally, always; events and KV reach the other regions.
    Active,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Standby => "standby",
            Role::Active => "active",
        }
    }
}

/// The epoch row: how many promotions the database has seen, and which region the last one made
/// primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Epoch {
    pub number: u64,
    pub primary: String,
}

/// What a node reads from its own database.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalView {
    /// A streaming replica still replaying the primary's log: read-only.
    pub in_recovery: bool,
    /// `None` before any node wrote it (a primary writes epoch 1 naming itself at first start).
    pub epoch: Option<Epoch>,
}

/// What a peer region answered about itself (`GET /v1/region`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    pub region: String,
    pub epoch: u64,
    pub primary: String,
}

/// Where a node stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "standing", rename_all = "lowercase")]
pub enum Standing {
    /// Admits and dispatches.
    Active,
    /// Serves reads and refuses writes: the database is a replica (or not yet named primary by
    /// an epoch). `primary` is the region the database names, when it names one.
    Standby { primary: Option<String> },
    /// Stood down for good: a newer epoch names `primary`. Refuses writes, dispatches nothing.
    Fenced { epoch: u64, primary: String },
}

impl Standing {
    pub fn as_str(&self) -> &'static str {
        match self {
            Standing::Active => "active",
            Standing::Standby { .. } => "standby",
            Standing::Fenced { .. } => "fenced",
        }
    }

    pub fn is_active(&self) -> bool {
        matches!(self, Standing::Active)
    }

    /// The region that admits instead of this one, when known.
    pub fn primary(&self) -> Option<&str> {
        match self {
            Standing::Active => None,
            Standing::Standby { primary } => primary.as_deref(),
            Standing::Fenced { primary, .. } => Some(primary),
        }
    }
}

/// Where region `me` (configured as `role`) stands, given its database and its peers.
///
/// - Active-active regions are always active: they share no database and no epoch.
/// - A database in recovery is a replica: standby, naming the primary its epoch row names.
/// - A writable database whose epoch names another region: this region was failed over from
///   (fenced, when it was configured primary) or was never promoted (standby).
/// - A writable database without an epoch row: a primary's first start (it will write epoch 1
///   naming itself); a standby waits for `keel region promote`, which writes the row.
/// - Otherwise active, unless a peer reports a newer epoch naming another region: fenced.
pub fn standing(me: &str, role: Role, local: &LocalView, peers: &[PeerView]) -> Standing {
    if role == Role::Active {
        return Standing::Active;
    }
    let named = local.epoch.as_ref().map(|e| e.primary.clone());
    if local.in_recovery {
        return Standing::Standby { primary: named };
    }
    let (number, primary) = match &local.epoch {
        Some(epoch) => (epoch.number, epoch.primary.as_str()),
        None if role == Role::Primary => (0, me),
        None => return Standing::Standby { primary: None },
    };
    if primary != me {
        return match role {
            Role::Primary => Standing::Fenced { epoch: number, primary: primary.to_owned() },
            _ => Standing::Standby { primary: Some(primary.to_owned()) },
        };
    }
    let newer = peers.iter().filter(|p| p.epoch > number && p.primary != me).max_by_key(|p| p.epoch);
    match newer {
        Some(peer) => Standing::Fenced { epoch: peer.epoch, primary: peer.primary.clone() },
        None => Standing::Active,
    }
}

/// The epoch a promotion of region `me` writes: one past the database's.
pub fn promoted(me: &str, current: Option<&Epoch>) -> Epoch {
    Epoch { number: current.map_or(1, |e| e.number + 1), primary: me.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(number: u64, primary: &str) -> Option<Epoch> {
        Some(Epoch { number, primary: primary.into() })
    }

    fn peer(epoch: u64, primary: &str) -> PeerView {
        PeerView { region: "us".into(), epoch, primary: primary.into() }
    }

    #[test]
    fn active_active_regions_are_always_active() {
        let local = LocalView { in_recovery: true, epoch: epoch(9, "us") };
        assert_eq!(standing("eu", Role::Active, &local, &[peer(10, "us")]), Standing::Active);
    }

    #[test]
    fn a_replica_is_a_standby_naming_the_primary_its_epoch_names() {
        let local = LocalView { in_recovery: true, epoch: epoch(1, "eu") };
        assert_eq!(standing("us", Role::Standby, &local, &[]), Standing::Standby { primary: Some("eu".into()) });
        // Even a node configured primary, if its database is a replica (a rebuilt old primary).
        assert_eq!(standing("us", Role::Primary, &local, &[]), Standing::Standby { primary: Some("eu".into()) });
    }

    #[test]
    fn a_primary_starts_active_on_an_empty_database_and_a_standby_waits_for_promotion() {
        let empty = LocalView::default();
        assert_eq!(standing("eu", Role::Primary, &empty, &[]), Standing::Active);
        assert_eq!(standing("us", Role::Standby, &empty, &[]), Standing::Standby { primary: None });
    }

    #[test]
    fn a_promoted_standby_is_active_once_the_epoch_names_it() {
        let promoted = LocalView { in_recovery: false, epoch: epoch(2, "us") };
        assert_eq!(standing("us", Role::Standby, &promoted, &[peer(1, "eu")]), Standing::Active);
        // Promoted by PostgreSQL alone, without `keel region promote`: still the old epoch.
        let bare = LocalView { in_recovery: false, epoch: epoch(1, "eu") };
        assert_eq!(standing("us", Role::Standby, &bare, &[]), Standing::Standby { primary: Some("eu".into()) });
    }

    #[test]
    fn an_old_primary_is_fenced_by_a_peer_with_a_newer_epoch_or_by_its_own_database() {
        let old = LocalView { in_recovery: false, epoch: epoch(1, "eu") };
        assert_eq!(standing("eu", Role::Primary, &old, &[]), Standing::Active);
        assert_eq!(
            standing("eu", Role::Primary, &old, &[peer(2, "us")]),
            Standing::Fenced { epoch: 2, primary: "us".into() }
        );
        // A peer at the same epoch, or one that names this region, fences nothing.
        assert_eq!(standing("eu", Role::Primary, &old, &[peer(1, "us"), peer(3, "eu")]), Standing::Active);
        // Once the fence is written into the old primary's database, no peer is needed.
        let fenced = LocalView { in_recovery: false, epoch: epoch(2, "us") };
        assert_eq!(standing("eu", Role::Primary, &fenced, &[]), Standing::Fenced { epoch: 2, primary: "us".into() });
    }

    #[test]
    fn the_newest_peer_epoch_wins() {
        let old = LocalView { in_recovery: false, epoch: epoch(1, "eu") };
        let peers = [peer(2, "us"), PeerView { region: "ap".into(), epoch: 3, primary: "ap".into() }];
        assert_eq!(standing("eu", Role::Primary, &old, &peers), Standing::Fenced { epoch: 3, primary: "ap".into() });
    }

    #[test]
    fn a_promotion_raises_the_epoch_by_one() {
        assert_eq!(promoted("us", None), Epoch { number: 1, primary: "us".into() });
        assert_eq!(promoted("us", epoch(4, "eu").as_ref()), Epoch { number: 5, primary: "us".into() });
    }
}
