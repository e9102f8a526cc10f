//! Our JSON extractor: a body that does not parse becomes a 400 in our error shape, and
//! the message names the field that was wrong (`tenants[3].id: invalid tenant shard id`).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge(format!("request body is too large: {rejection}"))
                } else {
                    ApiError::BadRequest(format!("could not read the request body: {rejection}"))
                }
            })?;
        parse(&bytes).map(Json)
    }
}

/// Parses a JSON body; errors name the path of the offending field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::BadRequest(
            "request body is empty; expected JSON".into(),
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // `?` is serde_path_to_error's name for a place it could not name (a body cut
        // off before its first key): no path is better than that one.
        if path == "." || path == "?" || path.is_empty() {
            ApiError::BadRequest(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::BadRequest(format!("invalid JSON body at {path}: {inner}"))
        }
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::ValidateRequest;

    #[test]
    fn errors_name_the_field() {
        let body = br#"{"tenants": [{"id": "072f1291a5310026820b2fe4b2968934", "gen": 1},
                                     {"id": "nope", "gen": 2}]}"#;
        let err = parse::<ValidateRequest>(body).unwrap_err().to_string();
        assert!(err.contains("tenants[1].id"), "{err}");
        assert!(err.contains("invalid tenant shard id"), "{err}");

        let err = parse::<ValidateRequest>(
            br#"{"tenants": [{"id": "072f1291a5310026820b2fe4b2968934"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("missing field `gen`"), "{err}");

        let err = parse::<ValidateRequest>(b"{").unwrap_err().to_string();
        assert!(err.starts_with("invalid JSON body: "), "{err}");
        let err = parse::<ValidateRequest>(br#"{"tenants": [{"id": "#)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid JSON body at tenants[0].id: "),
            "{err}"
        );
        assert!(parse::<ValidateRequest>(b"").is_err());
        assert!(parse::<ValidateRequest>(br#"{"tenants": []} x"#).is_err());
    }

    #[test]
    fn unknown_fields_are_tolerated_and_2023_spellings_accepted() {
        let body = br#"{"tenants": [{"id": "072f1291a5310026820b2fe4b2968934", "generation": 4, "future": true}], "extra": 1}"#;
        let parsed = parse::<ValidateRequest>(body).unwrap();
        assert_eq!(parsed.tenants[0].r#gen, 4);
    }
}
