//! Every refusal the server answers over plain HTTP, and its one mapping to a response (status, headers, body).
//!
//! Handlers and middleware return an [`HttpError`] and never pick a status themselves; storage, auth and the
//! transports describe what went wrong and this module decides how it looks on the wire. Protocol-level failures
//! inside a sync exchange are not here: they are `Exit` frames (`push`, `pull`, `ws`). The file services (`/api`,
//! `/s3`) keep their own wire formats (the signer's JSON, S3's XML); the one refusal this server makes on their
//! behalf, the memory budget's 503, is answered here in their format.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use livestore_proto::error::ProtoError;

use crate::auth::AuthRejection;
use crate::kinds::RejectionKind;

/// Which family of routes a request was for, so a refusal comes in the format its clients parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Surface {
    /// The sync endpoint, health, metrics, static files: plain text.
    Sync,
    /// The signer (`/api`): `{"error": ...}`.
    Signer,
    /// The embedded object store (`/s3`): S3 XML.
    ObjectStore,
}

impl Surface {
    /// The surface of a request path.
    pub(crate) fn of(path: &str) -> Self {
        if path.starts_with("/s3/") || path == "/s3" {
            Surface::ObjectStore
        } else if path.starts_with("/api/") {
            Surface::Signer
        } else {
            Surface::Sync
        }
    }
}

/// Why a request was refused before (or instead of) a sync exchange.
#[derive(Debug)]
pub(crate) enum HttpError {
    /// The query string is not `application/x-www-form-urlencoded`.
    MalformedQuery,
    /// A request without `storeId` and `transport` that no other route or static file answers.
    NotSyncRequest,
    /// `storeId`, `transport` or the URL's `payload` is invalid.
    InvalidParameter(ProtoError),
    /// Authentication or the connect hook said no (401, 403) or could not decide (503).
    Auth(AuthRejection),
    /// `transport=ws` without a WebSocket upgrade.
    UpgradeRequired,
    /// `transport=http` with another method than POST.
    MethodNotAllowed,
    /// An HTTP-transport body that is not UTF-8.
    BodyNotUtf8,
    /// An HTTP-transport body that is a message other than one `Request`.
    NotOneRequest,
    /// An HTTP-transport body that is not a protocol message.
    MalformedMessage(ProtoError),
    /// A body over `limits.max_message_bytes`.
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A body that did not arrive within `limits.body_read_timeout_seconds`.
    BodyTimeout {
        /// The limit in seconds.
        seconds: u64,
    },
    /// A body that ended before its announced length.
    BodyEndedEarly,
    /// The memory budget has no room for the request's body.
    OverBudget(Surface),
    /// The database is gone; another node, or this one shortly, serves the request.
    StorageUnavailable,
    /// Without authentication, a `Host` that is not a loopback name (DNS rebinding).
    HostRefused,
    /// A browser origin the origin policy does not allow.
    OriginRefused,
    /// No static file by that path.
    NotFound,
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            HttpError::MalformedQuery => (StatusCode::BAD_REQUEST, "malformed query string".into()),
            HttpError::NotSyncRequest => (
                StatusCode::BAD_REQUEST,
                "Invalid path: the sync endpoint needs ?storeId=...&transport=ws|http".into(),
            ),
            HttpError::InvalidParameter(error) | HttpError::MalformedMessage(error) => {
                (StatusCode::BAD_REQUEST, error.to_string())
            }
            HttpError::Auth(rejection) => (auth_status(rejection.kind), rejection.message),
            HttpError::UpgradeRequired => (
                StatusCode::UPGRADE_REQUIRED,
                "transport=ws needs a WebSocket upgrade request".into(),
            ),
            HttpError::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "transport=http expects POST".into())
            }
            HttpError::BodyNotUtf8 => (StatusCode::BAD_REQUEST, "request body is not UTF-8".into()),
            HttpError::NotOneRequest => (
                StatusCode::BAD_REQUEST,
                "the HTTP transport expects one Request message".into(),
            ),
            HttpError::BodyTooLarge { limit } => {
                (StatusCode::PAYLOAD_TOO_LARGE, format!("request body exceeds {limit} bytes"))
            }
            HttpError::BodyTimeout { seconds } => (
                StatusCode::REQUEST_TIMEOUT,
                format!("request body did not arrive within {seconds} s"),
            ),
            HttpError::BodyEndedEarly => (StatusCode::BAD_REQUEST, "request body ended early".into()),
            HttpError::OverBudget(surface) => return over_budget(surface),
            HttpError::StorageUnavailable => {
                return retry_soon(
                    Surface::Sync,
                    "the database is unavailable; try another node or retry shortly",
                );
            }
            HttpError::HostRefused => (
                StatusCode::FORBIDDEN,
                "Host is not a loopback name: without authentication this server answers only requests for \
                 localhost or a loopback address (DNS rebinding protection)"
                    .into(),
            ),
            HttpError::OriginRefused => (
                StatusCode::FORBIDDEN,
                "this origin may not call this server: without authentication only loopback origins and \
                 cors.allowed_origins may; with authentication, cors.allowed_origins when set (and, when \
                 sessions are cookies, the server's own origin)"
                    .into(),
            ),
            HttpError::NotFound => (StatusCode::NOT_FOUND, "Not found".into()),
        };
        (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
    }
}

fn auth_status(kind: RejectionKind) -> StatusCode {
    match kind {
        RejectionKind::Unauthorized => StatusCode::UNAUTHORIZED,
        RejectionKind::Forbidden => StatusCode::FORBIDDEN,
        RejectionKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// 503 in the format of the route: S3's `SlowDown` under `/s3`, the signer's JSON under `/api`, text elsewhere.
fn over_budget(surface: Surface) -> Response {
    retry_soon(surface, "the server is at its memory budget; retry shortly")
}

/// 503 with `Retry-After: 1`, in the surface's format.
fn retry_soon(surface: Surface, message: &str) -> Response {
    let (content_type, body) = match surface {
        Surface::ObjectStore => (
            "application/xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>{message}</Message></Error>"
            ),
        ),
        Surface::Signer => {
            ("application/json", serde_json::json!({ "error": message }).to_string())
        }
        Surface::Sync => ("text/plain; charset=utf-8", message.to_owned()),
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::RETRY_AFTER, HeaderValue::from_static("1")),
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parts(error: HttpError) -> (StatusCode, Option<String>, Option<String>, String) {
        let response = error.into_response();
        let header = |name| {
            response
                .headers()
                .get(name)
                .map(|value: &HeaderValue| value.to_str().unwrap().to_owned())
        };
        let (content_type, retry_after) =
            (header(header::CONTENT_TYPE), header(header::RETRY_AFTER));
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, content_type, retry_after, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn each_refusal_has_its_status_and_a_text_body() {
        let cases = [
            (HttpError::MalformedQuery, StatusCode::BAD_REQUEST),
            (HttpError::NotSyncRequest, StatusCode::BAD_REQUEST),
            (HttpError::Auth(AuthRejection::unauthorized("no")), StatusCode::UNAUTHORIZED),
            (HttpError::Auth(AuthRejection::forbidden("no")), StatusCode::FORBIDDEN),
            (HttpError::UpgradeRequired, StatusCode::UPGRADE_REQUIRED),
            (HttpError::MethodNotAllowed, StatusCode::METHOD_NOT_ALLOWED),
            (HttpError::BodyTooLarge { limit: 10 }, StatusCode::PAYLOAD_TOO_LARGE),
            (HttpError::BodyTimeout { seconds: 5 }, StatusCode::REQUEST_TIMEOUT),
            (HttpError::BodyEndedEarly, StatusCode::BAD_REQUEST),
            (HttpError::HostRefused, StatusCode::FORBIDDEN),
            (HttpError::OriginRefused, StatusCode::FORBIDDEN),
            (HttpError::NotFound, StatusCode::NOT_FOUND),
        ];
        for (error, status) in cases {
            let label = format!("{error:?}");
            let (got, content_type, retry_after, body) = parts(error).await;
            assert_eq!(got, status, "{label}");
            assert_eq!(content_type.as_deref(), Some("text/plain; charset=utf-8"), "{label}");
            assert_eq!(retry_after, None, "{label}");
            assert!(!body.is_empty(), "{label}");
        }
    }

    #[tokio::test]
    async fn retry_soon_refusals_say_when_in_the_format_of_their_route() {
        let (status, content_type, retry_after, body) =
            parts(HttpError::OverBudget(Surface::of("/s3/files/key"))).await;
        assert_eq!((status, retry_after.as_deref()), (StatusCode::SERVICE_UNAVAILABLE, Some("1")));
        assert_eq!(content_type.as_deref(), Some("application/xml"));
        assert!(body.contains("<Code>SlowDown</Code>"), "{body}");
        let (_, content_type, _, body) =
            parts(HttpError::OverBudget(Surface::of("/api/v1/sign/upload"))).await;
        assert_eq!(content_type.as_deref(), Some("application/json"));
        assert!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"].is_string());
        let (status, content_type, retry_after, _) = parts(HttpError::StorageUnavailable).await;
        assert_eq!((status, retry_after.as_deref()), (StatusCode::SERVICE_UNAVAILABLE, Some("1")));
        assert_eq!(content_type.as_deref(), Some("text/plain; charset=utf-8"));
        assert_eq!(Surface::of("/?storeId=a"), Surface::Sync);
    }
}
