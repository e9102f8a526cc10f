//! The systems an operator would otherwise run for generations, driven with the same
//! closed loop as our service: a three-member etcd, a single Postgres, and a do-nothing
//! HTTP server that shows the ceiling of any one-request-per-attach HTTP API here.

pub mod etcd;
pub mod null_http;
pub mod postgres;
