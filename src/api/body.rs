//! Request bodies: JSON objects of at most [`super::MAX_BODY`] bytes. A
//! body too large is 413; one that is not JSON, or not the JSON a route
//! takes, is 400 with what serde said (its line and column), instead of
//! axum's plain-text 415/422.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON body; an empty body is `{}` (every field has a default or the
/// route says what is missing).
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let empty = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .is_some_and(|v| v == "0");
        if empty {
            return serde_json::from_str("{}")
                .map(Body)
                .map_err(|e| ApiError::bad_request(format!("the request needs a JSON body: {e}")));
        }
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(JsonRejection::BytesRejection(e))
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the request body is larger than {} KiB",
                        super::MAX_BODY / 1024
                    ),
                ))
            }
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::bad_request(
                "the request body must be JSON, with `Content-Type: application/json`",
            )),
            Err(e) => Err(ApiError::bad_request(format!(
                "the request body is not valid: {}",
                e.body_text()
            ))),
        }
    }
}
