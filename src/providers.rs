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

pub mod api_key;
pub mod envoy_jwt;
pub mod github;
pub mod http;
pub mod introspection;
pub mod jwks;
pub mod jwt;
pub mod kubernetes;
pub mod mtls;
pub mod webhook;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use self::jwks::{AlgSet, KeySet, KeyStore};
use self::jwt::{JwtProvider, JwtProviders};
use crate::clock::Clock;
use crate::config::{
    BodyStyle, Config, CredentialLocation, Problem, ProviderConfig, ProviderKind, SecretSource,
};
use crate::credential::{self, Found};
use crate::decision::{Denial, DenyCause, DenyReason, DpopChallenge, Unavailable};
use crate::dpop::{Dpop, ReplayCache, Scheme};
use crate::identity::{Identity, IdentityBuilder};
use crate::request::RequestView;

/// What one provider (or the chain) makes of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    NoCredential,
    Authenticated(Arc<Identity>),
    Rejected(DenyReason),
    Unavailable(Unavailable),
}

/// Why the providers could not be built from a valid configuration.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("providers[{index}].{field}: {source}")]
    Secret {
        field: &'static str,
        index: usize,
        #[source]
        source: crate::config::secret::SecretError,
    },
    #[error("providers[{index}].jwks_file: cannot read `{path}`: {source}")]
    JwksFile {
        index: usize,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("providers[{index}]: {source}")]
    Keys {
        index: usize,
        #[source]
        source: jwks::JwksError,
    },
    #[error("providers[{index}].keys_file: {source}")]
    KeysFile {
        index: usize,
        #[source]
        source: api_key::KeysFileError,
    },
    #[error("providers[{index}].tls.ca_file: {source}")]
    Tls {
        index: usize,
        #[source]
        source: http::TlsError,
    },
    #[error("providers[{index}]: invalid URL: {source}")]
    Url {
        index: usize,
        #[source]
        source: url::ParseError,
    },
    #[error("providers[{index}].{field}: is {bytes} bytes; at least {needed} are required")]
    ShortSecret {
        index: usize,
        field: &'static str,
        bytes: usize,
        needed: usize,
    },
}

// === impl BuildError ===

impl BuildError {
    /// The problem, at the path of the field it is about (`providers[2].keys_file`).
    pub fn into_problem(self) -> Problem {
        let (path, message) = match &self {
            BuildError::Secret {
                field,
                index,
                source,
            } => (format!("providers[{index}].{field}"), source.to_string()),
            BuildError::JwksFile {
                index,
                path,
                source,
            } => (
                format!("providers[{index}].jwks_file"),
                format!("cannot read `{}`: {source}", path.display()),
            ),
            BuildError::Keys { index, source } => {
                (format!("providers[{index}]"), source.to_string())
            }
            BuildError::KeysFile { index, source } => {
                (format!("providers[{index}].keys_file"), source.to_string())
            }
            BuildError::Tls { index, source } => (
                format!("providers[{index}].tls.ca_file"),
                source.to_string(),
            ),
            BuildError::Url { index, source } => (
                format!("providers[{index}]"),
                format!("invalid URL: {source}"),
            ),
            BuildError::ShortSecret {
                index,
                field,
                bytes,
                needed,
            } => (
                format!("providers[{index}].{field}"),
                format!("is {bytes} bytes; at least {needed} are required"),
            ),
        };
        Problem { path, message }
    }
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

    /// The upstream (with its answer cache) this provider calls, if any.
    fn upstream(&self) -> Option<&http::CachedUpstream> {
        match self {
            Opaque::Introspection(p) => Some(p.upstream()),
            Opaque::Webhook(p) => Some(p.upstream()),
            Opaque::Github(p) => Some(p.upstream()),
            Opaque::Kubernetes(p) => Some(p.upstream()),
            Opaque::ApiKey(_) => None,
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

/// A `jwt` provider's refusal that only says the token is not its issuer's.
fn declined_as_not_its_issuer(reason: DenyReason) -> bool {
    matches!(
        reason,
        DenyReason::UntrustedIssuer | DenyReason::MissingIssuer
    )
}

/// A credential of a place that no provider has taken yet: rejected, or `soft`ly not understood (not of a
/// provider's kind, or a JWT not of its issuers), which a real rejection of the place outranks.
struct Pending<'a> {
    place: &'a CredentialLocation,
    index: usize,
    reason: DenyReason,
    soft: bool,
}

impl<'a> Pending<'a> {
    /// Records a "not mine" for `place` unless the place already has something pending.
    fn soft(
        pending: &mut Vec<Pending<'a>>,
        place: &'a CredentialLocation,
        index: usize,
        reason: DenyReason,
    ) {
        if !pending.iter().any(|p| p.place == place) {
            pending.push(Pending {
                place,
                index,
                reason,
                soft: true,
            });
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
    fingerprint: Fingerprint,
}

/// Everything a provider is built from: its configuration section, the secrets and files it read at build
/// time, and for a webhook the credential places it forwards. Equal fingerprints mean the provider would
/// be built the same, so a reload keeps the running one with its key set and cache.
#[derive(PartialEq)]
struct Fingerprint {
    config: ProviderConfig,
    /// SHA-256 over the resolved secrets and the files read at build time (`jwks_file`, `keys_file`,
    /// `tls.ca_file`): a rotated `{file:}` secret makes the provider new.
    inputs: [u8; 32],
    /// A webhook's view of the other providers: where credentials are read.
    places: Vec<CredentialLocation>,
}

// === impl Fingerprint ===

impl Fingerprint {
    fn of(
        index: usize,
        provider: &ProviderConfig,
        config: &Config,
        secrets: &SecretSource,
    ) -> Result<Fingerprint, BuildError> {
        use sha2::{Digest, Sha256};
        let mut inputs = Sha256::new();
        for (field, secret) in provider.kind.secrets() {
            // A bearer token read from a file is read again at every use: not a build input.
            let read_live = matches!(field, "token" | "jwks.token")
                && matches!(secret, crate::config::SecretRef::File(_));
            if read_live {
                continue;
            }
            let value = secret
                .resolve(secrets)
                .map_err(|source| BuildError::Secret {
                    field,
                    index,
                    source,
                })?;
            inputs.update(field.as_bytes());
            inputs.update((value.expose().len() as u64).to_be_bytes());
            inputs.update(value.expose());
        }
        for path in provider.kind.build_files() {
            inputs.update(path.as_os_str().as_encoded_bytes());
            match std::fs::read(path) {
                Ok(body) => {
                    inputs.update((body.len() as u64).to_be_bytes());
                    inputs.update(&body);
                }
                // The build reports it; an unreadable file is never equal to a readable one.
                Err(_) => inputs.update(u64::MAX.to_be_bytes()),
            }
        }
        let places = match provider.kind {
            ProviderKind::Webhook(_) => webhook_places(config).into_iter().cloned().collect(),
            _ => Vec::new(),
        };
        Ok(Fingerprint {
            config: provider.clone(),
            inputs: inputs.finalize().into(),
            places,
        })
    }
}

/// The places a webhook forwards: where every provider taking a credential reads it.
fn webhook_places(config: &Config) -> Vec<&CredentialLocation> {
    config
        .providers
        .iter()
        .filter(|p| p.kind.takes_credential())
        .map(|p| &p.credential)
        .collect()
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
}

// === impl Providers ===

impl Providers {
    /// Builds the providers; resolves secrets from `secrets`. Nothing is fetched yet: see
    /// [`Providers::spawn_background`].
    ///
    /// On reload, `previous` is the running runtime's providers: a provider whose [`Fingerprint`] is
    /// unchanged is kept (a `jwt` provider's key set, an opaque provider with its cache), so a reload
    /// costs no key set fetch and no cold cache for it. The verified-token cache is kept when every `jwt`
    /// provider is; the DPoP replay cache when its capacity is the same, so a proof seen before a
    /// reload is still a replay after it.
    pub fn from_config(
        config: &Config,
        secrets: &SecretSource,
        clock: Clock,
        previous: Option<&Providers>,
    ) -> Result<Providers, BuildError> {
        let http = &http::client();
        let key_http = &http::key_client();
        let mut entries = Vec::new();
        let mut jwt = Vec::new();
        let mut jwt_entries = Vec::new();
        let mut cache_entries = 0;
        // One replay cache for every provider: a proof's digest includes its key's thumbprint.
        let replay_entries = config
            .providers
            .iter()
            .filter_map(|p| p.kind.dpop())
            .map(|d| d.replay_cache_entries)
            .max()
            .unwrap_or_else(|| crate::config::dpop::DpopConfig::default().replay_cache_entries);
        // Kept on reload; of another size, it takes over every proof the old one remembers, so a proof
        // seen before a reload is a replay after it whatever changed.
        let replay = match previous {
            Some(p) if p.replay_entries == replay_entries => Arc::clone(&p.replay),
            Some(p) => Arc::new(ReplayCache::replacing(
                replay_entries,
                clock.clone(),
                &p.replay,
            )),
            None => Arc::new(ReplayCache::new(replay_entries, clock.clone())),
        };
        let mut kept = Vec::new();
        for (index, provider) in config.providers.iter().enumerate() {
            let name: Arc<str> = Arc::from(provider.name.as_str());
            let fingerprint = Fingerprint::of(index, provider, config, secrets)?;
            let unchanged = previous.and_then(|p| {
                p.entries
                    .iter()
                    .find(|e| e.name == name && e.fingerprint == fingerprint)
                    .map(|e| (p, e))
            });
            if unchanged.is_some() {
                kept.push(Arc::clone(&name));
            }
            let dpop = match &provider.kind {
                ProviderKind::Jwt(_)
                | ProviderKind::Introspection(_)
                | ProviderKind::EnvoyJwt(_) => {
                    // The rules this provider had before a reload, for the proofs issued under them.
                    let before = previous
                        .and_then(|p| p.entries.iter().find(|e| e.name == name))
                        .and_then(|e| e.dpop.as_ref())
                        .map(|(dpop, _)| Arc::clone(dpop));
                    Some(dpop_rules(
                        index,
                        provider,
                        secrets,
                        &replay,
                        &clock,
                        before.as_deref(),
                    )?)
                }
                _ => None,
            };
            let url_err = |source| BuildError::Url { index, source };
            let tls_client = |tls| {
                http::client_for(http, tls, http::Purpose::Calls)
                    .map_err(|source| BuildError::Tls { index, source })
            };
            let key_tls_client = |tls| {
                http::client_for(key_http, tls, http::Purpose::Keys)
                    .map_err(|source| BuildError::Tls { index, source })
            };
            let running_opaque = unchanged.and_then(|(_, e)| match &e.kind {
                Kind::Opaque(opaque) => Some(Arc::clone(opaque)),
                _ => None,
            });
            let kind = match (&provider.kind, running_opaque) {
                (_, Some(opaque)) => Kind::Opaque(opaque),
                (ProviderKind::Jwt(c), None) => {
                    let running = unchanged
                        .and_then(|(p, _)| p.jwt.providers().iter().find(|j| *j.name() == name));
                    let store = match running {
                        Some(running) => Arc::clone(running.keys()),
                        None => Arc::new(
                            jwt_key_store(index, &name, c, secrets, &key_tls_client(&c.tls)?)?
                                .with_clock(clock.clone()),
                        ),
                    };
                    cache_entries += c.cache.max_entries;
                    jwt.push(JwtProvider::new(provider, c, store));
                    jwt_entries.push(index);
                    Kind::Jwt
                }
                (ProviderKind::Introspection(c), None) => {
                    let secret =
                        c.client_secret
                            .resolve(secrets)
                            .map_err(|source| BuildError::Secret {
                                field: "client_secret",
                                index,
                                source,
                            })?;
                    let provider = introspection::Introspection::new(
                        provider,
                        c,
                        secret,
                        tls_client(&c.tls)?,
                        clock.clone(),
                    )
                    .map_err(url_err)?;
                    Kind::Opaque(Arc::new(Opaque::Introspection(provider)))
                }
                (ProviderKind::Webhook(c), None) => {
                    let places = webhook_places(config);
                    let provider = webhook::Webhook::new(
                        provider,
                        c,
                        &places,
                        tls_client(&c.tls)?,
                        clock.clone(),
                    )
                    .map_err(url_err)?;
                    Kind::Opaque(Arc::new(Opaque::Webhook(provider)))
                }
                (ProviderKind::Github(c), None) => {
                    let provider = github::Github::new(provider, c, http.clone(), clock.clone());
                    Kind::Opaque(Arc::new(Opaque::Github(provider)))
                }
                (ProviderKind::ApiKey(c), None) => {
                    let keys =
                        api_key::ApiKeys::new(Arc::clone(&name), c, &provider.claims_mapping)
                            .map_err(|source| BuildError::KeysFile { index, source })?;
                    Kind::Opaque(Arc::new(Opaque::ApiKey(Arc::new(keys))))
                }
                (ProviderKind::Kubernetes(c), None) => {
                    let bearer = http::BearerToken::new(&c.token, secrets).map_err(|source| {
                        BuildError::Secret {
                            field: "token",
                            index,
                            source,
                        }
                    })?;
                    let provider = kubernetes::Kubernetes::new(
                        provider,
                        c,
                        bearer,
                        tls_client(&c.tls)?,
                        clock.clone(),
                    )
                    .map_err(url_err)?;
                    Kind::Opaque(Arc::new(Opaque::Kubernetes(provider)))
                }
                (ProviderKind::Mtls(c), None) => Kind::Mtls(mtls::Mtls::new(provider, c)),
                (ProviderKind::EnvoyJwt(c), None) => {
                    Kind::EnvoyJwt(envoy_jwt::EnvoyJwt::new(provider, c))
                }
                (ProviderKind::Anonymous(c), None) => {
                    Kind::Anonymous(Arc::new(IdentityBuilder::anonymous(&name, &c.principal)))
                }
            };
            entries.push(Entry {
                name,
                location: provider.credential.clone(),
                shared_location_order: provider.shared_location_order,
                dpop,
                deny_message: deny_message(provider, config.answers.body),
                kind,
                fingerprint,
            });
        }
        let mut jwt = JwtProviders::new(
            jwt,
            cache_entries,
            config.server.max_concurrent_verifications,
            clock,
        );
        if let Some(previous) = previous {
            jwt = jwt.keeping_limit_of(&previous.jwt);
        }
        // A cached token names its provider by index: keep the cache only when the `jwt` providers are the
        // same ones, unchanged, in the same order.
        let same_jwt_providers = |p: &Providers| {
            p.jwt_entries.len() == jwt_entries.len()
                && jwt_entries.iter().zip(&p.jwt_entries).all(|(&new, &old)| {
                    entries[new].name == p.entries[old].name && kept.contains(&entries[new].name)
                })
        };
        if let Some(previous) = previous.filter(|p| same_jwt_providers(p)) {
            jwt = jwt.keeping_cache_of(&previous.jwt);
        }
        Ok(Providers {
            entries,
            jwt,
            jwt_entries,
            replay,
            replay_entries,
            kept,
        })
    }

    /// The providers kept from the previous runtime by [`Providers::from_config`], in order.
    pub fn kept(&self) -> &[Arc<str>] {
        &self.kept
    }

    /// Keeps DPoP proof digests in `store`, shared by every replica, instead of this process.
    pub fn use_shared_replay(&self, store: Arc<dyn crate::dpop::SharedSeen>) {
        self.replay.use_shared(store);
    }

    /// Starts the background tasks (key set refreshers, API key file reloaders) until `cancel`.
    pub fn spawn_background(&self, cancel: &CancellationToken) {
        for store in self.key_stores() {
            tokio::spawn(Arc::clone(store).run_refresher(cancel.child_token()));
        }
        for entry in &self.entries {
            if let Kind::Opaque(opaque) = &entry.kind {
                if let Opaque::ApiKey(keys) = &**opaque {
                    tokio::spawn(Arc::clone(keys).run_reloader(cancel.child_token()));
                }
            }
        }
    }

    /// Reports the caches' and upstream calls' metrics into `metrics`.
    pub fn use_metrics(&self, metrics: &crate::metrics::Metrics) {
        self.jwt.use_metrics(metrics);
        for store in self.key_stores() {
            store.use_metrics(metrics);
        }
        for entry in &self.entries {
            if let Kind::Opaque(opaque) = &entry.kind {
                if let Some(upstream) = opaque.upstream() {
                    upstream.use_metrics(metrics);
                }
            }
        }
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

    /// Runs the chain over the providers in `allowed` (indices in declared order; all when `None`).
    /// `attempts`, when given, receives what each provider answered.
    ///
    /// Every credential the request presents at a place some provider reads is judged, by the first
    /// provider that owns it ([`Entry::owns`]): a JWS-shaped token by the `jwt` providers of its place, an
    /// opaque one by the first opaque-token provider of its place (the next one of the same place only when
    /// the config says `shared_location_order: true` and the earlier one rejected it). A credential that
    /// is rejected, or that no provider of its place understands, denies the request even when another
    /// credential authenticates (a forged token is never passed on beside a valid API key); one that cannot
    /// be judged (an upstream is down) makes the answer an error, never an allow.
    pub async fn authenticate(
        &self,
        request: &RequestView<'_>,
        allowed: Option<&[usize]>,
        mut attempts: Option<&mut Vec<Attempt>>,
    ) -> ChainOutcome {
        let mut winner: Option<Arc<Identity>> = None;
        // Rejected or not understood, per place, until a later owner of that place (if allowed) takes it.
        let mut pending: Vec<Pending<'_>> = Vec::new();
        // Places whose JWT the `jwt` providers declined as not their issuer's while a provider taking JWTs
        // reads the place too (`accept_jwt`, `kubernetes`): that provider judges it.
        let mut declined: Vec<&CredentialLocation> = Vec::new();
        let mut unavailable: Option<Unavailable> = None;
        let mut anonymous: Option<usize> = None;
        // Places whose credential has had its owner's answer.
        let mut owned: Vec<&CredentialLocation> = Vec::new();
        // The first token checked by a provider with DPoP rules: which provider, and how it came.
        let mut dpop_rejection: Option<(usize, Scheme)> = None;
        for (i, entry) in self.entries.iter().enumerate() {
            if allowed.is_some_and(|a| !a.contains(&i)) {
                continue;
            }
            let place = &entry.location;
            let outcome = match &entry.kind {
                Kind::Anonymous(_) => {
                    anonymous.get_or_insert(i);
                    continue;
                }
                Kind::Jwt | Kind::Opaque(_)
                    if owned.contains(&place)
                        || (matches!(entry.kind, Kind::Jwt) && declined.contains(&place)) =>
                {
                    // The credential of this place already had its owner's answer.
                    record(&mut attempts, entry, "skipped");
                    continue;
                }
                Kind::Jwt | Kind::Opaque(_) => match extract(request, entry) {
                    (Found::None, _) => Outcome::NoCredential,
                    (Found::Malformed(reason), _) => Outcome::Rejected(reason),
                    (Found::One(token), _) if !self.owns(entry, &token, allowed) => {
                        // Present, but not of this provider's kind: a denial unless a later provider of
                        // the same place owns it.
                        let reason = match entry.kind {
                            Kind::Jwt => DenyReason::NotAJwt,
                            _ => DenyReason::UnsupportedCredential,
                        };
                        Pending::soft(&mut pending, place, i, reason);
                        record(&mut attempts, entry, "not_mine");
                        continue;
                    }
                    (Found::One(token), scheme) => match &entry.kind {
                        Kind::Jwt => {
                            // Every jwt provider of this place is served here: the token's `iss` picks.
                            let accept = |k: usize| {
                                let e = self.jwt_entries[k];
                                allowed.is_none_or(|a| a.contains(&e))
                                    && self.entries[e].location == *place
                            };
                            let outcome = self.jwt.authenticate(&token, accept).await;
                            // The rules of the provider that took the token (its `iss` chose it).
                            let by = match &outcome {
                                Outcome::Authenticated(id) => self
                                    .entries
                                    .iter()
                                    .position(|e| e.name == id.provider)
                                    .unwrap_or(i),
                                _ => i,
                            };
                            let outcome =
                                self.dpop_check(by, outcome, request, &token, scheme).await;
                            dpop_rejection = dpop_rejection.or(Some((by, scheme)));
                            outcome
                        }
                        Kind::Opaque(provider) => {
                            // Boxed: an upstream call's future is large, and unboxed it would size the
                            // future of every Check, which is moved several times per request.
                            let outcome = Box::pin(provider.authenticate(&token, request)).await;
                            let outcome =
                                self.dpop_check(i, outcome, request, &token, scheme).await;
                            dpop_rejection = dpop_rejection.or(Some((i, scheme)));
                            outcome
                        }
                        _ => unreachable!("matched above"),
                    },
                },
                Kind::Mtls(p) => p.authenticate(request),
                Kind::EnvoyJwt(p) => {
                    // `jwt_authn` verified the signature; the key binding (RFC 9449 §7.2) is ours, with
                    // the token as the request carries it (empty when `jwt_authn` did not forward it: a
                    // bound token's proof then cannot match its `ath`, and it is refused).
                    let outcome = p.authenticate(request);
                    let (found, scheme) = extract(request, entry);
                    let (token, scheme) = match &found {
                        Found::One(token) => (token.as_ref(), scheme),
                        _ => ("", Scheme::Bearer),
                    };
                    let outcome = self.dpop_check(i, outcome, request, token, scheme).await;
                    dpop_rejection = dpop_rejection.or(Some((i, scheme)));
                    outcome
                }
            };
            match outcome {
                Outcome::Authenticated(identity) => {
                    record(&mut attempts, entry, "authenticated");
                    owned.push(place);
                    pending.retain(|p| p.place != place);
                    winner.get_or_insert(identity);
                }
                Outcome::Rejected(reason)
                    if matches!(entry.kind, Kind::Jwt)
                        && declined_as_not_its_issuer(reason)
                        && self.jwts_fall_through(place, allowed) =>
                {
                    // Not an issuer of ours: the provider taking JWTs at this place judges it, and this
                    // refusal is reported only if nothing better comes.
                    record(&mut attempts, entry, reason.as_str());
                    declined.push(place);
                    Pending::soft(&mut pending, place, i, reason);
                }
                Outcome::Rejected(reason) => {
                    record(&mut attempts, entry, reason.as_str());
                    let passes_on = matches!(entry.kind, Kind::Opaque(_))
                        && reason != DenyReason::MultipleCredentials
                        && self.later_shared_owner(i, allowed);
                    if !passes_on {
                        // The place's first rejection, when an earlier provider of it passed it on.
                        let first = pending
                            .iter()
                            .find(|p| p.place == place && !p.soft)
                            .map_or((i, reason), |p| (p.index, p.reason));
                        return self.denied(first.0, first.1, dpop_rejection);
                    }
                    // The earliest rejection of this place stands; a "not mine" before it does not.
                    if !pending.iter().any(|p| p.place == place && !p.soft) {
                        pending.retain(|p| p.place != place);
                        pending.push(Pending {
                            place,
                            index: i,
                            reason,
                            soft: false,
                        });
                    }
                }
                Outcome::Unavailable(why) => {
                    record(&mut attempts, entry, why.as_str());
                    owned.push(place);
                    pending.retain(|p| p.place != place);
                    unavailable.get_or_insert(why);
                }
                Outcome::NoCredential => record(&mut attempts, entry, "no_credential"),
            }
        }
        if let Some(p) = pending.first() {
            return self.denied(p.index, p.reason, dpop_rejection);
        }
        if let Some(why) = unavailable {
            return ChainOutcome::Unavailable(why);
        }
        if let Some(identity) = winner {
            return ChainOutcome::Authenticated(identity);
        }
        if let Some(i) = anonymous {
            let entry = &self.entries[i];
            record(&mut attempts, entry, "authenticated");
            if let Kind::Anonymous(identity) = &entry.kind {
                return ChainOutcome::Authenticated(Arc::clone(identity));
            }
        }
        ChainOutcome::Denied(Denial {
            cause: DenyCause::Credential(DenyReason::MissingCredential),
            provider: None,
            principal: None,
            message: self.deny_messages(allowed),
            dpop: None,
        })
    }

    /// Whether a later allowed opaque provider reads the same place and the config ordered them
    /// (`shared_location_order: true`), so a credential one rejects goes on to the next.
    fn later_shared_owner(&self, i: usize, allowed: Option<&[usize]>) -> bool {
        let entry = &self.entries[i];
        entry.shared_location_order
            && self.entries[i + 1..].iter().enumerate().any(|(k, later)| {
                allowed.is_none_or(|a| a.contains(&(i + 1 + k)))
                    && matches!(later.kind, Kind::Opaque(_))
                    && later.shared_location_order
                    && later.location == entry.location
            })
    }

    fn denied(
        &self,
        i: usize,
        reason: DenyReason,
        dpop_checked: Option<(usize, Scheme)>,
    ) -> ChainOutcome {
        let entry = &self.entries[i];
        ChainOutcome::Denied(Denial {
            cause: DenyCause::Credential(reason),
            provider: Some(Arc::clone(&entry.name)),
            principal: None,
            message: entry.deny_message.clone(),
            dpop: self.dpop_challenge(dpop_checked, reason),
        })
    }

    /// Whether `entry` judges this token ([`Entry::owns`]), or, for an opaque-token provider that takes
    /// JWTs, whether it is a JWT no `jwt` provider of the route owns at this place.
    fn owns(&self, entry: &Entry, token: &str, allowed: Option<&[usize]>) -> bool {
        match &entry.kind {
            Kind::Opaque(p) if p.takes_jwts() && credential::is_jws_shaped(token) => {
                !self.jwt_owns(token, &entry.location, allowed)
            }
            _ => entry.owns(token),
        }
    }

    /// Whether a `jwt` provider of the route reading `location` owns this token's issuer (then the token is
    /// that provider's alone).
    fn jwt_owns(
        &self,
        token: &str,
        location: &CredentialLocation,
        allowed: Option<&[usize]>,
    ) -> bool {
        self.jwt.owns(token, |k| {
            let e = self.jwt_entries[k];
            allowed.is_none_or(|a| a.contains(&e)) && self.entries[e].location == *location
        })
    }

    /// Whether the request carries an `Authorization` credential that no provider `allowed` on the route
    /// reads (no provider reads that header, or none with its scheme). Passed on, it would reach the
    /// upstream unverified, where an upstream trusting "the gateway checked it" would read it: it is
    /// refused instead, whatever else the request carries.
    pub fn unowned_authorization(
        &self,
        request: &RequestView<'_>,
        allowed: Option<&[usize]>,
    ) -> bool {
        let Some(value) = request.headers.get("authorization") else {
            return false;
        };
        let scheme = value
            .trim_start_matches([' ', '\t'])
            .split([' ', '\t'])
            .next()
            .unwrap_or("");
        let reads = |location: &CredentialLocation| match location {
            CredentialLocation::Header {
                name,
                scheme: wanted,
            } => {
                name == "authorization"
                    && wanted
                        .as_deref()
                        .is_none_or(|wanted| wanted.eq_ignore_ascii_case(scheme))
            }
            _ => false,
        };
        !self.entries.iter().enumerate().any(|(i, entry)| {
            allowed.is_none_or(|a| a.contains(&i))
                && !matches!(entry.kind, Kind::Anonymous(_) | Kind::Mtls(_))
                && (reads(&entry.location)
                    || entry
                        .dpop
                        .as_ref()
                        .and_then(|(_, dpop_place)| dpop_place.as_ref())
                        .is_some_and(reads))
        })
    }

    /// Whether a provider of the route reading `location` takes the JWTs the `jwt` providers decline.
    fn jwts_fall_through(&self, location: &CredentialLocation, allowed: Option<&[usize]>) -> bool {
        self.entries.iter().enumerate().any(|(i, e)| {
            allowed.is_none_or(|a| a.contains(&i))
                && e.location == *location
                && matches!(&e.kind, Kind::Opaque(p) if p.takes_jwts())
        })
    }

    /// Applies entry `index`'s DPoP rules to what its provider answered for `token`: an authenticated
    /// token (fresh or cached) only stands if it passes them.
    async fn dpop_check(
        &self,
        index: usize,
        outcome: Outcome,
        request: &RequestView<'_>,
        token: &str,
        scheme: Scheme,
    ) -> Outcome {
        let Outcome::Authenticated(identity) = outcome else {
            return outcome;
        };
        let Some((dpop, _)) = &self.entries[index].dpop else {
            return Outcome::Authenticated(identity);
        };
        // Boxed, like the opaque providers' calls: only DPoP routes pay for its (Redis) future.
        match Box::pin(dpop.check(request, token, scheme, &identity.claims)).await {
            Ok(()) => Outcome::Authenticated(identity),
            Err(crate::dpop::Refusal::Rejected(reason)) => Outcome::Rejected(reason),
            Err(crate::dpop::Refusal::Unavailable(why)) => Outcome::Unavailable(why),
        }
    }

    /// The DPoP challenge of a credential denial: when the token came with the `DPoP` scheme or failed a
    /// DPoP rule.
    fn dpop_challenge(
        &self,
        checked: Option<(usize, Scheme)>,
        reason: DenyReason,
    ) -> Option<DpopChallenge> {
        let (index, scheme) = checked?;
        let (dpop, _) = self.entries[index].dpop.as_ref()?;
        let about_dpop = reason.as_str().starts_with("dpop_");
        (scheme == Scheme::Dpop || about_dpop)
            .then(|| dpop.challenge(reason == DenyReason::DpopNonceRequired))
    }

    /// The `algs` of the first provider that advertises DPoP, for challenges (`None`: no provider does).
    pub fn dpop_algs(&self, index: usize) -> Option<Arc<str>> {
        let (dpop, _) = self.entries.get(index)?.dpop.as_ref()?;
        dpop.advertised().then(|| dpop.challenge(false).algs)
    }

    /// The deny messages of the providers that could have taken a credential, joined.
    fn deny_messages(&self, allowed: Option<&[usize]>) -> Option<Arc<str>> {
        let messages: Vec<&str> = self
            .entries
            .iter()
            .enumerate()
            .filter(|(i, _)| allowed.is_none_or(|a| a.contains(i)))
            .filter_map(|(_, e)| e.deny_message.as_deref())
            .collect();
        (!messages.is_empty()).then(|| Arc::from(messages.join("; ")))
    }
}

/// The provider's `deny_message`; with llama-stack answers, else what llama-stack says for its kind.
fn deny_message(provider: &ProviderConfig, style: BodyStyle) -> Option<Arc<str>> {
    match (&provider.deny_message, style) {
        (Some(message), _) => Some(Arc::from(message.as_str())),
        (None, BodyStyle::LlamaStack) => Some(Arc::from(provider.kind.llama_stack_message())),
        (None, BodyStyle::Portcullis) => None,
    }
}

/// The credential at the entry's location; with DPoP rules and `Authorization: Bearer`, also a token
/// sent as `Authorization: DPoP <token>`.
fn extract<'a>(request: &RequestView<'a>, entry: &Entry) -> (Found<'a>, Scheme) {
    match (credential::extract(request, &entry.location), &entry.dpop) {
        (Found::None, Some((_, Some(dpop_location)))) => {
            (credential::extract(request, dpop_location), Scheme::Dpop)
        }
        (found, _) => (found, Scheme::Bearer),
    }
}

/// `dpop.nonce_secret`'s documented minimum length.
const MIN_NONCE_SECRET_BYTES: usize = 32;

/// Why a resolved secret is too short for what it keys, if it is: a `jwt` provider's `shared_secret`
/// against every HS algorithm it lists (RFC 7518 §3.2), `dpop.nonce_secret` against 32 bytes. The build
/// refuses the same secrets; `validate-config` reports them with this.
pub fn secret_too_short(
    provider: &crate::config::ProviderConfig,
    field: &str,
    secret: &[u8],
) -> Option<String> {
    match (field, &provider.kind) {
        ("shared_secret", crate::config::ProviderKind::Jwt(jwt)) => {
            match KeySet::shared_secret(secret, AlgSet::from_config(&jwt.algorithms)) {
                Err(jwks::JwksError::ShortSecret {
                    bytes,
                    algorithm,
                    needed,
                }) => Some(format!(
                    "is {bytes} bytes; {algorithm:?} needs at least {needed} (RFC 7518 §3.2)"
                )),
                _ => None,
            }
        }
        ("dpop.nonce_secret", _) if secret.len() < MIN_NONCE_SECRET_BYTES => Some(format!(
            "is {} bytes; at least {MIN_NONCE_SECRET_BYTES} are required",
            secret.len()
        )),
        _ => None,
    }
}

/// A `jwt`, `introspection` or `envoy_jwt` provider's DPoP rules; without a `dpop` block, the defaults
/// (`optional`: a bound token needs its proof, an unbound one none).
fn dpop_rules(
    index: usize,
    provider: &crate::config::ProviderConfig,
    secrets: &SecretSource,
    replay: &Arc<ReplayCache>,
    clock: &Clock,
    before: Option<&Dpop>,
) -> Result<(Arc<Dpop>, Option<CredentialLocation>), BuildError> {
    let configured = provider.kind.dpop();
    let config = configured.cloned().unwrap_or_default();
    let secret = match (&config.nonce_secret, config.nonce) {
        (Some(secret), true) => {
            Some(
                secret
                    .resolve(secrets)
                    .map_err(|source| BuildError::Secret {
                        field: "dpop.nonce_secret",
                        index,
                        source,
                    })?,
            )
        }
        _ => None,
    };
    // The nonce HMAC key: a short one could be guessed, and every replica's nonces with it.
    if let Some(secret) = &secret {
        if secret.expose().len() < MIN_NONCE_SECRET_BYTES {
            return Err(BuildError::ShortSecret {
                index,
                field: "dpop.nonce_secret",
                bytes: secret.expose().len(),
                needed: MIN_NONCE_SECRET_BYTES,
            });
        }
    }
    let mut dpop = Dpop::new(
        &config,
        secret.as_ref(),
        Arc::clone(replay),
        clock.clone(),
        configured.is_some(),
    );
    if let Some(before) = before {
        dpop = dpop.after(before);
    }
    let dpop_location = match &provider.credential {
        CredentialLocation::Header {
            name,
            scheme: Some(scheme),
        } if name == "authorization" && scheme.eq_ignore_ascii_case("bearer") => {
            Some(CredentialLocation::Header {
                name: name.clone(),
                scheme: Some("DPoP".to_owned()),
            })
        }
        _ => None,
    };
    Ok((Arc::new(dpop), dpop_location))
}

fn record(attempts: &mut Option<&mut Vec<Attempt>>, entry: &Entry, outcome: &'static str) {
    if let Some(attempts) = attempts {
        attempts.push(Attempt {
            provider: Arc::clone(&entry.name),
            outcome,
        });
    }
}

fn jwt_key_store(
    index: usize,
    name: &Arc<str>,
    c: &crate::config::JwtProviderConfig,
    secrets: &SecretSource,
    http: &reqwest::Client,
) -> Result<KeyStore, BuildError> {
    let allowed = AlgSet::from_config(&c.algorithms);
    let name = Arc::clone(name);
    Ok(match (&c.shared_secret, &c.jwks_file) {
        (Some(secret), _) => {
            let secret = secret
                .resolve(secrets)
                .map_err(|source| BuildError::Secret {
                    field: "shared_secret",
                    index,
                    source,
                })?;
            KeyStore::fixed(
                name,
                KeySet::shared_secret(secret.expose(), allowed)
                    .map_err(|source| BuildError::Keys { index, source })?,
            )
        }
        (None, Some(path)) => {
            let body = std::fs::read(path).map_err(|source| BuildError::JwksFile {
                index,
                path: path.clone(),
                source,
            })?;
            let keys = KeySet::from_jwks(&body, allowed)
                .map_err(|source| BuildError::Keys { index, source })?;
            KeyStore::fixed(name, keys)
        }
        (None, None) => {
            let store = KeyStore::remote(
                name,
                http.clone(),
                c.issuer.clone(),
                c.jwks_uri.as_deref(),
                allowed,
                c.jwks.clone(),
                c.dangerous_allow_plain_http,
            )
            .map_err(|source| BuildError::Keys { index, source })?;
            match &c.jwks.token {
                None => store,
                Some(token) => {
                    store.with_bearer(http::BearerToken::new(token, secrets).map_err(|source| {
                        BuildError::Secret {
                            field: "jwks.token",
                            index,
                            source,
                        }
                    })?)
                }
            }
        }
    })
}
