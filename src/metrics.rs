//! Prometheus metrics: what an operator graphs and alerts on.
//!
//! Two kinds of series. Events are counted where they happen (requests, forwarded
//! requests, leader changes, flush latencies), and the credentials' series are set by
//! their reloader (reloads, failures, the served certificate's expiry). Everything else
//! is sampled from the replica when `/metrics` is scraped (Raft indexes, term, log size, snapshot timings,
//! tenant and node counts, replication lag, batching counters), so there is no second
//! copy of that state to keep in step.
//!
//! All series are prefixed `psc_` (pageserver-controller); process metrics (RSS, CPU,
//! open files) come from the `prometheus` crate's process collector.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::credentials::Credential;
use crate::replica::Replica;

/// Latency buckets in seconds, from a fast local read to a slow snapshot-sized write,
/// and past the deadlines (a write's 5 s, a forward's 8 s, a request's 30 s), so that
/// an election's or a timeout's tail is not all in `+Inf`.
const LATENCY_BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    forwarded: IntCounterVec,
    /// By kind: `api` (what `--max-in-flight` bounds) and `peer` (Raft RPCs).
    in_flight: IntGaugeVec,
    leader_changes: IntCounter,
    flush_seconds: Histogram,
    credential_reloads: IntCounterVec,
    credential_failing: IntGaugeVec,
    tls_not_after: IntGaugeVec,
    sampled: Sampled,
    /// Held from sampling to encoding: two scrapes at once (two Prometheus servers)
    /// would otherwise interleave, one clearing the lag series the other just set.
    scraping: std::sync::Mutex<()>,
}

/// Series set from the replica's state at scrape time.
struct Sampled {
    term: IntGauge,
    is_leader: IntGauge,
    last_log_index: IntGauge,
    committed_index: IntGauge,
    applied_index: IntGauge,
    snapshot_index: IntGauge,
    purged_index: IntGauge,
    log_entries: IntGauge,
    data_dir_bytes: IntGauge,
    data_dir_free_bytes: IntGauge,
    snapshot_bytes: IntGauge,
    snapshot_build_seconds: Gauge,
    snapshot_install_seconds: Gauge,
    snapshot_builds: IntCounter,
    snapshot_installs: IntCounter,
    flushes: IntCounter,
    flush_waiters: IntCounter,
    proposals: IntCounter,
    proposed_commands: IntCounter,
    read_rounds: IntCounter,
    reads: IntCounter,
    asker_acks: IntCounter,
    follower_rounds: IntCounter,
    follower_fetch_micros: IntCounter,
    follower_apply_micros: IntCounter,
    tenant_shards: IntGauge,
    nodes: IntGauge,
    voters: IntGauge,
    is_voter: IntGauge,
    is_member: IntGauge,
    has_leader: IntGauge,
    quorum_ack_age_seconds: Gauge,
    removed: IntGauge,
    replication_lag: IntGaugeVec,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: T,
) -> T {
    registry
        .register(Box::new(collector.clone()))
        .expect("metric names are unique and valid");
    collector
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, IntGauge::new(name, help).expect("valid metric"))
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::new(name, help).expect("valid metric"))
}

/// Raises a counter to `total` (sampled totals only ever grow).
fn raise(counter: &IntCounter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("the process collector registers once");
        let requests = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "psc_http_requests_total",
                    "HTTP requests answered, by route, method and status",
                ),
                &["route", "method", "status"],
            )
            .expect("valid metric"),
        );
        let request_seconds = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "psc_http_request_duration_seconds",
                    "HTTP request latency, by route and method",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["route", "method"],
            )
            .expect("valid metric"),
        );
        let forwarded = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "psc_forwarded_requests_total",
                    "requests this replica forwarded to the leader",
                ),
                &["route"],
            )
            .expect("valid metric"),
        );
        let flush_seconds = register(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "psc_storage_flush_duration_seconds",
                    "sled flush + fsync latency",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
        );
        let r = &registry;
        let sampled = Sampled {
            term: gauge(r, "psc_raft_term", "current Raft term"),
            is_leader: gauge(r, "psc_raft_is_leader", "1 if this replica is the leader"),
            last_log_index: gauge(r, "psc_raft_last_log_index", "index of the last log entry"),
            committed_index: gauge(
                r,
                "psc_raft_committed_index",
                "index of the last committed entry",
            ),
            applied_index: gauge(
                r,
                "psc_raft_applied_index",
                "index of the last applied entry",
            ),
            snapshot_index: gauge(
                r,
                "psc_raft_snapshot_index",
                "last index covered by the latest snapshot",
            ),
            purged_index: gauge(r, "psc_raft_purged_index", "last index purged from the log"),
            log_entries: gauge(
                r,
                "psc_raft_log_entries",
                "entries currently stored in the log",
            ),
            data_dir_bytes: gauge(r, "psc_data_dir_bytes", "bytes used by the data dir"),
            data_dir_free_bytes: gauge(
                r,
                "psc_data_dir_free_bytes",
                "bytes left for this process on the file system holding the data dir (a replica \
                 whose disk fills up stops)",
            ),
            snapshot_bytes: gauge(r, "psc_snapshot_bytes", "size of the last snapshot built"),
            snapshot_build_seconds: register(
                r,
                Gauge::new(
                    "psc_snapshot_build_seconds",
                    "duration of the last snapshot build",
                )
                .expect("valid metric"),
            ),
            snapshot_install_seconds: register(
                r,
                Gauge::new(
                    "psc_snapshot_install_seconds",
                    "duration of the last snapshot install",
                )
                .expect("valid metric"),
            ),
            snapshot_builds: counter(r, "psc_snapshot_builds_total", "snapshots built"),
            snapshot_installs: counter(
                r,
                "psc_snapshot_installs_total",
                "snapshots installed from a leader",
            ),
            flushes: counter(
                r,
                "psc_storage_flushes_total",
                "storage flushes (each one fsync)",
            ),
            flush_waiters: counter(
                r,
                "psc_storage_flush_waiters_total",
                "writes made durable by those flushes",
            ),
            proposals: counter(
                r,
                "psc_raft_proposals_total",
                "log entries proposed by this replica",
            ),
            proposed_commands: counter(
                r,
                "psc_raft_proposed_commands_total",
                "commands carried by those entries",
            ),
            read_rounds: counter(
                r,
                "psc_read_index_rounds_total",
                "leadership confirmations for reads",
            ),
            reads: counter(
                r,
                "psc_read_index_reads_total",
                "reads served by those confirmations",
            ),
            asker_acks: counter(
                r,
                "psc_read_index_asker_acks_total",
                "read indexes a follower's own vote confirmed, without a heartbeat round (leader)",
            ),
            follower_rounds: counter(
                r,
                "psc_follower_read_rounds_total",
                "read rounds of this follower that got a read index from the leader and applied it",
            ),
            follower_fetch_micros: counter(
                r,
                "psc_follower_read_fetch_microseconds_total",
                "time those rounds spent asking the leader for its read index",
            ),
            follower_apply_micros: counter(
                r,
                "psc_follower_read_apply_wait_microseconds_total",
                "time those rounds then spent waiting to apply the leader's read index",
            ),
            tenant_shards: gauge(
                r,
                "psc_tenant_shards",
                "tenant shards known (as applied here)",
            ),
            nodes: gauge(
                r,
                "psc_nodes",
                "pageserver nodes registered (as applied here)",
            ),
            voters: gauge(
                r,
                "psc_raft_voters",
                "voting members in the current configuration",
            ),
            is_voter: gauge(
                r,
                "psc_raft_is_voter",
                "1 if this replica votes in the current configuration (0: a learner, or removed)",
            ),
            is_member: gauge(
                r,
                "psc_raft_is_member",
                "1 if the current configuration lists this replica, as a voter or a learner",
            ),
            has_leader: gauge(
                r,
                "psc_raft_has_leader",
                "1 if this replica knows a leader of its current term",
            ),
            quorum_ack_age_seconds: register(
                r,
                Gauge::with_opts(Opts::new(
                    "psc_raft_leader_quorum_ack_age_seconds",
                    "leader only: seconds since a quorum last acknowledged this leader (0 elsewhere); \
                     growing while it still leads means it is cut off from a quorum",
                ))
                .expect("valid metric"),
            ),
            removed: gauge(
                r,
                "psc_removed",
                "1 while peers report this replica removed from the cluster (it calls no elections)",
            ),
            replication_lag: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "psc_replication_lag_entries",
                        "leader only: entries a member is behind the leader",
                    ),
                    &["member"],
                )
                .expect("valid metric"),
            ),
        };
        let leader_changes = counter(
            &registry,
            "psc_raft_leader_changes_total",
            "leader changes seen by this replica",
        );
        let in_flight = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "psc_http_requests_in_flight",
                    "requests being handled now (not /metrics), by kind: api (bounded by \
                     --max-in-flight) or peer (Raft RPCs)",
                ),
                &["kind"],
            )
            .expect("valid metric"),
        );
        for kind in ["api", "peer"] {
            in_flight.with_label_values(&[kind]).set(0);
        }
        let credential_reloads = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "psc_credential_reloads_total",
                    "credentials replaced by a reload of their files",
                ),
                &["credential"],
            )
            .expect("valid metric"),
        );
        let credential_failing = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "psc_credential_reload_failing",
                    "1 while a credential's files cannot be loaded (the previous one stays in use)",
                ),
                &["credential"],
            )
            .expect("valid metric"),
        );
        for credential in Credential::ALL {
            credential_reloads.with_label_values(&[credential.name()]);
            credential_failing.with_label_values(&[credential.name()]);
        }
        // Only where the replica serves TLS: a series that is absent cannot look like a
        // certificate about to expire.
        let tls_not_after = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "psc_tls_not_after_timestamp_seconds",
                    "when the earliest-expiring certificate of the chain this replica serves \
                     (credential tls_certificate) expires, in Unix seconds",
                ),
                &["credential"],
            )
            .expect("valid metric"),
        );
        Arc::new(Metrics {
            registry,
            credential_reloads,
            credential_failing,
            tls_not_after,
            requests,
            request_seconds,
            forwarded,
            in_flight,
            leader_changes,
            flush_seconds,
            sampled,
            scraping: std::sync::Mutex::new(()),
        })
    }

    /// Counts a credential replaced by a reload.
    pub fn credential_reloaded(&self, credential: Credential) {
        self.credential_reloads
            .with_label_values(&[credential.name()])
            .inc();
    }

    /// When a TLS credential expires; `None` (unreadable) removes the series.
    pub fn tls_not_after(&self, credential: Credential, seconds: Option<i64>) {
        match seconds {
            Some(seconds) => self
                .tls_not_after
                .with_label_values(&[credential.name()])
                .set(seconds),
            None => {
                // Absent already is as good as removed.
                let _ = self.tls_not_after.remove_label_values(&[credential.name()]);
            }
        }
    }

    /// Marks whether a credential's files fail to load.
    pub fn credential_failing(&self, credential: Credential, failing: bool) {
        self.credential_failing
            .with_label_values(&[credential.name()])
            .set(i64::from(failing));
    }

    /// Counts a request forwarded to the leader.
    pub fn forwarded(&self, route: &str) {
        self.forwarded.with_label_values(&[route]).inc();
    }

    /// Counts a request for a path no route serves (the route middleware never sees it),
    /// under the one route label `unmatched`: a pageserver pointed at a wrong path shows.
    pub fn unmatched(&self, method: &axum::http::Method) {
        self.requests
            .with_label_values(&["unmatched", method_label(method), "404"])
            .inc();
    }

    /// Wires the replica's event sources: flush durations and leader changes.
    pub fn attach(self: &Arc<Self>, replica: &Arc<Replica>) {
        let flush_seconds = self.flush_seconds.clone();
        replica.flush_stats().observe_with(Box::new(move |elapsed| {
            flush_seconds.observe(elapsed.as_secs_f64())
        }));
        let metrics = self.clone();
        let mut watch = replica.metrics();
        tokio::spawn(async move {
            let mut leader = watch.borrow().current_leader;
            while watch.changed().await.is_ok() {
                let now = watch.borrow().current_leader;
                if now != leader && now.is_some() {
                    metrics.leader_changes.inc();
                }
                leader = now;
            }
        });
    }

    fn sample(&self, replica: &Replica, data_dir: &std::path::Path, committed: Option<u64>) {
        let s = &self.sampled;
        let m = replica.metrics().borrow().clone();
        let index = |id: Option<openraft::LogId<u64>>| id.map_or(0, |id| id.index as i64);
        s.term.set(m.current_term as i64);
        s.is_leader
            .set(i64::from(m.state == openraft::ServerState::Leader));
        s.last_log_index.set(m.last_log_index.unwrap_or(0) as i64);
        s.committed_index.set(committed.unwrap_or(0) as i64);
        s.applied_index.set(index(m.last_applied));
        s.snapshot_index.set(index(m.snapshot));
        s.purged_index.set(index(m.purged));
        s.log_entries.set(replica.log_entries() as i64);
        s.data_dir_bytes.set(dir_size(data_dir) as i64);
        if let Ok(space) = controller_storage::file_system_space(data_dir) {
            s.data_dir_free_bytes.set(space.available_bytes as i64);
        }
        let membership = m.membership_config.membership();
        s.voters.set(membership.voter_ids().count() as i64);
        s.is_voter
            .set(i64::from(membership.voter_ids().any(|voter| voter == m.id)));
        s.is_member
            .set(i64::from(membership.get_node(&m.id).is_some()));
        s.has_leader.set(i64::from(m.current_leader.is_some()));
        s.quorum_ack_age_seconds
            .set(match (m.state, m.millis_since_quorum_ack) {
                (openraft::ServerState::Leader, Some(ms)) => ms as f64 / 1e3,
                _ => 0.0,
            });
        s.removed.set(i64::from(replica.removed().is_some()));
        let snapshots = replica.snapshot_stats();
        s.snapshot_bytes
            .set(snapshots.last_size_bytes.load(Ordering::Relaxed) as i64);
        s.snapshot_build_seconds
            .set(snapshots.last_build_micros.load(Ordering::Relaxed) as f64 / 1e6);
        s.snapshot_install_seconds
            .set(snapshots.last_install_micros.load(Ordering::Relaxed) as f64 / 1e6);
        raise(&s.snapshot_builds, snapshots.builds.load(Ordering::Relaxed));
        raise(
            &s.snapshot_installs,
            snapshots.installs.load(Ordering::Relaxed),
        );
        let flushes = replica.flush_stats();
        raise(&s.flushes, flushes.flushes.load(Ordering::Relaxed));
        raise(&s.flush_waiters, flushes.waiters.load(Ordering::Relaxed));
        let batches = replica.batch_stats();
        raise(&s.proposals, batches.entries.load(Ordering::Relaxed));
        raise(
            &s.proposed_commands,
            batches.commands.load(Ordering::Relaxed),
        );
        raise(&s.read_rounds, batches.read_rounds.load(Ordering::Relaxed));
        raise(&s.reads, batches.reads.load(Ordering::Relaxed));
        raise(&s.asker_acks, batches.asker_acks.load(Ordering::Relaxed));
        raise(
            &s.follower_rounds,
            batches.follower_rounds.load(Ordering::Relaxed),
        );
        raise(
            &s.follower_fetch_micros,
            batches.follower_fetch_micros.load(Ordering::Relaxed),
        );
        raise(
            &s.follower_apply_micros,
            batches.follower_apply_micros.load(Ordering::Relaxed),
        );
        {
            let applied = replica
                .local_state()
                .read()
                .expect("state lock poisoned: a panic while applying");
            s.tenant_shards.set(applied.state.shard_count() as i64);
            s.nodes.set(applied.state.node_count() as i64);
        }
        s.replication_lag.reset();
        if let Some(replication) = &m.replication {
            let last = m.last_log_index.unwrap_or(0);
            for (member, matched) in replication {
                let matched = matched.map_or(0, |id| id.index);
                s.replication_lag
                    .with_label_values(&[&member.to_string()])
                    .set(last.saturating_sub(matched) as i64);
            }
        }
    }

    /// The text exposition of every series, sampled now.
    pub fn render(
        &self,
        replica: &Replica,
        data_dir: &std::path::Path,
        committed: Option<u64>,
    ) -> String {
        let _scraping = self
            .scraping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.sample(replica, data_dir, committed);
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("the text encoder writes to a Vec");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// Bytes used by the files under `path`.
pub fn dir_size(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// What the `/metrics` route and the request counter need.
#[derive(Clone)]
pub struct MetricsState {
    pub metrics: Arc<Metrics>,
    pub replica: Arc<Replica>,
    pub data_dir: PathBuf,
}

/// `GET /metrics`
pub async fn serve_metrics(State(state): State<MetricsState>) -> Response {
    let committed = state
        .replica
        .raft()
        .with_raft_state(|s| s.committed.map(|id| id.index))
        .await
        .ok()
        .flatten();
    // Sampling walks the data dir and may wait for another scrape: off the runtime's
    // workers, which Raft's heartbeats and the API need.
    let body = match tokio::task::spawn_blocking(move || {
        state
            .metrics
            .render(&state.replica, &state.data_dir, committed)
    })
    .await
    {
        Ok(body) => body,
        // A JSON error like every other route's, logged like them.
        Err(e) => {
            return crate::api::error::ApiError::Internal(format!(
                "sampling the metrics failed: {e}"
            ))
            .into_response()
        }
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// One request being handled, for as long as it lives.
struct InFlight(IntGauge);

impl InFlight {
    fn count(gauge: IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The method as a label: the standard ones by name, any other as `other`, so a client
/// inventing methods cannot grow the series without bound (a request with an unknown
/// method on a known path is counted, as a 405, before it is refused).
fn method_label(method: &axum::http::Method) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"];
    KNOWN
        .into_iter()
        .find(|known| method.as_str() == *known)
        .unwrap_or("other")
}

/// Counts and times every routed request by its route template.
pub async fn track_requests(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = method_label(request.method());
    let started = Instant::now();
    // Counted down however the request ends, a client hanging up included.
    let kind = if route.starts_with(controller_raft::RAFT_PREFIX) {
        "peer"
    } else {
        "api"
    };
    let _in_flight = InFlight::count(metrics.in_flight.with_label_values(&[kind]));
    let response = next.run(request).await;
    metrics
        .request_seconds
        .with_label_values(&[&route, method])
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .with_label_values(&[&route, method, response.status().as_str()])
        .inc();
    response
}
