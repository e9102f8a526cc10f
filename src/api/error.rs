//! The one error type of the HTTP API: each variant has a status, a log level and a
//! `{"msg": ...}` body, and is logged exactly once, when it becomes a response.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::types::ErrorBody;
use crate::domain::Refusal;
use crate::replica::{ProposeError, ReadError};

/// Set on an answer meaning "not the leader; nothing was applied", so the routing layer
/// (here, or on the replica that forwarded the request) may send it to the leader.
pub const NOT_LEADER_HEADER: &str = "x-controller-not-leader";

/// Set on every error answer that certainly changed nothing but is not a 4xx (a 503 for
/// "no leader", "overloaded", "not the leader"), so a client that reads it (our typed
/// client does) may hold the server to it, and retry without wondering.
pub const NOT_APPLIED_HEADER: &str = "x-controller-not-applied";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// Certainly not applied; routed to the leader by the routing layer.
    #[error("{0}")]
    NotLeader(String),
    /// No leader, no quorum, or shutting down: nothing was applied; retry.
    #[error("{0}")]
    Unavailable(String),
    /// A write whose fate is unknown: it may or may not have been applied.
    #[error("{0}")]
    Indeterminate(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotLeader(_) | ApiError::Unavailable(_) | ApiError::Indeterminate(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let msg = self.to_string();
        match &self {
            ApiError::Internal(_) => tracing::error!(%status, %msg, "request failed"),
            ApiError::Indeterminate(_) | ApiError::Unavailable(_) => {
                tracing::warn!(%status, %msg, "request failed")
            }
            ApiError::NotLeader(_) => tracing::debug!(%status, %msg, "not the leader"),
            _ => tracing::info!(%status, %msg, "request refused"),
        }
        let mut response = (status, axum::Json(ErrorBody { msg })).into_response();
        if matches!(self, ApiError::NotLeader(_)) {
            response
                .headers_mut()
                .insert(NOT_LEADER_HEADER, HeaderValue::from_static("1"));
        }
        if matches!(self, ApiError::NotLeader(_) | ApiError::Unavailable(_)) {
            response
                .headers_mut()
                .insert(NOT_APPLIED_HEADER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        let msg = refusal.to_string();
        match refusal {
            Refusal::UnknownNode(_) | Refusal::UnknownShard(_) => ApiError::NotFound(msg),
            Refusal::NodeConflict { .. }
            | Refusal::GenerationExhausted(_)
            | Refusal::FloorExhausted
            | Refusal::NodeInUse { .. } => ApiError::Conflict(msg),
        }
    }
}

impl From<ProposeError> for ApiError {
    fn from(e: ProposeError) -> Self {
        let msg = e.to_string();
        match e {
            ProposeError::NotLeader { .. } => ApiError::NotLeader(msg),
            ProposeError::Indeterminate(_)
            | ProposeError::LeadershipLost { .. }
            | ProposeError::QuorumLost(_)
            | ProposeError::StoppedInFlight(_) => ApiError::Indeterminate(msg),
            ProposeError::Stopped(_) | ProposeError::Overloaded(_) => ApiError::Unavailable(msg),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        let msg = e.to_string();
        match e {
            // A read that could not confirm leadership did nothing: route it again (the
            // routing layer gives up with a 503 once it has waited long enough).
            ReadError::NotLeader { .. } | ReadError::NoQuorum(_) => ApiError::NotLeader(msg),
            ReadError::Stopped(_) => ApiError::Unavailable(msg),
        }
    }
}
