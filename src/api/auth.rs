//! Who may call what: one table from route to required scope, checked by one middleware
//! before a request is routed to the leader (and again on the leader, which receives
//! the caller's own `Authorization` header: a forwarded request never gains rights).
//!
//! Scopes follow Neon's storage controller: upcalls need `generations_api`; the debug
//! hooks, migrate, node config and delete, tenant listing, cluster membership, leader
//! transfer and backups need `admin`; node registration and listing need `infra`.
//! `admin` is accepted everywhere. Replicas use `controller_peer` for what they ask each
//! other (probing, read indexes, joining, and leaving to rejoin after a lost disk) and
//! for a pod's preStop hook (stepping down); a peer token can already speak Raft, so
//! this grants it nothing more. Health and metrics need nothing. A route
//! missing from the table needs `admin`: new routes are closed until opened here.
//! The Raft routes are not in this table: the transport checks them, and accepts only
//! `controller_peer` tokens.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::auth::{bearer, JwtKeys, Scope};

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed.
    Public,
    /// A token with one of these scopes, or `admin`.
    Scopes(&'static [Scope]),
}

/// The access table. `route` is the route template (`/control/v1/node/{node_id}`).
pub fn access(method: &Method, route: &str) -> Access {
    use Scope::*;
    match (method.as_str(), route) {
        ("GET" | "HEAD", "/status" | "/ready" | "/metrics") => Access::Public,
        (_, route) if route.starts_with(controller_raft::RAFT_PREFIX) => Access::Public,
        ("POST", "/upcall/v1/re-attach" | "/upcall/v1/validate" | "/re-attach" | "/validate") => {
            Access::Scopes(&[GenerationsApi])
        }
        ("POST", "/control/v1/node")
        | ("GET", "/control/v1/node" | "/control/v1/node/{node_id}") => Access::Scopes(&[Infra]),
        // Replicas join, and a replica that lost its disk leaves before joining again.
        ("GET", "/v1/cluster" | "/v1/cluster/read-index")
        | ("POST", "/v1/cluster/members")
        | ("DELETE", "/v1/cluster/members/{id}")
        // A pod's preStop hook, with the peer token it mounts: a replica that leads hands
        // leadership away, which any peer could already force by campaigning.
        | ("POST", "/v1/cluster/step-down") => Access::Scopes(&[ControllerPeer]),
        _ => Access::Scopes(&[]),
    }
}

pub const MISSING: &str = "Unauthorized: missing authorization header";
pub const FORBIDDEN: &str = "Forbidden: JWT authentication error";
/// A header that is not `Bearer <token>` (or not text): Neon answers 401, not 403.
pub const MALFORMED: &str = "Unauthorized: malformed authorization header";

/// The middleware; a no-op when authentication is off.
pub async fn authorize(
    State(keys): State<Option<Arc<JwtKeys>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(keys) = keys else {
        return next.run(request).await;
    };
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_owned(),
        |p| p.as_str().to_owned(),
    );
    let Access::Scopes(allowed) = access(request.method(), &route) else {
        return next.run(request).await;
    };
    let token = match bearer(request.headers()) {
        None => return ApiError::Unauthorized(MISSING.into()).into_response(),
        Some(Err(e)) => {
            tracing::info!(%route, reason = %e, "refused a request: bad authorization header");
            return ApiError::Unauthorized(MALFORMED.into()).into_response();
        }
        Some(Ok(token)) => token,
    };
    match keys.verify(token) {
        Ok(claims) if claims.scope == Scope::Admin || allowed.contains(&claims.scope) => {
            // For a handler that trusts what only a replica may say (the read index).
            let mut request = request;
            request.extensions_mut().insert(claims.scope);
            next.run(request).await
        }
        Ok(claims) => {
            tracing::info!(%route, scope = ?claims.scope, "refused a request: scope not allowed");
            ApiError::Forbidden(FORBIDDEN.into()).into_response()
        }
        Err(e) => {
            tracing::info!(%route, reason = %e, "refused a request: invalid token");
            ApiError::Forbidden(FORBIDDEN.into()).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_default_to_admin_and_health_is_public() {
        assert_eq!(access(&Method::GET, "/status"), Access::Public);
        assert_eq!(access(&Method::GET, "/metrics"), Access::Public);
        // A probe that asks for the head only (the status line is the answer).
        assert_eq!(access(&Method::HEAD, "/ready"), Access::Public);
        assert_eq!(
            access(&Method::POST, "/upcall/v1/validate"),
            Access::Scopes(&[Scope::GenerationsApi])
        );
        assert_eq!(
            access(&Method::POST, "/debug/v1/attach-hook"),
            Access::Scopes(&[])
        );
        assert_eq!(access(&Method::GET, "/v1/backup"), Access::Scopes(&[]));
        assert_eq!(
            access(&Method::DELETE, "/control/v1/node/{node_id}"),
            Access::Scopes(&[])
        );
        assert_eq!(access(&Method::GET, "/some/new/route"), Access::Scopes(&[]));
        assert_eq!(access(&Method::POST, "/status"), Access::Scopes(&[]));
    }
}
