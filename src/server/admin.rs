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
        .fallback(get(resource_metadata))
        .with_state(app)
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let body = app
        .metrics()
        .render(app.runtime().authorizer().providers(), app.ready());
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
