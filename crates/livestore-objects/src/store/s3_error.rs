//! S3-style error responses of the embedded store: an HTTP status, an S3 error
//! code (`NoSuchKey`, `SignatureDoesNotMatch`, ...) and a message, rendered as
//! the XML body AWS sends, so S3 SDKs surface the same errors they would from
//! AWS.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::sigv4::AuthError;
use super::xml::escape;

/// One failed S3 request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct S3Error {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl S3Error {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    pub(crate) fn no_such_key() -> Self {
        Self::new(StatusCode::NOT_FOUND, "NoSuchKey", "The specified key does not exist.")
    }

    pub(crate) fn no_such_upload() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NoSuchUpload",
            "The specified multipart upload does not exist.",
        )
    }

    pub(crate) fn not_implemented(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            format!("{what} is not implemented by the embedded store"),
        )
    }

    pub(crate) fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidRequest", message)
    }

    /// An IO failure inside the store: logged with its cause, reported generically.
    pub(crate) fn internal(error: &std::io::Error) -> Self {
        tracing::error!(%error, "embedded object store IO failure");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "We encountered an internal error. Please try again.",
        )
    }
}

impl From<AuthError> for S3Error {
    fn from(error: AuthError) -> Self {
        let message = error.to_string();
        let (status, code) = match error {
            AuthError::Anonymous | AuthError::Expired => (StatusCode::FORBIDDEN, "AccessDenied"),
            AuthError::MalformedQuery(_) => {
                (StatusCode::BAD_REQUEST, "AuthorizationQueryParametersError")
            }
            AuthError::MalformedHeader(_) | AuthError::WrongRegion { .. } => {
                (StatusCode::BAD_REQUEST, "AuthorizationHeaderMalformed")
            }
            AuthError::UnknownAccessKey => (StatusCode::FORBIDDEN, "InvalidAccessKeyId"),
            AuthError::ClockSkew => (StatusCode::FORBIDDEN, "RequestTimeTooSkewed"),
            AuthError::MissingSignedHeader(_) | AuthError::SignatureMismatch(_) => {
                (StatusCode::FORBIDDEN, "SignatureDoesNotMatch")
            }
            AuthError::StreamingPayload => (StatusCode::NOT_IMPLEMENTED, "NotImplemented"),
        };
        Self { status, code, message }
    }
}

impl IntoResponse for S3Error {
    fn into_response(self) -> Response {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message></Error>",
            self.code,
            escape(&self.message)
        );
        (self.status, [(header::CONTENT_TYPE, "application/xml")], body).into_response()
    }
}
