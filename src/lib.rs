//! pageserver-controller: a Raft-replicated authority for Neon pageserver generations.
//!
//! A map of the system, from the inside out:
//! - [`domain`]: the rules of generations, tenant shards and nodes; pure and unit-tested.
//! - [`consensus`]: what a Raft log entry carries and how it is applied to the registry.
//! - [`replica`]: one Raft node over sled storage; proposes commands and reads
//!   linearizably.
//! - [`api`]: the HTTP API (Neon's wire format), routed to the leader by a middleware.
//! - [`server`]: opens the data dir, starts Raft and the listener, bootstraps the
//!   cluster, and shuts down cleanly.
//! - [`auth`] and [`credentials`]: tokens and keys, and re-reading them (and the TLS
//!   certificate) while the replica runs.
//! - [`client`]: the typed HTTP client used by the CLI, the tests and the chaos harness.
//! - [`cli`]: the command line (`serve`, `local-cluster`, and operator commands).
//!
//! The `raft` crate (transport, timings) and the `storage` crate (log store, snapshots)
//! know nothing of generations; this crate ties them to the domain.

pub mod api;
pub mod auth;
pub mod backup;
pub mod bootstrap;
pub mod child_process;
pub mod cli;
pub mod client;
pub mod consensus;
pub mod credentials;
pub mod domain;
pub mod logging;
pub mod loopback;
pub mod membership;
pub mod metrics;
pub mod recovery;
pub mod replica;
pub mod server;
