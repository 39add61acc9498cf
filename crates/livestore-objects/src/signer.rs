//! The signer HTTP API under `/api`, exactly the contract that
//! `@livestore-filesync/core` 0.8.0's `makeS3SignerRemoteStorage` uses, plus
//! additive extensions (checksum-bound uploads, batched signing, existence
//! check, multipart).
//!
//! Owns request parsing, key rules, authorization through the
//! [`TokenAuthority`], the JSON error format `{"error": ...}` and the CORS
//! headers of the upstream `s3-signer`. It does not touch object bytes: it
//! hands out presigned URLs and asks the [`Backend`] for the few operations
//! it performs itself.

mod handlers;
mod wire;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};

use crate::auth::TokenAuthority;
use crate::backend::{Backend, BackendError};
use crate::store::S3Error;

/// Shared by every signer handler.
pub(crate) struct SignerState {
    pub(crate) backend: Backend,
    pub(crate) authority: Arc<dyn TokenAuthority>,
    pub(crate) ttl_seconds: u64,
    pub(crate) max_request_bytes: usize,
}

impl std::fmt::Debug for SignerState {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SignerState")
            .field("backend", &self.backend)
            .field("ttl_seconds", &self.ttl_seconds)
            .finish_non_exhaustive()
    }
}

/// A refused signer request: the status and the `{"error": message}` text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    pub(crate) fn bad_gateway(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, message)
    }
}

/// The one mapping of object-store failures to the signer's answers.
impl From<BackendError> for ApiError {
    fn from(error: BackendError) -> Self {
        match error {
            BackendError::NoPublicOrigin => {
                Self::internal("cannot build object URLs: no Host header and no files.public_url")
            }
            BackendError::InvalidHost => {
                Self::bad_request("Invalid request: Host header is not a valid host")
            }
            BackendError::ClockOutOfRange => Self::internal("system clock is out of range"),
            BackendError::NotExternal => {
                Self::internal("server-side URLs are only for external stores")
            }
            BackendError::OperationFailed(operation) => {
                let operation = operation.to_string();
                let (first, rest) = operation.split_at(1);
                Self::internal(format!("{}{rest} failed", first.to_uppercase()))
            }
            BackendError::Store(S3Error { status, code, message }) => {
                Self::new(status, format!("{code}: {message}"))
            }
            BackendError::Unreachable(operation) => {
                Self::bad_gateway(format!("Object store unreachable during {operation}"))
            }
            BackendError::NotFound(operation) => {
                Self::not_found(format!("Not found: {operation} (no such upload or object)"))
            }
            BackendError::Refused { operation, status } => Self::bad_request(format!(
                "Invalid request: object store refused {operation} ({status})"
            )),
            BackendError::UpstreamFailed { operation, status } => {
                Self::bad_gateway(format!("Object store failed during {operation} ({status})"))
            }
            BackendError::NoUploadId => {
                Self::bad_gateway("Multipart create failed: the object store sent no UploadId")
            }
            BackendError::CompleteFailed { code } => {
                Self::bad_request(format!("Invalid request: multipart complete failed: {code}"))
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}

/// The `/api` routes with CORS and the body limit applied; the `/api/v1` routes check the bearer token before their
/// body is read.
pub(crate) fn router(state: Arc<SignerState>) -> Router {
    let max_request_bytes = state.max_request_bytes;
    Router::new()
        .route("/api/v1/sign/upload", post(handlers::sign_upload))
        .route("/api/v1/sign/uploads", post(handlers::sign_uploads))
        .route("/api/v1/sign/download", post(handlers::sign_download))
        .route("/api/v1/delete", post(handlers::delete))
        .route("/api/v1/head", post(handlers::head))
        .route("/api/v1/multipart/create", post(handlers::multipart_create))
        .route("/api/v1/multipart/sign-part", post(handlers::multipart_sign_part))
        .route("/api/v1/multipart/complete", post(handlers::multipart_complete))
        .route("/api/v1/multipart/abort", post(handlers::multipart_abort))
        .route("/api/v1/multipart/parts", post(handlers::multipart_parts))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), authenticate_first))
        .route("/api/health", get(handlers::health))
        // Unknown paths under /api are ours to answer (with JSON), so they
        // never fall through to the sync server's catch-all route.
        .route("/api", any(not_found))
        .route("/api/", any(not_found))
        .route("/api/{*rest}", any(not_found))
        .with_state(state)
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .layer(middleware::from_fn(cors))
}

/// Refuses a request whose bearer token is not valid for any store before its body is read (401, JSON). Which
/// store the token may touch is checked once the body names the key.
async fn authenticate_first(
    axum::extract::State(state): axum::extract::State<Arc<SignerState>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let caller = crate::auth::Caller { bearer: crate::auth::bearer_token(headers), headers };
    if let Err(rejection) = state.authority.authenticate(caller).await {
        let (status, message) = match rejection {
            crate::AuthRejection::Unauthorized(message) => (StatusCode::UNAUTHORIZED, message),
            crate::AuthRejection::Forbidden(message) => (StatusCode::FORBIDDEN, message),
        };
        return ApiError::new(status, message).into_response();
    }
    next.run(request).await
}

async fn not_found() -> ApiError {
    ApiError::not_found("Not found")
}

/// The upstream `s3-signer` CORS policy: preflights get 204 on any `/api`
/// path, every response gets the headers; `ETag` is exposed too.
async fn cors(request: Request, next: Next) -> Response {
    if request.method() == Method::OPTIONS {
        let mut response = StatusCode::NO_CONTENT.into_response();
        add_cors_headers(&mut response);
        return response;
    }
    let mut response = next.run(request).await;
    if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        // axum's own 405 has an empty body; keep the Allow header, add JSON.
        let allow = response.headers().get(header::ALLOW).cloned();
        response =
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed").into_response();
        if let Some(allow) = allow {
            response.headers_mut().insert(header::ALLOW, allow);
        }
    }
    add_cors_headers(&mut response);
    response
}

fn add_cors_headers(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type, Authorization, X-Worker-Auth"),
    );
    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("ETag"));
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
}
