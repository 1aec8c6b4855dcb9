//! The decision pipeline: the route is chosen, the route's providers authenticate, the route's policy
//! judges the identity, and the mode decides whether a denial is enforced. The gRPC service, `explain` and
//! tests all decide through [`Authorizer::decide`]; what the answer looks like is [`crate::answer`]'s.

use std::sync::Arc;

use serde::Serialize;

use crate::clock::Clock;
use crate::config::Mode;
use crate::decision::{Decision, Denial, DenyCause, DenyReason};
use crate::identity::{Identity, IdentityBuilder};
use crate::policy::{ExplainStep, Policy, Route, RouteChoice};
use crate::providers::mtls::certificate_binding_holds;
use crate::providers::{Attempt, ChainOutcome, Providers};
use crate::request::RequestView;
use crate::revocation::Denylist;

/// The providers and the compiled policy, decided over together.
pub struct Authorizer {
    providers: Providers,
    policy: Policy,
    /// The identity of a request with no credential on a route that allows anonymous access.
    anonymous: Arc<Identity>,
    /// Checked after authentication, whichever cache the identity came from.
    denylist: Arc<Denylist>,
    /// `server.max_headers`: a request with more is refused before anything reads them.
    max_headers: usize,
    /// How far ahead of ours an IdP's clock may run: the largest `leeway_seconds` of the `jwt` providers
    /// (a `sub` revocation also covers tokens whose `iat` is that much after it).
    iat_leeway: i64,
    clock: Clock,
}

/// A decision with what identifies and explains it. It borrows the route from the authorizer that made it.
#[derive(Debug, Clone)]
pub struct Verdict<'a> {
    pub decision: Decision,
    /// Unique per decision: sent upstream (`x-auth-decision-id`), in the metadata, the deny body and the log.
    pub decision_id: String,
    /// The route the request took.
    pub route: &'a Route,
    /// Filled when asked for (`explain`, `check --explain`).
    pub explanation: Option<Explanation>,
}

/// Why a decision came out as it did.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub decision: &'static str,
    pub reason: &'static str,
    pub decision_id: String,
    /// Which route matched, condition by condition.
    pub route: RouteChoice,
    /// What each provider answered, in order.
    pub providers: Vec<Attempt>,
    /// Each requirement of the route and whether the identity met it (empty without an identity).
    pub requirements: Vec<ExplainStep>,
    pub principal: Option<String>,
}

// === impl Authorizer ===

impl Authorizer {
    /// `denylist` is read after authentication (the host feeds it); a request with more than
    /// `max_headers` headers is refused before anything reads them (`too_many_headers`, fail closed);
    /// `iat_leeway` is the clock skew a `sub` revocation allows for (see [`Denylist::revoked`]).
    pub fn new(
        providers: Providers,
        policy: Policy,
        clock: Clock,
        denylist: Arc<Denylist>,
        max_headers: usize,
        iat_leeway: i64,
    ) -> Authorizer {
        Authorizer {
            providers,
            policy,
            anonymous: Arc::new(IdentityBuilder::anonymous(
                &Arc::from("anonymous"),
                "anonymous",
            )),
            denylist,
            max_headers,
            iat_leeway,
            clock,
        }
    }

    /// Decides one request; with `explain`, also says why.
    pub async fn decide(&self, request: &RequestView<'_>, explain: bool) -> Verdict<'_> {
        self.decide_on(request, None, explain).await
    }

    /// Decides one request on `route` when given (a host's choice, such as the Envoy module's per-route
    /// config: no route matching, so no near-variant path check), else on the route its `match` picks.
    pub async fn decide_on<'a>(
        &'a self,
        request: &RequestView<'_>,
        route: Option<&'a Route>,
        explain: bool,
    ) -> Verdict<'a> {
        let chosen = route.is_some();
        let route = route.unwrap_or_else(|| self.policy.route(request));
        let mut attempts = explain.then(Vec::new);
        let refused = if request.headers.len() > self.max_headers {
            // Counted, not read: the work a check does stays bounded whatever the client sends.
            Some(DenyReason::TooManyHeaders)
        } else if self.policy.repeated_header(request, route) {
            // A header the policy reads, sent twice: which line counts is the client's choice.
            Some(DenyReason::RepeatedHeader)
        } else if !chosen && self.policy.ambiguous_path(request, route) {
            // A near-variant of a path another route takes.
            Some(DenyReason::AmbiguousPath)
        } else if self
            .providers
            .unowned_authorization(request, route.provider_indices())
        {
            // A credential none of the route's providers can judge: never passed upstream unverified.
            Some(DenyReason::UnownedCredential)
        } else {
            None
        };
        if let Some(reason) = refused {
            let denial = Denial {
                cause: DenyCause::Credential(reason),
                provider: None,
                principal: None,
                message: None,
                dpop: None,
            };
            let now = self.clock.now();
            return self.verdict(Decision::Deny(denial), request, route, None, attempts, now);
        }
        let chain = self
            .providers
            .authenticate(request, route.provider_indices(), attempts.as_mut())
            .await;

        let now = self.clock.now();
        let (identity, denial) = match chain {
            // Revocation applies to every authenticated identity, fresh or from a cache.
            // Revocation, and the certificate binding of RFC 8705 (checked per request: a cached identity
            // may come back over another connection), then the route's requirements.
            ChainOutcome::Authenticated(identity) => {
                let refused = if self.denylist.revoked(&identity, now, self.iat_leeway) {
                    Some(DenyReason::Revoked)
                } else if !certificate_binding_holds(&identity.claims, request) {
                    Some(DenyReason::CertificateBindingMismatch)
                } else {
                    None
                };
                if let Some(reason) = refused {
                    let denial = Denial {
                        cause: DenyCause::Credential(reason),
                        provider: Some(Arc::clone(&identity.provider)),
                        principal: identity.subject.as_deref().map(Arc::from),
                        message: None,
                        dpop: None,
                    };
                    (None, Some(denial))
                } else {
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
            }
            ChainOutcome::Denied(denial)
                if route.allow_anonymous()
                    && denial.cause == DenyCause::Credential(DenyReason::MissingCredential) =>
            {
                (Some(Arc::clone(&self.anonymous)), None)
            }
            ChainOutcome::Denied(denial) => (None, Some(denial)),
            ChainOutcome::Unavailable(why) => {
                return self.verdict(Decision::Error(why), request, route, None, attempts, now);
            }
        };
        let decision = match (identity.clone(), denial) {
            (Some(identity), None) => Decision::Allow(identity),
            // Permissive mode lets through what the rollout needs (no credential yet, or unmet route
            // requirements), marked; a presented credential that failed is a denial in every mode, so a
            // forged or expired token never goes upstream.
            (identity, Some(denial))
                if route.mode() == Mode::Permissive && denial.permissive_may_pass() =>
            {
                Decision::Permit {
                    identity,
                    would_deny: denial,
                }
            }
            (_, Some(denial)) => Decision::Deny(denial),
            (None, None) => unreachable!("no identity means a denial"),
        };
        self.verdict(decision, request, route, identity.as_deref(), attempts, now)
    }

    fn verdict<'a>(
        &self,
        decision: Decision,
        request: &RequestView<'_>,
        route: &'a Route,
        identity: Option<&Identity>,
        attempts: Option<Vec<Attempt>>,
        now: i64,
    ) -> Verdict<'a> {
        let decision_id = decision_id();
        let explanation = attempts.map(|providers| Explanation {
            decision: decision.kind(),
            reason: decision.reason(),
            decision_id: decision_id.clone(),
            route: self.policy.explain_route(request),
            providers,
            requirements: identity
                .map(|id| route.explain(id, request, now))
                .unwrap_or_default(),
            principal: identity.and_then(|id| id.subject.clone()),
        });
        Verdict {
            decision,
            decision_id,
            route,
            explanation,
        }
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
}

/// 24 hex digits, unique per decision: a 32-bit nonce drawn once per process, then a 64-bit counter that
/// starts at a random value. No system call per request; not a secret (it is a correlation id).
fn decision_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static STATE: OnceLock<(u32, AtomicU64)> = OnceLock::new();
    let (nonce, counter) = STATE.get_or_init(|| {
        let mut seed = [0u8; 12];
        if getrandom::fill(&mut seed).is_err() {
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
