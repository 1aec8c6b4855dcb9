//! The decision pipeline: the route is chosen, the route's providers authenticate, the route's policy
//! judges the identity, the mode decides whether a denial is enforced, and the verdict is counted. The
//! gRPC service, `explain` and tests all decide through [`Authorizer::decide`].

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::{Config, SecretSource};
use crate::decision::{Decision, Denial, DenyCause, DenyReason, Explanation, Identity, Verdict};
use crate::metrics::Metrics;
use crate::policy::{Mode, Policy, Route};
use crate::providers::{BuildError, ChainOutcome, Providers};
use crate::request::RequestView;

/// Why an authorizer could not be built from a valid configuration.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizerError {
    #[error(transparent)]
    Providers(#[from] BuildError),
    #[error("{0}: {1}")]
    Policy(String, String),
}

pub struct Authorizer {
    providers: Providers,
    policy: Policy,
    /// For each route (policy order, default last): the provider indices it may use (`None`: all).
    route_providers: Vec<Option<Box<[usize]>>>,
    /// The identity of a request with no credential on a route that allows anonymous access.
    anonymous: Arc<Identity>,
    metrics: Metrics,
    clock: Clock,
}

impl Authorizer {
    pub fn from_config(
        config: &Config,
        secrets: &SecretSource,
        clock: Clock,
    ) -> Result<Authorizer, AuthorizerError> {
        let http = http_client();
        let providers = Providers::from_config(config, secrets, &http, clock.clone())?;
        let names: Vec<&str> = providers.names().collect();
        let policy = Policy::new(&config.policy, &names).map_err(|mut problems| {
            let (path, message) = problems.remove(0);
            AuthorizerError::Policy(path, message)
        })?;
        let route_providers = policy
            .routes()
            .map(|route| {
                route.providers().map(|wanted| {
                    names
                        .iter()
                        .enumerate()
                        .filter(|(_, n)| wanted.iter().any(|w| w == *n))
                        .map(|(i, _)| i)
                        .collect()
                })
            })
            .collect();
        Ok(Authorizer {
            providers,
            policy,
            route_providers,
            anonymous: Arc::new(crate::providers::anonymous(
                &Arc::from("anonymous"),
                "anonymous",
            )),
            metrics: Metrics::default(),
            clock,
        })
    }

    /// Decides one request; with `explain`, also says why.
    pub async fn decide(&self, request: &RequestView<'_>, explain: bool) -> Verdict {
        let route = self.policy.route(request);
        let allowed = self.route_providers[route.index()].as_deref();
        let mut attempts = explain.then(Vec::new);
        let chain = self
            .providers
            .authenticate(request, allowed, attempts.as_mut())
            .await;

        let now = self.clock.now();
        let (identity, denial) = match chain {
            ChainOutcome::Authenticated(identity) => {
                match route.evaluate(&identity, request, now) {
                    Ok(()) => (Some(identity), None),
                    Err(unmet) => {
                        // The log names who was refused and by which provider they came in.
                        let mut denial = Denial::policy(unmet);
                        denial.provider = Some(Arc::clone(&identity.provider));
                        denial.principal = identity.subject.as_deref().map(Arc::from);
                        (Some(identity), Some(denial))
                    }
                }
            }
            ChainOutcome::Denied(denial)
                if route.allow_anonymous()
                    && denial.cause == DenyCause::Credential(DenyReason::MissingCredential) =>
            {
                (Some(Arc::clone(&self.anonymous)), None)
            }
            ChainOutcome::Denied(denial) => (None, Some(denial)),
            ChainOutcome::Unavailable(why) => {
                let verdict = self.verdict(Decision::Error(why), route);
                return self.finish(verdict, request, route, None, attempts, now);
            }
        };
        let decision = match (identity.clone(), denial) {
            (Some(identity), None) => Decision::Allow(identity),
            (identity, Some(denial)) if route.mode() == Mode::Permissive => Decision::Permit {
                identity,
                would_deny: denial,
            },
            (_, Some(denial)) => Decision::Deny(denial),
            (None, None) => unreachable!("no identity means a denial"),
        };
        let verdict = self.verdict(decision, route);
        self.finish(verdict, request, route, identity.as_deref(), attempts, now)
    }

    fn verdict(&self, decision: Decision, route: &Route) -> Verdict {
        Verdict {
            decision,
            decision_id: decision_id(),
            route: route.index(),
            route_name: Arc::clone(route.shared_name()),
            explanation: None,
        }
    }

    fn finish(
        &self,
        mut verdict: Verdict,
        request: &RequestView<'_>,
        route: &Route,
        identity: Option<&Identity>,
        attempts: Option<Vec<crate::providers::Attempt>>,
        now: i64,
    ) -> Verdict {
        self.metrics.record(&verdict.decision);
        if let Some(providers) = attempts {
            verdict.explanation = Some(Explanation {
                decision: verdict.decision.kind(),
                reason: verdict.decision.reason(),
                decision_id: verdict.decision_id.clone(),
                route: self.policy.explain_route(request),
                providers,
                requirements: identity
                    .map(|id| route.explain(id, request, now))
                    .unwrap_or_default(),
                principal: identity.and_then(|id| id.subject.clone()),
            });
        }
        verdict
    }

    /// Starts the providers' background tasks until `cancel`.
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

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The provider indices a route may use (`None`: all), by route index.
    pub fn route_providers(&self, route: usize) -> Option<&[usize]> {
        self.route_providers.get(route).and_then(|p| p.as_deref())
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// 24 hex digits, unique per decision: a 32-bit nonce drawn once per process, then a 64-bit counter that
/// starts at a random value. No system call per request; not a secret (it is a correlation id).
fn decision_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static STATE: OnceLock<(u32, AtomicU64)> = OnceLock::new();
    let (nonce, counter) = STATE.get_or_init(|| {
        let mut seed = [0u8; 12];
        if aws_lc_rs::rand::fill(&mut seed).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            seed.copy_from_slice(&nanos.to_be_bytes()[4..]);
        }
        let nonce = u32::from_be_bytes(seed[..4].try_into().expect("4 bytes"));
        let start = u64::from_be_bytes(seed[4..].try_into().expect("8 bytes"));
        (nonce, AtomicU64::new(start))
    });
    let n = counter.fetch_add(1, Ordering::Relaxed);
    format!("{nonce:08x}{n:016x}")
}

/// The HTTP client for IdP requests: rustls with the platform's roots, a bounded connect time and few
/// redirects. Per-request timeouts are set by each caller.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}
