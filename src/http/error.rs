//! The verify API's one error type: every refusal is a status and a JSON `{"error"}`.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or unknown bearer token")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("the request body is over {0} bytes")]
    TooLarge(usize),
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("no such route")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the database is not ready")]
    NotReady,
    #[error("the request took too long")]
    Timeout,
    /// Ours: logged in full with a reference; the caller sees only the reference.
    #[error("internal error (reference {0})")]
    Internal(String),
}

impl ApiError {
    /// Logs what went wrong with a reference the caller can quote.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        use rand::distr::{Alphanumeric, SampleString};
        let reference = Alphanumeric.sample_string(&mut rand::rng(), 8);
        tracing::error!(reference, error = %err, "verify API request failed");
        Self::Internal(reference)
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout => StatusCode::REQUEST_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": self.to_string() }));
        match self {
            Self::Unauthorized => {
                (self.status(), [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
            }
            _ => (self.status(), body).into_response(),
        }
    }
}
