//! Serving: the gRPC Check service with health and reflection, the HTTP forward-auth listener (checks
//! over plain HTTP for nginx, Traefik, Caddy and Envoy's `http_service`), and the admin HTTP endpoints.
//!
//! [`run`] takes bound [`Listeners`] and a shutdown future, so the binary binds the configured ports and tests
//! bind `127.0.0.1:0` and run many servers at once. On shutdown, health turns NOT_SERVING and `/readyz`
//! 503 for the drain period while requests are still answered; then both servers stop accepting and finish
//! what is in flight.

mod admin;
mod check;
mod grpc;
pub(crate) mod http;
mod reload;
mod revocations;
pub mod tls;

pub use self::check::EXPLAIN_HEADER;
pub use self::grpc::CheckService;
pub use self::reload::{weakened, Changes, ReloadError, ReloadStats, Reloader, Weakening};

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use arc_swap::ArcSwap;

use crate::clock::Clock;
use crate::config::{Config, ConfigErrors, Sources};
use crate::dev::DevIssuer;
use crate::io::{FileKeys, ReqwestUpstream};
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::state::SharedState;

/// The gRPC service name health reports on, beside the overall `""`: SERVING once every provider can
/// decide, NOT_SERVING before that and while draining (readiness).
pub const SERVICE_NAME: &str = "envoy.service.auth.v3.Authorization";
/// A health service that is SERVING for as long as the process serves, whatever the IdPs do: for
/// liveness probes, so that an IdP outage does not restart pods.
pub const LIVENESS_SERVICE: &str = "liveness";

/// Everything a running server shares: the current runtime (swappable), and what outlives a runtime
/// (metrics, the drain state, the listen-time settings).
pub struct App {
    runtime: ArcSwap<Runtime>,
    /// The engine's recorder for every runtime this server builds.
    metrics: Arc<Metrics>,
    /// The HTTP clients every runtime's providers share.
    upstream: Arc<ReqwestUpstream>,
    /// Schedules the runtimes' background refreshes (a test's manual clock drives them).
    clock: Clock,
    drain: Duration,
    /// The development issuer whose discovery and JWKS the admin port serves (`serve --dev`).
    dev: Option<Arc<DevIssuer>>,
    draining: AtomicBool,
    /// The denylist and replay records shared across replicas; every runtime reads its denylist.
    state: Arc<SharedState>,
    /// Cancels every background task when serving stops.
    background: CancellationToken,
    /// Cancels the current runtime's background tasks (a child of `background`) when it is replaced.
    runtime_tasks: Mutex<CancellationToken>,
    /// Configuration reloads, for `/metrics`.
    reloads: ReloadStats,
    /// The listeners' TLS (`server.tls`), once serving with it: its series on `/metrics`.
    tls: std::sync::OnceLock<Arc<tls::ServerTls>>,
    /// How the HTTP forward-auth listener reads requests (`server.http_mode`), when one is configured.
    http: Option<http::HttpSettings>,
    /// One permit per check in flight (`server.max_concurrent_checks`).
    admission: tokio::sync::Semaphore,
    /// `server.max_request_bytes`: the largest Check message decoded.
    max_request_bytes: usize,
}

// === impl App ===

impl App {
    /// Everything a server needs, from its configuration: builds its runtime (secrets and files from
    /// `sources`). With state in memory and the revocation endpoints off; see [`App::from_config`].
    pub fn new(
        config: &Config,
        dev: Option<Arc<DevIssuer>>,
        sources: Sources,
        clock: Clock,
    ) -> Result<App, ConfigErrors> {
        let state = SharedState::memory(clock.clone());
        App::build(
            config,
            dev,
            Arc::new(Metrics::default()),
            state,
            sources,
            clock,
        )
    }

    /// Everything a server needs, with the shared state its configuration asks for (`state`,
    /// `revocation`: see [`SharedState::from_config`]): the metrics first, then the state recording its
    /// Redis calls into them, then the runtime built with this server's environment ([`App::env`]), so
    /// it reads the state's denylist and replay records and records into this server's metrics.
    pub fn from_config(
        config: &Config,
        dev: Option<Arc<DevIssuer>>,
        sources: Sources,
        clock: Clock,
    ) -> Result<App, ConfigErrors> {
        let metrics = Arc::new(Metrics::default());
        let state = SharedState::from_config(config, &sources, clock.clone(), &*metrics)?;
        App::build(config, dev, metrics, state, sources, clock)
    }

    fn build(
        config: &Config,
        dev: Option<Arc<DevIssuer>>,
        metrics: Arc<Metrics>,
        state: SharedState,
        sources: Sources,
        clock: Clock,
    ) -> Result<App, ConfigErrors> {
        let state = Arc::new(state);
        let upstream = Arc::new(ReqwestUpstream::new());
        let env = server_env(&state, &metrics, &upstream, sources, clock.clone());
        let runtime = Runtime::build(config, &env)?;
        let background = CancellationToken::new();
        Ok(App {
            runtime: ArcSwap::from_pointee(runtime),
            metrics,
            upstream,
            clock,
            drain: Duration::from_secs(config.server.drain_seconds),
            dev,
            draining: AtomicBool::new(false),
            state,
            runtime_tasks: Mutex::new(background.child_token()),
            background,
            reloads: ReloadStats::default(),
            tls: std::sync::OnceLock::new(),
            http: http::HttpSettings::from_config(&config.server),
            admission: tokio::sync::Semaphore::new(
                config
                    .server
                    .max_concurrent_checks
                    .min(tokio::sync::Semaphore::MAX_PERMITS),
            ),
            max_request_bytes: config.server.max_request_bytes,
        })
    }

    /// The environment of a runtime this server builds (a reload): secrets and files from `sources`,
    /// this server's HTTP clients, shared state and metrics.
    pub fn env(&self, sources: Sources, clock: Clock) -> portcullis_core::Env {
        server_env(&self.state, &self.metrics, &self.upstream, sources, clock)
    }

    /// Serves `runtime` (given the shared state already) from now on: starts its background tasks, waits
    /// at most `ready_wait` for its providers to load their keys, swaps it in, and stops the previous
    /// runtime's tasks. Checks holding the previous runtime finish on it.
    pub(crate) async fn replace_runtime(&self, runtime: Runtime, ready_wait: Duration) {
        let tasks = self.background.child_token();
        crate::io::spawn_background(&runtime, &self.clock, &tasks);
        let deadline = tokio::time::Instant::now() + ready_wait;
        while !runtime.ready() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !runtime.ready() {
            tracing::warn!("a new provider's keys are not loaded yet; its checks are unavailable until they are");
        }
        self.runtime.store(Arc::new(runtime));
        let mut current = self
            .runtime_tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::replace(&mut *current, tasks).cancel();
    }

    /// Configuration reload counters and the hash of the file in force.
    pub fn reloads(&self) -> &ReloadStats {
        &self.reloads
    }

    /// The listeners' TLS, when serving with `server.tls`.
    pub fn tls(&self) -> Option<&Arc<tls::ServerTls>> {
        self.tls.get()
    }

    /// The shared state (denylist, replay records): the DPoP replay check asks its `first_use`.
    pub fn state(&self) -> &Arc<SharedState> {
        &self.state
    }

    /// The current runtime; a check holds it until it has answered.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// A permit to decide a check now, or `None` when `server.max_concurrent_checks` are in flight (the
    /// check is then refused at once, never queued).
    pub fn admit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.admission.try_acquire().ok()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Ready: every provider can decide, and we are not draining.
    pub fn ready(&self) -> bool {
        !self.draining.load(Ordering::Relaxed) && self.runtime.load().ready()
    }
}

/// A runtime's environment on the server: the state's denylist (and its "seen once" records when
/// replicas share them), the server's metrics and HTTP clients, generated keys on disk.
fn server_env(
    state: &Arc<SharedState>,
    metrics: &Arc<Metrics>,
    upstream: &Arc<ReqwestUpstream>,
    sources: Sources,
    clock: Clock,
) -> portcullis_core::Env {
    let seen: Option<Arc<dyn crate::dpop::SharedSeen>> = if state.is_shared() {
        Some(Arc::clone(state) as Arc<dyn crate::dpop::SharedSeen>)
    } else {
        None
    };
    portcullis_core::Env {
        clock,
        sources,
        upstream: Arc::clone(upstream) as Arc<dyn crate::providers::http::Upstream>,
        key_storage: Arc::new(FileKeys),
        recorder: Arc::clone(metrics) as Arc<dyn portcullis_core::recorder::Recorder>,
        denylist: Arc::clone(state.denylist()),
        seen,
    }
}

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("gRPC reflection could not be built: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("admin server failed: {0}")]
    Admin(#[from] std::io::Error),
    #[error("gRPC listener failed: {0}")]
    GrpcListener(std::io::Error),
    #[error("HTTP forward-auth server failed: {0}")]
    Http(std::io::Error),
    #[error("an HTTP forward-auth listener was given, but server.http_mode is not set")]
    HttpModeMissing,
}

/// The bound sockets [`run`] serves on.
pub struct Listeners {
    /// gRPC: Check, health, reflection (`server.listen`).
    pub grpc: TcpListener,
    /// The admin HTTP port (`server.admin_listen`).
    pub admin: TcpListener,
    /// HTTP forward auth (`server.http_listen`), when configured; it reads requests as the app's
    /// `server.http_mode` says.
    pub http: Option<TcpListener>,
}

/// Serves until `shutdown` completes, then drains and returns.
pub async fn run(
    app: Arc<App>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    run_with_tls(app, listeners, None, shutdown).await
}

/// As [`run`], with TLS (`server.tls`) on the gRPC listener (HTTP/2 by ALPN) and on the HTTP forward-auth
/// listener (HTTP/2 or HTTP/1.1 by ALPN) when `tls` is given. The admin port stays plaintext: probes and
/// metrics, no credentials.
pub async fn run_with_tls(
    app: Arc<App>,
    listeners: Listeners,
    tls: Option<Arc<tls::ServerTls>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let Listeners { grpc, admin, http } = listeners;
    let http = match (http, &app.http) {
        (None, _) => None,
        (Some(listener), Some(settings)) => Some((listener, settings.clone())),
        (Some(_), None) => return Err(ServeError::HttpModeMissing),
    };
    let background = app.background.clone();
    let stop_servers = CancellationToken::new();
    let runtime_tasks = app
        .runtime_tasks
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    crate::io::spawn_background(&app.runtime.load(), &app.clock, &runtime_tasks);
    app.state.spawn_background(&background);

    let (health, health_service) = tonic_health::server::health_reporter();
    set_readiness(&health, ServingStatus::NotServing).await;
    health
        .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
        .await;

    // SERVING once every provider's keys are loaded.
    let readiness = {
        let app = Arc::clone(&app);
        let health = health.clone();
        tokio::spawn(async move {
            while !app.ready() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            set_readiness(&health, ServingStatus::Serving).await;
            tracing::info!("every provider is ready: health is SERVING");
        })
    };

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let grpc_router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(grpc::CheckServer::new(
            CheckService::new(Arc::clone(&app)),
            app.max_request_bytes,
        ));
    let grpc_task = match tls {
        Some(tls) => {
            let listener = tls
                .listen(grpc, &[b"h2"])
                .map_err(ServeError::GrpcListener)?;
            let _ = app.tls.set(tls);
            tokio::spawn(
                grpc_router
                    .serve_with_incoming_shutdown(listener, stop_servers.clone().cancelled_owned()),
            )
        }
        None => tokio::spawn(grpc_router.serve_with_incoming_shutdown(
            // The builder's tcp_nodelay only applies to sockets tonic binds itself: set it on ours, or
            // Nagle and delayed ACKs add ~40 ms to every answer.
            TcpIncoming::from(grpc).with_nodelay(Some(true)),
            stop_servers.clone().cancelled_owned(),
        )),
    };
    let admin_server = axum::serve(admin, admin::router(Arc::clone(&app)))
        .with_graceful_shutdown(stop_servers.clone().cancelled_owned());

    let admin_task = tokio::spawn(async move { admin_server.await });
    // HTTP/1.1 and h2c (prior knowledge) on one port, or both over TLS (ALPN); answers go out without
    // Nagle's delay.
    let http_task = match (http, app.tls.get()) {
        (None, _) => None,
        (Some((listener, settings)), Some(tls)) => {
            let listener = tls
                .listen(listener, &[b"h2", b"http/1.1"])
                .map_err(ServeError::Http)?;
            let server = axum::serve(listener, http::router(Arc::clone(&app), settings))
                .with_graceful_shutdown(stop_servers.clone().cancelled_owned());
            Some(tokio::spawn(async move { server.await }))
        }
        (Some((listener, settings)), None) => {
            use axum::serve::ListenerExt as _;
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let server = axum::serve(listener, http::router(Arc::clone(&app), settings))
                .with_graceful_shutdown(stop_servers.clone().cancelled_owned());
            Some(tokio::spawn(async move { server.await }))
        }
    };

    shutdown.await;
    tracing::info!(
        drain_seconds = app.drain.as_secs(),
        "shutting down: draining"
    );
    app.draining.store(true, Ordering::Relaxed);
    readiness.abort();
    set_readiness(&health, ServingStatus::NotServing).await;
    tokio::time::sleep(app.drain).await;

    stop_servers.cancel();
    background.cancel();
    let grpc_result = grpc_task.await;
    let admin_result = admin_task.await;
    let http_result = match http_task {
        Some(task) => task.await.unwrap_or(Ok(())),
        None => Ok(()),
    };
    grpc_result.unwrap_or(Ok(()))?;
    admin_result.unwrap_or(Ok(()))?;
    http_result.map_err(ServeError::Http)?;
    tracing::info!("stopped");
    Ok(())
}

/// Readiness is reported twice: for the whole server (`""`, what probes and Envoy ask) and by name.
async fn set_readiness(health: &tonic_health::server::HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health.set_service_status(SERVICE_NAME, status).await;
}
