//! The admin HTTP port: liveness, readiness, metrics, the revocation API and the Auth0 log stream
//! receiver, the RFC 9728 protected resource metadata, the identity token's key set and discovery
//! document (`/.well-known/jwks.json`, `/.well-known/openid-configuration`), and with `serve --dev` the
//! development issuer's discovery document and key set.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::App;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/dev/.well-known/openid-configuration", get(dev_discovery))
        .route("/dev/jwks.json", get(dev_jwks))
        .route("/.well-known/jwks.json", get(identity_jwks))
        .route("/.well-known/openid-configuration", get(identity_discovery))
        .merge(super::revocations::router())
        .fallback(get(resource_metadata))
        .with_state(app)
}

/// Readiness; a shared-state fault is shown in the body without failing it (checks go on with the last
/// known denylist).
async fn readyz(State(app): State<Arc<App>>) -> Response {
    let (status, mut body) = if app.ready() {
        (StatusCode::OK, String::from("ready\n"))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, String::from("not ready\n"))
    };
    if let Some(fault) = app.state().fault() {
        body.push_str("degraded: shared state (");
        body.push_str(app.state().backend_name());
        body.push_str(") unavailable, the last known denylist applies: ");
        body.push_str(&fault);
        body.push('\n');
    }
    (status, body).into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let runtime = app.runtime();
    let providers = runtime.authorizer().providers();
    let state = app.state();
    let snapshot = crate::metrics::Snapshot {
        jwks_keys: providers
            .named_key_stores()
            .map(|(name, store)| (Arc::from(name), store.current().map_or(0, |k| k.len())))
            .collect(),
        token_cache_entries: providers.cached_tokens(),
        ready: app.ready(),
        state_backend: state.backend_name(),
        state_up: state.fault().is_none(),
        redis_errors: state.errors(),
        redis: state.redis_metrics(),
        revocations: state.denylist().len(),
        reloads: {
            let (ok, failed) = app.reloads().counts();
            (ok, failed, app.reloads().hash())
        },
        tls: app.tls().map(|tls| tls.metrics()),
    };
    let body = app.metrics().render(&snapshot);
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response()
}

/// RFC 9728 protected resource metadata at `/.well-known/oauth-protected-resource` + the resource's path.
async fn resource_metadata(State(app): State<Arc<App>>, uri: axum::http::Uri) -> Response {
    match app.runtime().resources().document(uri.path()) {
        Some(document) => (
            [(header::CONTENT_TYPE, "application/json")],
            document.to_owned(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn dev_discovery(State(app): State<Arc<App>>) -> Response {
    match &app.dev {
        Some(dev) => Json(dev.discovery()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn dev_jwks(State(app): State<Arc<App>>) -> Response {
    match &app.dev {
        Some(dev) => Json(dev.jwks()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The identity token's key set: 404 when `identity_token` is not configured. Verifiers may cache it for a
/// minute; a new key is published well before it signs (`rotation.publish_ahead_seconds`).
async fn identity_jwks(State(app): State<Arc<App>>) -> Response {
    let runtime = app.runtime();
    match runtime.identity_tokens() {
        Some(tokens) => (
            [(header::CACHE_CONTROL, "public, max-age=60")],
            Json(tokens.jwks()),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The discovery document of the identity token's issuer; `jwks_uri` is on the host the request named.
async fn identity_discovery(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let runtime = app.runtime();
    let Some(tokens) = runtime.identity_tokens() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic() && b != b'/'))
        .unwrap_or("localhost");
    let jwks_uri = format!("http://{host}/.well-known/jwks.json");
    Json(tokens.discovery(&jwks_uri)).into_response()
}
