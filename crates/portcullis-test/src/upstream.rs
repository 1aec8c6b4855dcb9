//! A scriptable fake of the HTTP upstreams providers call (introspection, webhook, GitHub): a real axum
//! server on loopback with hit counters, captured requests and failure switches.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How the fake answers every request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Normal,
    Fail500,
    Garbage,
    Slow(Duration),
    /// A 200 whose body is 2 MiB.
    Huge,
}

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Captured {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: String,
}

struct UpState {
    hits: AtomicUsize,
    mode: Mutex<Mode>,
    /// Keyed by `introspect:<token>`, `webhook:<api_key>`, `user:<token>`, `orgs:<token>`.
    answers: Mutex<HashMap<String, (u16, Value)>>,
    captured: Mutex<Vec<Captured>>,
}

pub struct FakeUpstream {
    pub addr: SocketAddr,
    state: Arc<UpState>,
    task: JoinHandle<()>,
}

impl FakeUpstream {
    pub async fn start() -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(UpState {
            hits: AtomicUsize::new(0),
            mode: Mutex::new(Mode::Normal),
            answers: Mutex::new(HashMap::new()),
            captured: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/introspect", post(introspect))
            .route("/webhook", post(webhook))
            .route("/user", get(github))
            .route("/user/orgs", get(github))
            .with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeUpstream { addr, state, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn answer(&self, key: &str, status: u16, body: Value) {
        self.state
            .answers
            .lock()
            .unwrap()
            .insert(key.to_owned(), (status, body));
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    pub fn captured(&self) -> Vec<Captured> {
        self.state.captured.lock().unwrap().clone()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn respond(
    state: &UpState,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
    key: String,
) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    state.captured.lock().unwrap().push(Captured {
        path: path.to_owned(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body: String::from_utf8_lossy(body).into_owned(),
    });
    let mode = *state.mode.lock().unwrap();
    match mode {
        Mode::Normal => {}
        Mode::Fail500 => return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        Mode::Garbage => return (StatusCode::OK, "{not json").into_response(),
        Mode::Slow(d) => tokio::time::sleep(d).await,
        Mode::Huge => return (StatusCode::OK, "x".repeat(2 << 20)).into_response(),
    }
    let answer = state.answers.lock().unwrap().get(&key).cloned();
    match answer {
        Some((status, body)) => {
            (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
        }
        None if key.starts_with("introspect:") => {
            axum::Json(serde_json::json!({"active": false})).into_response()
        }
        None => (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"message": "Bad credentials"})),
        )
            .into_response(),
    }
}

async fn introspect(
    State(state): State<Arc<UpState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    respond(
        &state,
        uri.path(),
        &headers,
        &body,
        format!("introspect:{token}"),
    )
    .await
}

async fn webhook(
    State(state): State<Arc<UpState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["api_key"].as_str().map(str::to_owned))
        .unwrap_or_default();
    respond(
        &state,
        uri.path(),
        &headers,
        &body,
        format!("webhook:{key}"),
    )
    .await
}

async fn github(State(state): State<Arc<UpState>>, uri: Uri, headers: HeaderMap) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_owned();
    let kind = if uri.path() == "/user" {
        "user"
    } else {
        "orgs"
    };
    respond(&state, uri.path(), &headers, &[], format!("{kind}:{token}")).await
}
