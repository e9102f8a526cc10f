//! The HTTP API every replica serves: Neon's generation API, node registry, health and
//! cluster views, plus the replica-to-replica Raft routes on the same listener.
//!
//! The layer is thin by design: [`handlers`] translate JSON to domain commands,
//! [`routing`] gets each request to the leader (once, as a middleware, not in every
//! handler), [`error::ApiError`] is the only error shape, and [`json::Json`] makes a
//! malformed body a 400 that names the bad field ([`path::Segment`] does the same for
//! the path).

pub mod auth;
pub mod cluster;
pub mod error;
pub mod handlers;
pub mod json;
pub mod path;
pub mod routing;
pub mod types;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::from_fn_with_state;
use axum::routing::{delete, get, post, put};

use crate::membership::Membership;
use axum::Router;

use crate::replica::Replica;
use error::ApiError;
use routing::{route_to_leader, Forwarder, Policy, Routing};

/// Bounds on what a client may ask for.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body accepted on the public routes.
    pub body_bytes: usize,
    /// Most tenant shards in one validate call.
    pub validate_tenants: usize,
    /// Most API requests in flight; more are shed with a 503.
    pub max_in_flight: usize,
    /// Longest an API request may take before a 503.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // 10,000 validate entries are about 700 KB of JSON; leave room above that.
            body_bytes: 4 << 20,
            validate_tenants: 20_000,
            max_in_flight: 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// What handlers share.
pub struct ApiState {
    pub replica: Arc<Replica>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub membership: Membership,
    pub cluster_name: String,
    pub cluster_id: String,
    pub forwarder: Forwarder,
    /// How long a request waits for a leader before a 503.
    pub leader_wait: Duration,
    /// How long a leader asked to step down tries to hand leadership over.
    pub handoff: Duration,
    pub limits: Limits,
}

/// The public routes (the Raft routes are merged in by the server).
pub fn router(api: Arc<ApiState>) -> Router {
    let on_leader = |policy, forward_timeout| {
        from_fn_with_state(
            Routing {
                api: api.clone(),
                policy,
                forward_timeout,
            },
            route_to_leader,
        )
    };
    let shed = from_fn_with_state(
        Arc::new(Shedder {
            permits: Arc::new(tokio::sync::Semaphore::new(api.limits.max_in_flight)),
            limits: api.limits,
        }),
        shed_and_time_out,
    );
    let writes = Router::new()
        .route("/upcall/v1/re-attach", post(handlers::re_attach))
        .route("/re-attach", post(handlers::re_attach_legacy))
        .route("/debug/v1/attach-hook", post(handlers::attach_hook))
        .route("/attach-hook", post(handlers::attach_hook))
        .route("/control/v1/node", post(handlers::register_node))
        .route("/control/v1/node/{node_id}", delete(handlers::delete_node))
        .route(
            "/control/v1/node/{node_id}/config",
            put(handlers::configure_node),
        )
        .route(
            "/control/v1/tenant/{tenant_shard_id}/migrate",
            put(handlers::migrate),
        )
        .route_layer(on_leader(Policy::Write, None))
        .route_layer(shed.clone());
    let reads = Router::new()
        .route("/upcall/v1/validate", post(handlers::validate))
        .route("/validate", post(handlers::validate_legacy))
        .route("/debug/v1/inspect", post(handlers::inspect))
        .route("/inspect", post(handlers::inspect))
        .route("/control/v1/node", get(handlers::list_nodes))
        .route("/control/v1/node/{node_id}", get(handlers::get_node))
        .route("/control/v1/tenant", get(handlers::list_tenants))
        .route_layer(on_leader(Policy::Read, None))
        .route_layer(shed);
    // The read index itself comes from the leader.
    let read_index = Router::new()
        .route(cluster::READ_INDEX_PATH, get(cluster::read_index))
        .route_layer(on_leader(Policy::Retryable, None));
    // Membership changes are idempotent (adding the same member again, removing one
    // that is gone, moving leadership where it is) and may wait for a new member to
    // catch up, so they are forwarded with a long timeout.
    let membership = Router::new()
        .route("/v1/cluster/members", post(cluster::add_member))
        .route("/v1/cluster/members/{id}", delete(cluster::remove_member))
        .route("/v1/cluster/leader", post(cluster::transfer_leader))
        .route("/v1/backup", get(cluster::backup))
        .route_layer(on_leader(
            Policy::Retryable,
            Some(cluster::CATCH_UP_DEFAULT * 10),
        ));
    let local = Router::new()
        .route("/status", get(cluster::status))
        .route("/ready", get(cluster::ready))
        .route("/v1/cluster", get(cluster::cluster))
        // Acts on the replica asked, never forwarded: a pod stepping down before it stops.
        .route("/v1/cluster/step-down", post(cluster::step_down));
    Router::new()
        .merge(writes)
        .merge(reads)
        .merge(read_index)
        .merge(membership)
        .merge(local)
        .route_layer(from_fn_with_state(api.clone(), cluster::same_cluster))
        .layer(DefaultBodyLimit::max(api.limits.body_bytes))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(api)
}

async fn not_found(
    axum::extract::State(api): axum::extract::State<Arc<ApiState>>,
    request: Request,
) -> ApiError {
    api.metrics.unmatched(request.method());
    ApiError::NotFound(format!(
        "no route for {} {}",
        request.method(),
        request.uri().path()
    ))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{} is not allowed on {}",
        request.method(),
        request.uri().path()
    ))
}

/// Bounds the API's work: at most `max_in_flight` requests at once (the rest are
/// refused at once rather than queued without bound) and none longer than
/// `request_timeout`.
struct Shedder {
    permits: Arc<tokio::sync::Semaphore>,
    limits: Limits,
}

async fn shed_and_time_out(
    axum::extract::State(shedder): axum::extract::State<Arc<Shedder>>,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Ok(_permit) = shedder.permits.clone().try_acquire_owned() else {
        return ApiError::Unavailable(format!(
            "overloaded: {} requests are in flight; nothing was done, retry shortly",
            shedder.limits.max_in_flight
        ))
        .into_response();
    };
    match tokio::time::timeout(shedder.limits.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Indeterminate(format!(
            "no answer within {:?}; a write may or may not have been applied",
            shedder.limits.request_timeout
        ))
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_beyond_the_bound_are_shed_and_slow_ones_time_out() {
        // `/slow` is held while another request is shed, which on a busy machine can take
        // a while: a long timeout there; `/never` has a short one of its own.
        let shedder = |max_in_flight: usize, request_timeout: Duration| {
            Arc::new(Shedder {
                permits: Arc::new(tokio::sync::Semaphore::new(max_in_flight)),
                limits: Limits {
                    max_in_flight,
                    request_timeout,
                    ..Limits::default()
                },
            })
        };
        let bounded = shedder(1, Duration::from_secs(60));
        let permits = bounded.permits.clone();
        let hasty = shedder(1, Duration::from_millis(300));
        let hasty_permits = hasty.permits.clone();
        let release = Arc::new(tokio::sync::Notify::new());
        let held = release.clone();
        let app: Router = Router::new()
            .route(
                "/slow",
                get(move || {
                    let held = held.clone();
                    async move {
                        held.notified().await;
                        "done"
                    }
                }),
            )
            .route_layer(from_fn_with_state(bounded, shed_and_time_out))
            .merge(
                Router::new()
                    .route("/never", get(std::future::pending::<&'static str>))
                    .route_layer(from_fn_with_state(hasty, shed_and_time_out)),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let http = reqwest::Client::new();

        let first = tokio::spawn(http.get(format!("{url}/slow")).send());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while permits.available_permits() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the first request never arrived"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The bound is reached: the next request is refused at once, not queued.
        let shed = http.get(format!("{url}/slow")).send().await.unwrap();
        assert_eq!(shed.status(), 503);
        assert!(shed.text().await.unwrap().contains("overloaded"));
        release.notify_one();
        let first = first.await.unwrap().unwrap();
        assert_eq!(first.status(), 200);
        assert_eq!(first.text().await.unwrap(), "done");

        // A request that never finishes is answered once the timeout passes.
        let slow = http.get(format!("{url}/never")).send().await.unwrap();
        assert_eq!(slow.status(), 503);
        assert!(slow.text().await.unwrap().contains("no answer within"));
        assert_eq!(permits.available_permits(), 1, "the permits come back");
        assert_eq!(
            hasty_permits.available_permits(),
            1,
            "the permits come back"
        );
    }
}
