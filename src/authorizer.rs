//! The decision pipeline: providers authenticate, the outcome becomes a [`Decision`], and it is counted.
//! The gRPC service, `check --explain` and tests all decide through [`Authorizer::decide`].

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{Config, SecretSource};
use crate::decision::Decision;
use crate::metrics::Metrics;
use crate::providers::{BuildError, ChainOutcome, Providers};
use crate::request::RequestView;

pub struct Authorizer {
    providers: Providers,
    metrics: Metrics,
}

impl Authorizer {
    pub fn from_config(
        config: &Config,
        secrets: &SecretSource,
        clock: Clock,
    ) -> Result<Authorizer, BuildError> {
        let http = http_client();
        Ok(Authorizer {
            providers: Providers::from_config(config, secrets, &http, clock)?,
            metrics: Metrics::default(),
        })
    }

    /// Decides one request.
    pub async fn decide(&self, request: &RequestView<'_>) -> Decision {
        let decision = match self.providers.authenticate(request, None, None).await {
            ChainOutcome::Authenticated(identity) => Decision::Allow(identity),
            ChainOutcome::Denied(denial) => Decision::Deny(denial),
            ChainOutcome::Unavailable(why) => Decision::Error(why),
        };
        self.metrics.record(&decision);
        decision
    }

    /// Loads key sets in the background and keeps them fresh until `cancel`.
    pub fn spawn_background(&self, cancel: &CancellationToken) {
        self.providers.spawn_background(cancel);
    }

    /// True once every provider can decide.
    pub fn ready(&self) -> bool {
        self.providers.ready()
    }

    pub fn providers(&self) -> &Providers {
        &self.providers
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// The HTTP client for IdP requests: rustls with the platform's roots, no redirects to other schemes,
/// bounded connect time. Per-request timeouts are set by each caller.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::limited(3))
        .https_only(false)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

pub type SharedAuthorizer = Arc<Authorizer>;
