//! Raft timings and log-compaction policy.
//!
//! openraft 0.9 makes a follower that heard from a leader wait for the leader's lease
//! (`election_timeout_max`) *plus* its own election timeout (drawn once per replica from
//! `min..max`) before it campaigns. With heartbeats every 100 ms and 250..400 ms, a dead
//! leader is replaced 0.65 to 0.8 s after its last heartbeat, plus one vote round trip:
//! a new leader within about a second even counting the heartbeat it missed. Two and a
//! half heartbeats fit in the shortest timeout and six in the lease plus it, so a busy
//! machine rarely deposes a healthy leader; raise both bounds where it does.

use openraft::{Config, SnapshotPolicy};

/// Knobs an operator may turn; the defaults suit a LAN.
#[derive(Debug, Clone)]
pub struct Timing {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many log entries since the last one.
    pub snapshot_every_entries: u64,
    /// Entries kept in the log behind a snapshot, so a briefly lagging follower catches up
    /// from the log rather than a full snapshot.
    pub keep_entries_behind_snapshot: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat_ms: 100,
            election_timeout_min_ms: 250,
            election_timeout_max_ms: 400,
            snapshot_every_entries: 5_000,
            keep_entries_behind_snapshot: 1_000,
        }
    }
}

impl Timing {
    /// The openraft configuration for a replica of `cluster_name`.
    pub fn config(&self, cluster_name: &str) -> Result<Config, openraft::ConfigError> {
        Config {
            cluster_name: cluster_name.to_owned(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            // A snapshot chunk is a few MiB; on a busy machine writing it to disk can take
            // far longer than openraft's 200 ms default.
            install_snapshot_timeout: 10_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every_entries),
            max_in_snapshot_log_to_keep: self.keep_entries_behind_snapshot,
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            ..Default::default()
        }
        .validate()
    }
}

/// Snapshot chunk size on the wire; the transport's body limit is well above it.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 4 << 20;

/// Body limit of the replica-to-replica routes: a chunk plus its envelope, with room.
pub const RAFT_BODY_LIMIT_BYTES: usize = 64 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_timing_is_a_valid_config() {
        let config = Timing::default().config("test").unwrap();
        assert!(config.election_timeout_min >= 2 * config.heartbeat_interval);
        let worst_failover = config.election_timeout_max * 2;
        assert!(
            worst_failover <= 1_000,
            "a dead leader is replaced within about a second"
        );
        assert!(RAFT_BODY_LIMIT_BYTES as u64 > 2 * config.snapshot_max_chunk_size);
    }
}
