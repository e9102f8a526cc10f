//! Raft plumbing shared by every replica, free of the generation domain.
//!
//! - [`Member`]: what the membership stores about a replica (its base URL).
//! - [`timing`]: the openraft [`Config`](openraft::Config) that elects a new leader within
//!   about a second of the old one dying.
//! - [`codec`]: bounded bincode for everything read from the network or disk.
//! - [`transport`]: the replica-to-replica HTTP transport, both directions: a pooled
//!   client implementing openraft's network traits and an axum router under
//!   [`RAFT_PREFIX`] mounted on the replica's one listener.
//! - [`removal`]: a replica removed while it was down learns so from its peers' vote
//!   answers and stops calling elections.
//! - [`swap`]: a value (the peer client, a credential) replaced whole while others read
//!   it.
//! - [`PeerIdentity`]: who this replica is, checked on every RPC in both directions so a
//!   misrouted URL or a replica of another cluster is refused instead of obeyed.
//!
//! Everything here is generic over the application's [`openraft::RaftTypeConfig`], so the
//! crate never depends on the root crate.

// openraft's error types are large by design; we return them as its traits require.
#![allow(clippy::result_large_err)]

pub mod codec;
mod identity;
mod member;
pub mod removal;
pub mod swap;
pub mod timing;
pub mod transport;

pub use identity::{PeerIdentity, PeerIdentityError, HEADER_CLUSTER, HEADER_FROM};
pub use member::Member;

/// Where the replica-to-replica routes live on the shared listener.
pub const RAFT_PREFIX: &str = "/raft/v1";

/// The node id type every replica uses.
pub type ReplicaId = u64;
