//! Tests of what `deploy/` ships, run by `cargo test --workspace` like every other test.
//!
//! - `tests/manifests.rs` renders `deploy/kubernetes` (and its overlay) with `kubectl
//!   kustomize`, validates it offline against the Kubernetes schemas and a policy linter,
//!   and checks that every flag and port in the manifests and in `deploy/compose.yaml`
//!   is one the binary accepts.
//! - `tests/docker.rs` builds the scratch image with `deploy/build-image.sh` and runs the
//!   compose cluster's replicas as Docker containers named like StatefulSet pods, through
//!   a leader kill, a network disconnection, a rolling image update, a lost volume, and a
//!   scale from three to five and back, under traffic whose history is checked against
//!   the generation rules.
//! - `tests/compose.rs` runs `deploy/compose.yaml` itself with Docker Compose (free ports,
//!   the test's image) and checks the cluster it brings up, a `stop` of the leader, and
//!   that the volumes keep every generation across `down` and `up`.
//! - `tests/monitoring.rs` checks the monitoring component (a ServiceMonitor) and
//!   `deploy/prometheus/prometheusrule.sh`.
//! - `tests/alerts.rs` checks and unit-tests `deploy/prometheus/alerts.yaml` with
//!   promtool; `tests/alerts_live.rs` evaluates it in a real Prometheus scraping live
//!   replicas while they die, come back and are cut off.
//!
//! They need tools outside Cargo (kubectl, Docker, the Python tools of
//! `.ci/deploy-tools.txt`, promtool and the Prometheus server, unpacked from Debian's
//! package when not on `PATH`); a missing tool fails the test with what to install, it
//! never passes silently. `cargo test --workspace --exclude deploy-tests` runs everything else.
//!
//! The crate is separate from the root package's integration tests so that the slow image
//! build and container runs stay out of that binary. Histories are recorded and checked
//! with the chaos harness's own types and checker (`chaos::history`, `chaos::checker`).

pub mod compose;
pub mod docker;
pub mod settled;
pub mod tools;
pub mod traffic;
