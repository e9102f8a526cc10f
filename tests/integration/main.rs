//! Integration tests: three (or more) real `serve` processes on loopback.

#[path = "../support/mod.rs"]
mod support;

mod amnesia;
mod api;
mod cli;
mod compatibility;
mod concurrent_joins;
mod failover;
mod fuzz;
mod local_cluster;
mod membership;
mod operations;
mod power_loss;
mod restart;
mod security;
