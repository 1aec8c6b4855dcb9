//! Serving: the gRPC Check service with health and reflection, and the admin HTTP endpoints.
//!
//! [`run`] takes bound listeners and a shutdown future, so the binary binds the configured ports and tests
//! bind `127.0.0.1:0` and run many servers at once. On shutdown, health turns NOT_SERVING and `/readyz`
//! 503 for the drain period while requests are still answered; then both servers stop accepting and finish
//! what is in flight.

mod admin;
mod check;
mod revocations;
mod translate;

pub use self::check::{CheckService, EXPLAIN_HEADER};

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::dev::DevIssuer;
use crate::metrics::Metrics;
use crate::pb::auth::authorization_server::AuthorizationServer;
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
    metrics: Metrics,
    drain: Duration,
    /// The development issuer whose discovery and JWKS the admin port serves (`serve --dev`).
    dev: Option<Arc<DevIssuer>>,
    draining: AtomicBool,
    /// The denylist and replay records shared across replicas; every runtime reads its denylist.
    state: Arc<SharedState>,
    /// One permit per check in flight (`server.max_concurrent_checks`).
    admission: tokio::sync::Semaphore,
    /// `server.max_request_bytes`: the largest Check message decoded.
    max_request_bytes: usize,
}

// === impl App ===

impl App {
    /// Everything a server needs, from its configuration and the runtime built from it.
    /// With state in memory and the revocation endpoints off; see [`App::with_state`].
    pub fn new(config: &Config, runtime: Runtime, dev: Option<Arc<DevIssuer>>) -> App {
        let state = SharedState::memory(crate::clock::Clock::system());
        App::with_state(config, runtime, dev, Arc::new(state))
    }

    /// Everything a server needs, with its shared state (built by [`SharedState::from_config`]). The
    /// runtime reads the state's denylist; a runtime swapped in later must be given it too.
    pub fn with_state(
        config: &Config,
        mut runtime: Runtime,
        dev: Option<Arc<DevIssuer>>,
        state: Arc<SharedState>,
    ) -> App {
        let metrics = Metrics::default();
        runtime.use_state(&state);
        runtime.use_metrics(&metrics);
        state.use_metrics(&metrics);
        App {
            runtime: ArcSwap::from_pointee(runtime),
            metrics,
            drain: Duration::from_secs(config.server.drain_seconds),
            dev,
            draining: AtomicBool::new(false),
            state,
            admission: tokio::sync::Semaphore::new(
                config
                    .server
                    .max_concurrent_checks
                    .min(tokio::sync::Semaphore::MAX_PERMITS),
            ),
            max_request_bytes: config.server.max_request_bytes,
        }
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

    /// Readies a runtime built after start to be swapped in: it reads the shared state and reports into
    /// this server's metrics (which outlive it).
    pub fn adopt(&self, runtime: &mut Runtime) {
        runtime.use_state(&self.state);
        runtime.use_metrics(&self.metrics);
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Ready: every provider can decide, and we are not draining.
    pub fn ready(&self) -> bool {
        !self.draining.load(Ordering::Relaxed) && self.runtime.load().ready()
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
}

/// Serves until `shutdown` completes, then drains and returns.
pub async fn run(
    app: Arc<App>,
    grpc: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let background = CancellationToken::new();
    let stop_servers = CancellationToken::new();
    app.runtime.load().spawn_background(&background);
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

    let grpc_server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            AuthorizationServer::new(check::CheckService::new(Arc::clone(&app)))
                .max_decoding_message_size(app.max_request_bytes),
        )
        .serve_with_incoming_shutdown(
            // The builder's tcp_nodelay only applies to sockets tonic binds itself: set it on ours, or
            // Nagle and delayed ACKs add ~40 ms to every answer.
            TcpIncoming::from(grpc).with_nodelay(Some(true)),
            stop_servers.clone().cancelled_owned(),
        );
    let admin_server = axum::serve(admin, admin::router(Arc::clone(&app)))
        .with_graceful_shutdown(stop_servers.clone().cancelled_owned());

    let grpc_task = tokio::spawn(grpc_server);
    let admin_task = tokio::spawn(async move { admin_server.await });

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
    grpc_result.unwrap_or(Ok(()))?;
    admin_result.unwrap_or(Ok(()))?;
    tracing::info!("stopped");
    Ok(())
}

/// Readiness is reported twice: for the whole server (`""`, what probes and Envoy ask) and by name.
async fn set_readiness(health: &tonic_health::server::HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health.set_service_status(SERVICE_NAME, status).await;
}
