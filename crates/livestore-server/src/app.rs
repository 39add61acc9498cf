//! The HTTP surface: routes and the sync endpoint's request checks.
//!
//! The sync endpoint answers on any path whose query carries `storeId` and `transport`, as the reference worker
//! does. Everything it checks (store id, transport, payload, credentials) is checked before a WebSocket upgrade, so
//! a refused client sees an HTTP status, never a half-open socket, and before an HTTP request's body is read.
//!
//! In front of every route: the origin policy (`origin`) and the request-body guard (`body_guard`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Query, Request, State, WebSocketUpgrade};
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use livestore_proto::url::{Transport, decode_url_payload, validate_store_id};
use serde_json::value::RawValue;
use tower_http::cors::{Any, CorsLayer};

use crate::auth::ConnectContext;
use crate::body_guard::{BodyGuard, guard_bodies};
use crate::hooks::TransportKind;
use crate::http_error::HttpError;
use crate::http_server::ConnectionWatch;
use crate::origin::{OriginPolicy, guard_origins};
use crate::state::AppState;

/// The text `GET /` answers with, as the reference worker does.
const INFO_TEXT: &str = "Info: Sync backend endpoint for @livestore/sync-cf (livestore-rs).";

/// Builds the router: sync endpoint, health and metrics, plus the file services' own routes (`/api`, `/s3`), all
/// behind the origin policy and the body guard.
///
/// The file services bring their own CORS and body limits (object uploads stream gigabytes), so the sync routes'
/// CORS layer is applied before merging them.
pub(crate) fn app(state: AppState, files: Router) -> Router {
    let body_guard = BodyGuard {
        budget: state.budget.clone(),
        metrics: state.metrics.clone(),
        max_buffered_bytes: state.limits.max_message_bytes as u64,
        timeout: std::time::Duration::from_secs(state.limits.body_read_timeout_seconds),
    };
    let origins = OriginPolicy {
        no_auth: !state.auth.is_enabled(),
        cookie_auth: state.cookie_sessions,
        allowed_origins: state.allowed_origins.clone(),
        metrics: state.metrics.clone(),
    };
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::HEAD,
            Method::OPTIONS,
        ])
        .allow_headers(Any)
        .expose_headers([header::ETAG]);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .fallback(sync_endpoint)
        .layer(cors)
        .with_state(state)
        .merge(files)
        .layer(axum::middleware::from_fn_with_state(body_guard, guard_bodies))
        .layer(axum::middleware::from_fn_with_state(origins, guard_origins))
}

async fn metrics(State(state): State<AppState>) -> Response {
    state.metrics.observe_object_store(state.files.embedded_store_stats());
    state.metrics.observe_budget(state.budget.used());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn sync_endpoint(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let (method, uri, headers) = (parts.method.clone(), parts.uri.clone(), parts.headers.clone());
    let Ok(Query(query)) = Query::<HashMap<String, String>>::try_from_uri(&uri) else {
        return HttpError::MalformedQuery.into_response();
    };
    let (Some(store_id), Some(transport)) = (query.get("storeId"), query.get("transport")) else {
        if let Some(site) = &state.static_site
            && (method == Method::GET || method == Method::HEAD)
        {
            return site.serve(&method, uri.path(), uri.query(), &headers).await;
        }
        return if method == Method::GET && uri.path() == "/" {
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], INFO_TEXT).into_response()
        } else {
            HttpError::NotSyncRequest.into_response()
        };
    };
    if let Err(error) = validate_store_id(store_id) {
        return HttpError::InvalidParameter(error).into_response();
    }
    let transport = match Transport::parse(transport) {
        Ok(transport) => transport,
        Err(error) => return HttpError::InvalidParameter(error).into_response(),
    };
    let url_payload: Option<Box<RawValue>> =
        match query.get("payload").map(|value| decode_url_payload(value)) {
            None => None,
            Some(Ok(payload)) => Some(payload),
            Some(Err(error)) => return HttpError::InvalidParameter(error).into_response(),
        };
    let kind = match transport {
        Transport::WebSocket => TransportKind::Ws,
        Transport::Http => TransportKind::Http,
    };
    let context = ConnectContext {
        store_id,
        payload: url_payload.as_deref(),
        headers: &headers,
        remote_addr: parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| *addr),
        transport: kind,
    };
    let identity = match state.auth.admit(context).await {
        Ok(identity) => identity,
        Err(rejection) => {
            let what = match kind {
                TransportKind::Ws => "refused WebSocket connection",
                TransportKind::Http | TransportKind::Signer => "refused HTTP-transport request",
            };
            tracing::info!(store_id, kind = ?rejection.kind, "{what}");
            if kind == TransportKind::Http {
                state.metrics.http_requests.inc();
            }
            state.metrics.connect_refused(rejection.kind);
            return HttpError::Auth(rejection).into_response();
        }
    };
    match transport {
        Transport::WebSocket => {
            let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &state).await;
            let Ok(upgrade) = upgrade else {
                return HttpError::UpgradeRequired.into_response();
            };
            let max_message_bytes = state.limits.max_message_bytes;
            let connection = crate::ws::Connection {
                store_id: store_id.clone(),
                url_payload,
                identity,
                watch: parts.extensions.get::<Arc<ConnectionWatch>>().cloned(),
            };
            upgrade
                .max_message_size(max_message_bytes)
                .max_frame_size(max_message_bytes)
                // Small buffers keep idle connections cheap; they grow on demand for large frames.
                .read_buffer_size(4 * 1024)
                .write_buffer_size(16 * 1024)
                .on_upgrade(move |socket| {
                    let sessions = state.sessions.clone();
                    sessions.track_future(crate::ws::serve_socket(state, socket, connection))
                })
        }
        Transport::Http => {
            if method != Method::POST {
                return HttpError::MethodNotAllowed.into_response();
            }
            crate::http_transport::handle(state, store_id.clone(), identity, body).await
        }
    }
}
