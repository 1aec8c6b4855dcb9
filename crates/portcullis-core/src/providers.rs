//! The provider chain and the contract every provider keeps.
//!
//! A provider looks at one request and answers exactly one [`Outcome`]:
//! - [`Outcome::NoCredential`]: nothing of its kind in the request;
//! - [`Outcome::Authenticated`]: a verified identity;
//! - [`Outcome::Rejected`]: a credential of its kind that failed, with the reason;
//! - [`Outcome::Unavailable`]: it cannot tell, because something it depends on (an IdP) is unavailable.
//!
//! Providers are tried in their declared order; every credential the request presents is judged by the
//! first provider that owns it (see [`Providers::authenticate`]). A rejected credential stops the chain
//! with a denial, whatever else the request carries. Otherwise the first authenticated answer wins; a rejected
//! credential, or a present one no provider of its place understands, is a 401 (`invalid_token`; a
//! malformed one a 400); an unavailable upstream with nothing rejected is an error answer, never an allow,
//! even when another credential authenticated; and with no credential at all, an `anonymous` provider
//! answers if there is one, else a 401 with the challenge of every provider that could have taken one.
//! Fail-closed behaviour rests on keeping "rejected" and "unavailable" apart.
//!
//! A JWS-shaped token only goes to `jwt` providers, an opaque one only to the first opaque-token provider
//! (`introspection`, `webhook`, `github`, `api_key`, `kubernetes`) of its place: several read one place
//! only with `shared_location_order: true`. One exception: an opaque-token provider that takes JWTs
//! (`accept_jwt: true`, and `kubernetes`, whose service-account tokens are JWTs) also judges a JWS-shaped
//! token whose `iss` no `jwt` provider of the route owns at that place; those `jwt` providers then decline
//! it as not their issuer's instead of rejecting it.
//!
//! The contract is this file; [`chain`] runs it over a request (`Providers::authenticate`), [`build`]
//! makes the providers from the configuration (`Providers::from_config`, what a reload keeps), and
//! [`tables`] holds what the chain looks up instead of walking every provider (a Check costs the same with
//! one issuer or thousands).

pub mod api_key;
mod build;
mod chain;
pub mod envoy_jwt;
pub mod github;
pub mod http;
pub mod introspection;
pub mod jwks;
pub mod jwt;
pub mod kubernetes;
pub mod mtls;
mod tables;
pub mod webhook;

use std::sync::Arc;

use self::jwks::KeyStore;
use self::jwt::{JwtProvider, JwtProviders};
use crate::config::CredentialLocation;
use crate::credential;
use crate::decision::{Denial, DenyReason, Unavailable};
use crate::dpop::{Dpop, ReplayCache};
use crate::identity::Identity;
use crate::request::RequestView;

pub use self::build::secret_too_short;

/// What one provider (or the chain) makes of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    NoCredential,
    Authenticated(Arc<Identity>),
    Rejected(DenyReason),
    Unavailable(Unavailable),
}

/// The closed set of provider kinds: static dispatch, no boxed future per provider per request.
enum Kind {
    /// One of [`Providers::jwt`]: the token's `iss` picks among the `jwt` providers.
    Jwt,
    /// Shared: the opaque-token providers are large beside the others, and one whose configuration a reload
    /// left as it was keeps serving (with its cache) in the new runtime.
    Opaque(Arc<Opaque>),
    Mtls(mtls::Mtls),
    EnvoyJwt(envoy_jwt::EnvoyJwt),
    Anonymous(Arc<Identity>),
}

/// The providers of opaque tokens (a JWS-shaped token never reaches them).
enum Opaque {
    Introspection(introspection::Introspection),
    Webhook(webhook::Webhook),
    Github(github::Github),
    ApiKey(Arc<api_key::ApiKeys>),
    Kubernetes(kubernetes::Kubernetes),
}

// === impl Opaque ===

impl Opaque {
    async fn authenticate(&self, token: &str, request: &RequestView<'_>) -> Outcome {
        match self {
            Opaque::Introspection(p) => p.authenticate(token).await,
            Opaque::Webhook(p) => p.authenticate(token, request).await,
            Opaque::Github(p) => p.authenticate(token).await,
            Opaque::ApiKey(p) => p.authenticate(token),
            Opaque::Kubernetes(p) => p.authenticate(token).await,
        }
    }

    /// Whether JWS-shaped tokens may come here (when no `jwt` provider owns their issuer).
    fn takes_jwts(&self) -> bool {
        match self {
            Opaque::Introspection(p) => p.accepts_jwt(),
            Opaque::Webhook(p) => p.accepts_jwt(),
            Opaque::Kubernetes(_) => true,
            Opaque::Github(_) | Opaque::ApiKey(_) => false,
        }
    }
}

/// One provider of the chain.
struct Entry {
    name: Arc<str>,
    location: CredentialLocation,
    /// `shared_location_order: true`: the user ordered the opaque providers that read this place.
    shared_location_order: bool,
    /// DPoP rules (`jwt` and `introspection`), and where a `DPoP`-scheme token is read when `location` is
    /// `Authorization: Bearer`.
    dpop: Option<(Arc<Dpop>, Option<CredentialLocation>)>,
    deny_message: Option<Arc<str>>,
    kind: Kind,
    /// What the provider was built from, to tell on reload whether it can be kept.
    fingerprint: build::Fingerprint,
}

// === impl Entry ===

impl Entry {
    /// Whether a credential of this shape is this provider's kind: a JWS-shaped token is a `jwt`
    /// provider's, anything else an opaque-token provider's. (A provider that also takes JWS-shaped tokens
    /// after the `jwt` providers declined them decides that here.)
    fn owns(&self, token: &str) -> bool {
        match self.kind {
            Kind::Jwt => credential::is_jws_shaped(token),
            Kind::Opaque(_) => !credential::is_jws_shaped(token),
            _ => false,
        }
    }
}

/// The chain's answer, with the provider that gave it.
#[derive(Debug, Clone, PartialEq)]
pub enum ChainOutcome {
    Authenticated(Arc<Identity>),
    Denied(Denial),
    Unavailable(Unavailable),
}

/// What each provider answered, for explanations.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Attempt {
    pub provider: Arc<str>,
    /// `no_credential`, `authenticated`, `skipped` or the deny / unavailability label.
    pub outcome: &'static str,
}

/// Every configured provider, built once at start.
pub struct Providers {
    entries: Vec<Entry>,
    jwt: JwtProviders,
    /// For each `jwt` provider, its entry index (for its location and name).
    jwt_entries: Vec<usize>,
    /// The DPoP proof replay cache every provider's rules share, and its capacity.
    replay: Arc<ReplayCache>,
    replay_entries: usize,
    /// The providers a reload kept from the previous runtime (unchanged, with their key sets and caches).
    kept: Vec<Arc<str>>,
    /// What the chain looks up instead of walking every provider.
    tables: tables::Tables,
}

// === impl Providers ===

impl Providers {
    /// The providers kept from the previous runtime by [`Providers::from_config`], in order.
    pub fn kept(&self) -> &[Arc<str>] {
        &self.kept
    }

    /// The API key tables read from `keys_file`, which a host's runner reloads.
    pub fn api_key_files(&self) -> impl Iterator<Item = &Arc<api_key::ApiKeys>> {
        self.entries.iter().filter_map(|entry| match &entry.kind {
            Kind::Opaque(opaque) => match &**opaque {
                Opaque::ApiKey(keys) if keys.reloads() => Some(keys),
                _ => None,
            },
            _ => None,
        })
    }

    pub fn key_stores(&self) -> impl Iterator<Item = &Arc<KeyStore>> {
        self.jwt.providers().iter().map(JwtProvider::keys)
    }

    /// Named key stores, for metrics.
    pub fn named_key_stores(&self) -> impl Iterator<Item = (&str, &Arc<KeyStore>)> {
        self.jwt.providers().iter().map(|p| (&**p.name(), p.keys()))
    }

    /// The provider names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| &*e.name)
    }

    /// True once every provider can decide.
    pub fn ready(&self) -> bool {
        self.key_stores().all(|s| s.is_loaded())
    }

    pub fn cached_tokens(&self) -> u64 {
        self.jwt.cached_tokens()
    }
    /// The `algs` of the first provider that advertises DPoP, for challenges (`None`: no provider does).
    pub fn dpop_algs(&self, index: usize) -> Option<Arc<str>> {
        let (dpop, _) = self.entries.get(index)?.dpop.as_ref()?;
        dpop.advertised().then(|| dpop.challenge(false).algs)
    }
}
