//! The admin HTTP port: liveness, readiness, metrics, the RFC 9728 protected resource metadata, and with
//! `serve --dev` the development issuer's discovery document and key set.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
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
    let mut body = app
        .metrics()
        .render(app.runtime().authorizer().providers(), app.ready());
    let state = app.state();
    crate::metrics::render_state(
        &mut body,
        state.backend_name(),
        state.fault().is_none(),
        state.errors(),
        state.denylist().len(),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
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
