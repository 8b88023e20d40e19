//! Request bodies: JSON objects of at most [`super::MAX_BODY`] bytes. A
//! body too large is 413; one that is not JSON, or not the JSON a route
//! takes, is 400 with what serde said (its line and column), instead of
//! axum's plain-text 415/422. An empty body is `{}`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON body.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let v = v.to_ascii_lowercase();
                v.starts_with("application/json") || v.contains("+json")
            });
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the request body is larger than {} KiB",
                        super::MAX_BODY / 1024
                    ),
                )
            } else {
                ApiError::bad_request(format!("the request body could not be read: {e}"))
            }
        })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else if json_type == Some(false) {
            return Err(ApiError::bad_request(
                "the request body must be JSON, with `Content-Type: application/json`",
            ));
        } else {
            &bytes
        };
        serde_json::from_slice(text)
            .map(Body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid: {e}")))
    }
}
