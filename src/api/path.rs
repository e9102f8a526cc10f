//! Our path-segment extractor. axum's own answers a segment that is not UTF-8 once
//! percent-decoded (`/control/v1/node/%FF`) with a plain-text 400; every client of this
//! API parses our JSON error shape, so the rejection becomes an [`ApiError`] that says
//! what was wrong. The handlers then parse the text strictly (node ids, shard ids).

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

use super::error::ApiError;

/// The one parameter of a route's path, as text.
pub struct Segment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(text)| Segment(text))
            .map_err(|rejection| {
                ApiError::BadRequest(format!("invalid path parameter: {}", rejection.body_text()))
            })
    }
}
