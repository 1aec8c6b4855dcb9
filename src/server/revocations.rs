//! The revocation endpoints of the admin port: the admin API (`/admin/revocations`, on when
//! `revocation.admin_secret` is set) and the Auth0 log stream receiver (`POST /events/auth0`, on when
//! `revocation.auth0_log_stream_secret` is set). Both take `Authorization: Bearer <secret>`, compared in
//! constant time; an endpoint that is off answers 404.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use super::App;
use crate::config::Secret;
use crate::revocation::{self, auth0, Kind};

pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/admin/revocations", post(create).get(list))
        .route("/admin/revocations/{kind}/{value}", delete(remove))
        .route("/events/auth0", post(auth0_batch))
}

/// The body of `POST /admin/revocations`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRevocation {
    kind: Kind,
    value: String,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

/// The largest admin API body.
const MAX_ADMIN_BODY: usize = 16 * 1024;

async fn create(State(app): State<Arc<App>>, request: Request) -> Response {
    let state = app.state();
    if let Err(refused) = authorize(&state.settings().secrets().admin, request.headers()) {
        return refused;
    }
    let body = match read_body(request.into_body(), MAX_ADMIN_BODY).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let new: NewRevocation = match serde_json::from_slice(&body) {
        Ok(new) => new,
        Err(e) => return problem(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let ttl = new
        .ttl_seconds
        .unwrap_or(state.settings().default_ttl_seconds);
    let entry = match revocation::new_entry(new.kind, new.value, new.issuer, ttl, state.now()) {
        Ok(entry) => entry,
        Err(e) => return problem(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    tracing::info!(
        revocation.kind = entry.kind.as_str(),
        revocation.issuer = entry.issuer.as_deref().unwrap_or(""),
        revocation.expires_at = entry.expires_at,
        "revocation added through the admin API"
    );
    match state.revoke(entry.clone()).await {
        Ok(()) => (StatusCode::CREATED, Json(entry)).into_response(),
        Err(e) => unshared(&e),
    }
}

async fn list(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let state = app.state();
    if let Err(refused) = authorize(&state.settings().secrets().admin, &headers) {
        return refused;
    }
    Json(json!({ "revocations": state.denylist().list(state.now()) })).into_response()
}

async fn remove(
    State(app): State<Arc<App>>,
    Path((kind, value)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let state = app.state();
    if let Err(refused) = authorize(&state.settings().secrets().admin, &headers) {
        return refused;
    }
    let Some(kind) = Kind::parse(&kind) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "kind must be one of sub, jti, sid, client_id",
        );
    };
    match state.unrevoke(kind, &value).await {
        Ok(0) => problem(StatusCode::NOT_FOUND, "no such revocation"),
        Ok(removed) => {
            tracing::info!(
                revocation.kind = kind.as_str(),
                "revocation removed through the admin API"
            );
            Json(json!({ "removed": removed })).into_response()
        }
        Err(e) => unshared(&e),
    }
}

/// `POST /events/auth0`: a Custom Webhook log stream batch (a JSON array of log events).
async fn auth0_batch(State(app): State<Arc<App>>, request: Request) -> Response {
    let state = app.state();
    let settings = state.settings();
    if let Err(refused) = authorize(&settings.secrets().auth0, request.headers()) {
        return refused;
    }
    let body = match read_body(request.into_body(), settings.auth0_max_body_bytes).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    // The batch must be an array; an event in it that is not a log event (a numeric `user_id`, a missing
    // `log_id`) is reported and skipped, so the valid ones (a logout in the same batch) still apply.
    let values: Vec<serde_json::Value> = match serde_json::from_slice(&body) {
        Ok(values) => values,
        Err(e) => return problem(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let mut events = Vec::with_capacity(values.len());
    let mut malformed = Vec::new();
    let mut skipped = 0usize;
    for (index, value) in values.into_iter().enumerate() {
        let log_id = value
            .get("log_id")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        match auth0::LogEvent::deserialize(value) {
            Ok(event) => events.push(event),
            Err(e) => {
                skipped += 1;
                tracing::warn!(
                    auth0.index = index,
                    auth0.log_id = log_id.as_deref().unwrap_or(""),
                    error = %e,
                    "an Auth0 log event is not readable; skipped, the rest of the batch applies"
                );
                if malformed.len() < MAX_REPORTED {
                    malformed
                        .push(json!({ "index": index, "log_id": log_id, "error": e.to_string() }));
                }
            }
        }
    }
    let now = state.now();
    let (mut duplicates, mut ignored) = (0usize, 0usize);
    let mut fresh: Vec<&str> = Vec::new();
    let mut entries = Vec::new();
    for event in &events {
        let Some(entry) = auth0::entry_for(
            event,
            settings.auth0_issuer.as_deref(),
            settings.default_ttl_seconds,
            now,
        ) else {
            ignored += 1;
            continue;
        };
        if fresh.contains(&event.log_id.as_str()) {
            duplicates += 1;
            continue;
        }
        match state.first_log_id_seen(&event.log_id).await {
            Ok(true) => {
                duplicates += 1;
                continue;
            }
            Ok(false) => {}
            Err(e) => return unshared(&e),
        }
        tracing::info!(
            auth0.log_id = %event.log_id,
            auth0.type = %event.data.kind,
            revocation.kind = entry.kind.as_str(),
            "revocation from an Auth0 log event"
        );
        fresh.push(&event.log_id);
        entries.push(entry);
    }
    // The batch is one change to the local copy (one table copy, not one per event). The entries are
    // written before the log ids are marked seen, so a failed batch can be redelivered.
    let revoked = entries.len();
    if let Err(e) = state.revoke_all(entries).await {
        return unshared(&e);
    }
    for log_id in fresh {
        if let Err(e) = state.mark_log_id(log_id).await {
            return unshared(&e);
        }
    }
    let mut answer = json!({ "revoked": revoked, "duplicates": duplicates, "ignored": ignored });
    if skipped > 0 {
        answer["malformed"] = json!(skipped);
        answer["problems"] = json!(malformed);
    }
    Json(answer).into_response()
}

/// How many unreadable events an answer describes (all are counted and logged).
const MAX_REPORTED: usize = 20;

/// Checks `Authorization: Bearer <secret>` in constant time (over digests, so the length does not leak).
/// 404 when the endpoint is off, 401 with a challenge otherwise.
#[allow(clippy::result_large_err)]
fn authorize(secret: &Option<Secret>, headers: &HeaderMap) -> Result<(), Response> {
    let Some(secret) = secret else {
        return Err(StatusCode::NOT_FOUND.into_response());
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        })
        .unwrap_or("");
    let expected = Sha256::digest(secret.expose());
    let given = Sha256::digest(presented.as_bytes());
    if !presented.is_empty() && bool::from(expected.ct_eq(&given)) {
        return Ok(());
    }
    Err((
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            "Bearer realm=\"portcullis-admin\"",
        )],
        Json(json!({"error": "unauthorized"})),
    )
        .into_response())
}

/// Reads at most `limit` bytes; 413 past it.
#[allow(clippy::result_large_err)]
async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, Response> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| problem(StatusCode::PAYLOAD_TOO_LARGE, "the body is too large"))
}

fn problem(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// 503: applied on this replica, shared with the others once the backend is back.
fn unshared(error: &crate::state::StateError) -> Response {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("{error}: applied on this replica, shared once the backend is reachable again"),
    )
}
