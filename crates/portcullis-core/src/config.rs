//! The YAML configuration: typed structs, defaults, and validation that reports every problem with the
//! path of its field (`providers[1].audiences: must not be empty`) before any port is bound.
//!
//! Parsing is two-staged so that one typo does not hide the next: the document is read into a YAML value,
//! each section (and each provider) is deserialized on its own with `deny_unknown_fields`, and the typed
//! result is then checked for meaning. [`Config::from_yaml_str`] never touches files or the environment;
//! secret references are resolved later by [`secret::SecretRef::resolve`]. What needs the policy engine
//! (route matchers, requirements, the providers a route names) is checked once, when the policy is
//! compiled: by `Runtime::build` for `serve`, and by `validate-config`.

pub mod dpop;
pub mod fragments;
pub mod identity_token;
pub mod policy;
pub mod providers;
pub mod resources;
pub mod schema;
pub mod secret;
pub mod shared;
pub mod warnings;

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

pub use self::fragments::{Fragment, Origins, Source};
pub use self::identity_token::IdentityTokenConfig;
pub use self::policy::{Mode, PolicyConfig, RequireConfig, POLICY_KEYS};
pub use self::providers::{
    AlgorithmName, CredentialLocation, JwksSettings, JwtProviderConfig, ProviderConfig,
    ProviderKind, TlsSettings, TokenCacheSettings,
};
pub use self::secret::{Files, MemoryFiles, Secret, SecretRef, Sources};
pub use self::shared::{Backend, RevocationConfig, StateConfig, MAX_TTL_SECONDS};
use crate::request::is_header_name;

/// A parsed and checked configuration (the policy is compiled from it by `Runtime::build`).
///
/// Its schema (`portcullis config schema`, see [`schema`]) is derived from these fields; the document is
/// read section by section in [`Config::from_yaml_str`], not by serde, hence the `schemars` attributes.
#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Config {
    /// Listening addresses, TLS, limits and shutdown behaviour.
    #[schemars(default)]
    pub server: ServerConfig,
    /// The `realm` of every `WWW-Authenticate` challenge (RFC 6750 §3). Defaults to `portcullis`.
    #[schemars(default = "default_realm")]
    pub realm: String,
    /// The identity headers sent to the upstream on an allow.
    #[schemars(default)]
    pub headers: HeadersConfig,
    /// How denials are written (`answers`).
    #[schemars(default)]
    pub answers: AnswersConfig,
    /// The providers, in the order they are declared. Required: at least one.
    pub providers: Vec<ProviderConfig>,
    /// Routes and their requirements, and the rollout mode (`mode`, `claims_namespace`,
    /// `claims_namespace_aliases`, `default_route`, `routes` at the top level).
    #[schemars(flatten)]
    pub policy: PolicyConfig,
    /// The denylist, its admin API and the Auth0 log stream (`revocation`).
    #[schemars(default)]
    pub revocation: RevocationConfig,
    /// Where state shared across replicas lives (`state`). Defaults to memory.
    #[schemars(default)]
    pub state: StateConfig,
    /// Protected resources described by RFC 9728 metadata. Defaults to none.
    #[schemars(default)]
    pub resources: Vec<resources::ResourceConfig>,
    /// The signed identity token for the upstream (`identity_token`). Defaults to none.
    pub identity_token: Option<IdentityTokenConfig>,
    /// The decision log (`decision_log`).
    #[schemars(default)]
    pub decision_log: DecisionLogConfig,
}

/// `realm`'s default.
fn default_realm() -> String {
    "portcullis".to_owned()
}

/// Listening addresses and shutdown behaviour.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// gRPC: Check, health and reflection. Defaults to `0.0.0.0:9001`.
    pub listen: SocketAddr,
    /// Admin HTTP: `/healthz`, `/readyz`, `/metrics` (and the dev issuer's documents with `serve --dev`).
    /// Defaults to `0.0.0.0:9002`.
    pub admin_listen: SocketAddr,
    /// On SIGTERM, how long health reports NOT_SERVING while requests are still answered, so load balancers
    /// stop sending before the listener closes. Defaults to 5.
    pub drain_seconds: u64,
    /// Answer a Check that carries `x-portcullis-explain: true` with the decision's explanation in the
    /// dynamic metadata (`explanation`), for `portcullis check --explain`. It names routes and
    /// requirements, so keep it off where clients could read Envoy's metadata. Defaults to false.
    pub allow_explain: bool,
    /// TLS on the gRPC Check listener (and the HTTP forward-auth listener), for Envoys outside a mesh that
    /// would otherwise send bearer tokens in plaintext. The files are read again when they change, so a
    /// rotated certificate is served without a restart. Defaults to none (plaintext).
    pub tls: Option<ServerTlsConfig>,
    /// The ext_authz timeout of the proxies that call portcullis (Envoy's `grpc_service.timeout`, Istio's
    /// extension provider `timeout`), in milliseconds. When set, every provider's upstream timeout
    /// (`jwks.timeout_seconds`, `upstream.timeout_seconds`) and, with Redis, `state.timeout_ms` must be
    /// below it: otherwise a Check waiting on a slow key refresh is cut off by the proxy, and the client
    /// gets 503 where portcullis would have answered 401. Only checked, never enforced on requests.
    /// Defaults to none (not checked).
    pub ext_authz_timeout_ms: Option<u64>,
    /// HTTP forward auth (HTTP/1.1 and h2c): every request to this address is a check, decided by the same
    /// engine as gRPC, for Envoy's `http_service`, nginx `auth_request`, Traefik `ForwardAuth` and Caddy
    /// `forward_auth`. Requires `http_mode`. Defaults to none (off).
    pub http_listen: Option<SocketAddr>,
    /// Where the HTTP listener reads the original request from: `envoy` (the request itself: method, path
    /// after `http_path_prefix`, headers, `Host`), `forwarded` (`X-Forwarded-Method`, `-Proto`, `-Host`,
    /// `-Uri`, `-For`, as Traefik and Caddy send them) or `nginx` (`X-Original-Method`, `X-Original-URI`,
    /// set by the nginx configuration in `deploy/nginx`). Never guessed from the request: a header of
    /// another mode is an ordinary header, and a required field that is missing is a 400 denial. Required
    /// with `http_listen`; defaults to none.
    pub http_mode: Option<HttpMode>,
    /// `envoy` mode: the prefix Envoy's `http_service.path_prefix` puts before the original path, removed
    /// before the path is matched. A request whose path does not start with it is a 400 denial. Defaults to
    /// empty (no prefix).
    pub http_path_prefix: String,
    /// Checks decided at once. Past it a Check is answered at once with `RESOURCE_EXHAUSTED` (Envoy then
    /// applies `failure_mode_allow`, deny by default), never queued. Defaults to 256 per CPU the process
    /// may use: a check that waits on an upstream costs a few kilobytes and no CPU, so a slow IdP can hold
    /// hundreds per core; past that, queued work only answers after Envoy's own timeout.
    #[schemars(transform = schema::without_default)]
    pub max_concurrent_checks: usize,
    /// Signature verifications run at once (JWT signatures: every token not yet cached, valid or forged).
    /// A check that needs one while all are busy waits for its turn, within its deadline. Defaults to
    /// one less than the CPUs the process may use (at least 1): a flood of distinct forged tokens then
    /// occupies at most that many cores, and cached tokens keep being answered on the last one.
    #[schemars(transform = schema::without_default)]
    pub max_concurrent_verifications: usize,
    /// The largest Check request accepted on the gRPC port, in bytes (headers, and the body with Envoy's
    /// `with_request_body`); a larger one is refused (gRPC `OUT_OF_RANGE`) before it is decoded, and Envoy
    /// applies `failure_mode_allow`. Defaults
    /// to 4194304 (4 MiB).
    pub max_request_bytes: usize,
    /// The most request headers a Check may carry; a request with more is denied (400,
    /// `too_many_headers`) before they are read. Envoy's own default limit is 100. Defaults to 256.
    pub max_headers: usize,
    /// Routes (by name; `default` for the default route) whose requirements this file removes or relaxes
    /// on purpose. A hot reload refuses a file that removes a route with requirements, empties a route's
    /// `require`, turns on its `allow_anonymous`, or drops the `default_route` section, unless the route is
    /// named here: a half-written file (a copy paused mid-way) looks exactly like that. Read at every
    /// reload; remove the names once the change is in. Defaults to none.
    pub reload_allow_weakening: Vec<String>,
}

/// `server.max_concurrent_checks`'s default: 256 per CPU the process may use.
pub fn default_max_concurrent_checks() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get) * 256
}

/// `server.max_concurrent_verifications`'s default: one less than the CPUs the process may use (at least
/// one), so a flood of forged tokens leaves a core to everything else.
pub fn default_max_concurrent_verifications() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .saturating_sub(1)
        .max(1)
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 9001)),
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 9002)),
            drain_seconds: 5,
            allow_explain: false,
            tls: None,
            ext_authz_timeout_ms: None,
            http_listen: None,
            http_mode: None,
            http_path_prefix: String::new(),
            max_concurrent_checks: default_max_concurrent_checks(),
            max_concurrent_verifications: default_max_concurrent_verifications(),
            max_request_bytes: 4 * 1024 * 1024,
            max_headers: 256,
            reload_allow_weakening: Vec::new(),
        }
    }
}

/// The decision log: one JSON line per decision on the tracing target `portcullis::decision`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionLogConfig {
    /// The share of allows logged, from 0 (none) to 1 (all). Denials, errors and permissive-mode
    /// would-denies are always logged. Defaults to 0.01.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub allow_sample_rate: f64,
}

impl Default for DecisionLogConfig {
    fn default() -> Self {
        DecisionLogConfig {
            allow_sample_rate: 0.01,
        }
    }
}

/// Which proxy's request shape the HTTP forward-auth listener reads (`server.http_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HttpMode {
    /// Envoy's ext_authz `http_service`: the original method, path (after `http_path_prefix`) and headers.
    Envoy,
    /// Traefik `ForwardAuth`, Caddy `forward_auth`: the `X-Forwarded-*` headers.
    Forwarded,
    /// nginx `auth_request`: `X-Original-Method` and `X-Original-URI`.
    Nginx,
}

// === impl HttpMode ===

impl HttpMode {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMode::Envoy => "envoy",
            HttpMode::Forwarded => "forwarded",
            HttpMode::Nginx => "nginx",
        }
    }
}

/// `server.tls`: the listener's certificate and, optionally, the CA its clients' certificates must chain
/// to. The files are PEM; they are read at start (a problem refuses the start, with the field's path) and
/// checked again for changes at most every few seconds while serving.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// The certificate chain, leaf first (PEM). Required.
    pub cert_file: PathBuf,
    /// The leaf certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1). Required.
    pub key_file: PathBuf,
    /// CA certificates (PEM). When set, every client must present a certificate chaining to one of them
    /// (mutual TLS): a connection without one, or with one from another CA, is refused in the handshake.
    /// Defaults to none (no client certificate asked for).
    pub client_ca_file: Option<PathBuf>,
}

/// The identity headers sent to the upstream on an allow.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HeadersConfig {
    /// Every header the client sent whose name starts with this prefix is removed before ours are set, so a
    /// client can never smuggle an identity to the upstream. Defaults to `x-auth-`.
    pub prefix: String,
    /// Remove the `Authorization` header before the request goes upstream, so the upstream never sees the
    /// raw credential. Defaults to false.
    pub remove_authorization: bool,
}

impl Default for HeadersConfig {
    fn default() -> Self {
        HeadersConfig {
            prefix: "x-auth-".to_owned(),
            remove_authorization: false,
        }
    }
}

/// How denials are written.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AnswersConfig {
    /// The JSON body of a denial. Defaults to `portcullis`.
    pub body: BodyStyle,
    /// Copy the credential's claims into an allow's dynamic metadata (`claims`), for Envoy's other filters
    /// and access logs; a route's `claims_in_metadata` overrides it. Without it the metadata holds the
    /// principal (subject, issuer, provider, kind, client id, scopes, actor, attributes), the route and
    /// the decision id: an allow's answer stays small, which saves portcullis and Envoy work on every
    /// request. Defaults to false (earlier versions always copied them: see the README's upgrade notes).
    pub claims_in_metadata: bool,
}

/// The shape of a denial's body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BodyStyle {
    /// `{"error", "error_description", "decision_id", "message"}` (RFC 6750 error codes).
    #[default]
    Portcullis,
    /// llama-stack's `{"error": {"message": …}}`, the message being the provider's `deny_message`, else
    /// what llama-stack says for that kind of provider, so llama-stack's clients see no change.
    LlamaStack,
}

/// One thing wrong with a configuration, at the path of its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

// === impl Problem ===

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration ({} problem{})", .0.len(), if .0.len() == 1 { "" } else { "s" })]
pub struct ConfigErrors(pub Vec<Problem>);

/// Collects problems while a configuration is parsed, checked, or compiled (the policy, the providers).
#[derive(Debug, Default)]
pub struct Problems(pub Vec<Problem>);

// === impl Problems ===

impl Problems {
    pub fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    /// `Ok(value)` when nothing was recorded, else every problem.
    pub fn into_result<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(ConfigErrors(self.0))
        }
    }

    /// Deserializes one section, recording its error with the full path instead of failing.
    pub(crate) fn section<T: DeserializeOwned>(&mut self, prefix: &str, value: Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(err) => {
                let inner = err.inner().to_string();
                let path = join_path(prefix, &err.path().to_string());
                // The path already ends with the unknown key; say so without repeating it.
                let message = match inner.strip_prefix("unknown field `") {
                    Some(rest) => format!(
                        "unknown field{}",
                        rest.split_once('`').map_or("", |(_, expected)| expected)
                    ),
                    None => inner,
                };
                self.add(path, message);
                None
            }
        }
    }
}

fn join_path(prefix: &str, rest: &str) -> String {
    match (prefix.is_empty(), rest.is_empty() || rest == ".") {
        (_, true) => prefix.to_owned(),
        (true, false) => rest.to_owned(),
        (false, false) if rest.starts_with('[') => format!("{prefix}{rest}"),
        (false, false) => format!("{prefix}.{rest}"),
    }
}

const TOP_LEVEL_KEYS: &[&str] = &[
    "server",
    "decision_log",
    "realm",
    "headers",
    "answers",
    "providers",
    "identity_token",
    "mode",
    "claims_namespace",
    "claims_namespace_aliases",
    "default_route",
    "routes",
    "revocation",
    "state",
    "resources",
];

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read configuration `{}`: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] ConfigErrors),
}

// === impl Config ===

impl Config {
    /// Parses the text of the configuration file at `path` (the host read it), saying which file a
    /// problem is in only through the [`LoadError`] the host makes of it.
    pub fn from_file_text(text: &str) -> Result<Config, LoadError> {
        Ok(Config::from_yaml_str(text)?)
    }

    /// The weaknesses of this valid configuration (`validate-config` prints them, `serve` logs them).
    pub fn warnings(&self) -> Vec<Problem> {
        warnings::warnings(self)
    }

    /// Parses and validates a YAML document. Secret references are checked for shape only.
    pub fn from_yaml_str(text: &str) -> Result<Config, ConfigErrors> {
        let parsed = Config::parse(text)?;
        if parsed.problems.is_empty() {
            Ok(parsed.config)
        } else {
            Err(ConfigErrors(parsed.problems))
        }
    }

    /// Parses and validates a YAML document leniently: every section, provider and route on its own, so
    /// that a type or enum error in one hides nothing else. Fails only on a document that has no sections
    /// at all (not YAML, empty, not a mapping); otherwise see [`Parsed`].
    pub fn parse(text: &str) -> Result<Parsed, ConfigErrors> {
        let doc: Value = serde_yaml_ng::from_str(text).map_err(|e| {
            ConfigErrors(vec![Problem {
                path: ".".to_owned(),
                message: format!("not valid YAML: {e}"),
            }])
        })?;
        Config::parse_value(doc)
    }

    /// [`Config::parse`] of a document already read as YAML (a file, or fragments merged).
    pub(crate) fn parse_value(doc: Value) -> Result<Parsed, ConfigErrors> {
        let mut problems = Problems::default();
        let mut map = match doc {
            Value::Mapping(map) => map,
            Value::Null => {
                problems.add(".", "the configuration is empty");
                return Err(ConfigErrors(problems.0));
            }
            _ => {
                problems.add(".", "must be a mapping of sections");
                return Err(ConfigErrors(problems.0));
            }
        };

        for key in map.keys() {
            match key.as_str() {
                Some(k) if TOP_LEVEL_KEYS.contains(&k) => {}
                Some(k) => problems.add(
                    k,
                    format!(
                        "unknown field, expected one of {}",
                        TOP_LEVEL_KEYS.join(", ")
                    ),
                ),
                None => problems.add(".", "section names must be strings"),
            }
        }

        let server = match map.remove("server") {
            Some(v) => problems.section::<ServerConfig>("server", v),
            None => Some(ServerConfig::default()),
        };
        if let Some(server) = &server {
            validate_server(&mut problems, server);
        }
        let decision_log = match map.remove("decision_log") {
            Some(v) => problems.section::<DecisionLogConfig>("decision_log", v),
            None => Some(DecisionLogConfig::default()),
        };
        if let Some(log) = &decision_log {
            if !(0.0..=1.0).contains(&log.allow_sample_rate) {
                problems.add(
                    "decision_log.allow_sample_rate",
                    "must be between 0 and 1 (the share of allows logged)",
                );
            }
        }
        let realm = match map.remove("realm") {
            Some(v) => problems.section::<String>("realm", v),
            None => Some(default_realm()),
        };
        let headers = match map.remove("headers") {
            Some(v) => problems.section::<HeadersConfig>("headers", v),
            None => Some(HeadersConfig::default()),
        };
        let revocation = match map.remove("revocation") {
            Some(v) => problems.section::<RevocationConfig>("revocation", v),
            None => Some(RevocationConfig::default()),
        };
        let state = match map.remove("state") {
            Some(v) => problems.section::<StateConfig>("state", v),
            None => Some(StateConfig::default()),
        };
        if let Some(revocation) = &revocation {
            shared::validate_revocation(&mut problems, revocation);
        }
        if let Some(state) = &state {
            shared::validate_state(&mut problems, state);
        }
        let answers = match map.remove("answers") {
            Some(v) => problems.section::<AnswersConfig>("answers", v),
            None => Some(AnswersConfig::default()),
        };
        let identity_token = match map.remove("identity_token") {
            Some(v) => problems.section::<IdentityTokenConfig>("identity_token", v),
            None => None,
        };
        if let Some(token) = &identity_token {
            identity_token::validate(&mut problems, token);
        }
        let providers = match map.remove("providers") {
            Some(Value::Sequence(items)) if items.is_empty() => {
                problems.add("providers", "must list at least one provider");
                Vec::new()
            }
            Some(Value::Sequence(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, item)| providers::parse(&mut problems, i, item))
                .collect::<Vec<_>>(),
            Some(_) => {
                problems.add("providers", "must be a list");
                Vec::new()
            }
            None => {
                problems.add("providers", "is required: list at least one provider");
                Vec::new()
            }
        };

        if let Some(realm) = &realm {
            validate_realm(&mut problems, realm);
        }
        if let Some(headers) = &headers {
            validate_headers(&mut problems, headers);
        }
        let prefix = headers
            .as_ref()
            .map(|h| h.prefix.as_str())
            .filter(|p| p.len() >= 2 && is_header_name(p));
        let mut names = HashSet::new();
        let mut issuers = HashSet::new();
        for (i, provider) in providers.iter().enumerate() {
            let Some(provider) = provider else { continue };
            let path = format!("providers[{i}]");
            if !names.insert(provider.name.clone()) {
                problems.add(
                    format!("{path}.name"),
                    format!("duplicate provider name `{}`", provider.name),
                );
            }
            if let ProviderKind::Jwt(jwt) = &provider.kind {
                if !issuers.insert(jwt.issuer.clone()) {
                    problems.add(
                        format!("{path}.issuer"),
                        "another jwt provider has the same issuer: the token's `iss` must pick exactly one provider",
                    );
                }
            }
            providers::validate(&mut problems, &path, provider, prefix);
        }
        shared_places(&mut problems, &providers);
        if let (Some(server), Some(state)) = (&server, &state) {
            validate_ext_authz_timeout(&mut problems, server, &providers, state);
        }

        let resources = match map.remove("resources") {
            Some(v) => problems.section::<Vec<resources::ResourceConfig>>("resources", v),
            None => Some(Vec::new()),
        };
        let (policy, route_indexes, policy_complete) = parse_policy(&mut problems, &mut map);
        // From here on, a route's problem is found at its place in `policy.routes`.
        let checked_from = problems.0.len();
        if let Some(resources) = &resources {
            let routes = policy
                .routes
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("routes[{i}]"), r.resource.as_deref()))
                .chain(std::iter::once((
                    "default_route".to_owned(),
                    policy.default_route.resource.as_deref(),
                )));
            resources::validate(&mut problems, resources, routes);
        }
        let anonymous_allowed =
            policy.default_route.allow_anonymous || policy.routes.iter().any(|r| r.allow_anonymous);
        for (i, provider) in providers.iter().enumerate() {
            if let Some(ProviderConfig {
                kind: ProviderKind::Anonymous(_),
                ..
            }) = provider
            {
                if !anonymous_allowed {
                    problems.add(
                        format!("providers[{i}]"),
                        "an anonymous provider is never used: no route (nor default_route) sets allow_anonymous: true",
                    );
                }
            }
        }
        identity_token::validate_routes(&mut problems, &policy, identity_token.is_some());
        for problem in &mut problems.0[checked_from..] {
            problem.path = renumber(&problem.path, "routes", &route_indexes);
        }
        // What did not parse is left at its default (a section) or left out (a provider, a route).
        let provider_indexes = (0..providers.len())
            .filter(|&i| providers[i].is_some())
            .collect();
        let providers_complete = providers.iter().all(Option::is_some);
        let config = Config {
            identity_token,
            decision_log: decision_log.unwrap_or_default(),
            policy,
            server: server.unwrap_or_default(),
            realm: realm.unwrap_or_else(default_realm),
            headers: headers.unwrap_or_default(),
            answers: answers.unwrap_or_default(),
            providers: providers.into_iter().flatten().collect(),
            revocation: revocation.unwrap_or_default(),
            state: state.unwrap_or_default(),
            resources: resources.unwrap_or_default(),
        };
        Ok(Parsed {
            config,
            problems: problems.0,
            references_complete: providers_complete && policy_complete,
            provider_indexes,
            route_indexes,
            origins: Origins::default(),
        })
    }
}

/// What [`Config::parse`] found: every problem, and the configuration as far as it parsed, so that the
/// checks that need a whole configuration (the compiled policy, the files and secrets it names) still run
/// on the rest and one run reports everything (`runtime::load`).
#[derive(Debug)]
pub struct Parsed {
    /// The configuration as parsed: a section that failed is at its default, a provider or route that
    /// failed is left out. Only a configuration without problems may be served.
    pub config: Config,
    /// Every problem found, in document order within each section.
    pub problems: Vec<Problem>,
    /// Every provider parsed and so did the claim namespaces: the policy's references (a route's
    /// providers, its namespaced claims) can be checked without reporting a problem that is only the
    /// echo of one already found.
    pub references_complete: bool,
    /// Where each of `config.providers` is in the document's `providers` (one that failed is left out, so
    /// the ones after it move up).
    provider_indexes: Vec<usize>,
    /// Where each of `config.policy.routes` is in the document's `routes`.
    route_indexes: Vec<usize>,
    /// The fragment each part came from (`--config DIR`); a single file's are empty.
    pub(crate) origins: Origins,
}

// === impl Parsed ===

impl Parsed {
    /// A problem found in `config` at the path of its field in the document (in its fragment, named, for
    /// [`Config::parse_fragments`]): `providers[1]` of `config`
    /// is `providers[2]` of the document when the first provider did not parse.
    pub fn in_document(&self, problem: Problem) -> Problem {
        let path = renumber(&problem.path, "providers", &self.provider_indexes);
        self.origins.locate(Problem {
            path: renumber(&path, "routes", &self.route_indexes),
            message: problem.message,
        })
    }

    /// Where the parts of the configuration came from: [`Origins::locate`] names the fragment of a problem
    /// found in the valid configuration (its warnings).
    pub fn origins(&self) -> &Origins {
        &self.origins
    }
}

/// `list[i]…` → `list[indexes[i]]…`; any other path unchanged.
fn renumber(path: &str, list: &str, indexes: &[usize]) -> String {
    let renumbered = path
        .strip_prefix(list)
        .and_then(|rest| rest.strip_prefix('['))
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(i, rest)| Some((indexes.get(i.parse::<usize>().ok()?)?, rest)));
    match renumbered {
        Some((i, rest)) => format!("{list}[{i}]{rest}"),
        None => path.to_owned(),
    }
}

/// The policy's keys, each on its own and each route on its own: a bad `mode` hides no route, a bad route
/// no other. Returns the policy (failed keys at their defaults, failed routes left out), where each of
/// its routes is in the document, and whether the claim namespaces parsed.
fn parse_policy(
    problems: &mut Problems,
    map: &mut serde_yaml_ng::Mapping,
) -> (PolicyConfig, Vec<usize>, bool) {
    let mut policy = PolicyConfig::default();
    let mut route_indexes = Vec::new();
    let mut complete = true;
    for key in POLICY_KEYS {
        let Some(value) = map.remove(*key) else {
            continue;
        };
        match *key {
            "mode" => policy.mode = problems.section(key, value).unwrap_or_default(),
            "claims_namespace" => match problems.section(key, value) {
                Some(namespace) => policy.claims_namespace = namespace,
                None => complete = false,
            },
            "claims_namespace_aliases" => match problems.section(key, value) {
                Some(aliases) => policy.claims_namespace_aliases = aliases,
                None => complete = false,
            },
            "default_route" => {
                policy.default_route = problems.section(key, value).unwrap_or_default();
            }
            "routes" => {
                (route_indexes, policy.routes) = parse_routes(problems, value).into_iter().unzip();
            }
            other => unreachable!("POLICY_KEYS has no `{other}`"),
        }
    }
    (policy, route_indexes, complete)
}

/// Each route on its own, with its place in the document, so one route's type error hides no other.
fn parse_routes(problems: &mut Problems, value: Value) -> Vec<(usize, policy::RouteConfig)> {
    let Value::Sequence(items) = value else {
        // serde's own words for a routes value that is not a list.
        let routes: Option<Vec<policy::RouteConfig>> = problems.section("routes", value);
        return routes.unwrap_or_default().into_iter().enumerate().collect();
    };
    items
        .into_iter()
        .enumerate()
        .filter_map(|(i, item)| Some((i, problems.section(&format!("routes[{i}]"), item)?)))
        .collect()
}

/// `server.ext_authz_timeout_ms` against every timeout a Check may wait on: each must be below the proxy's,
/// or the proxy gives up first and its client sees 503 (Envoy's `status_on_error`) where portcullis would
/// have answered 401 (an IdP slow or down while a key set is refreshed). An error rather than a warning:
/// the setting exists only to have this pairing checked, so a wrong one fails `validate-config` in CI.
fn validate_ext_authz_timeout(
    problems: &mut Problems,
    server: &ServerConfig,
    providers: &[Option<ProviderConfig>],
    state: &StateConfig,
) {
    let Some(proxy_ms) = server.ext_authz_timeout_ms else {
        return;
    };
    if proxy_ms == 0 {
        problems.add(
            "server.ext_authz_timeout_ms",
            "must be at least 1 (the proxies' ext_authz timeout in milliseconds)",
        );
        return;
    }
    let mut waits: Vec<(String, u64, String)> = Vec::new();
    for (i, provider) in providers.iter().enumerate() {
        let Some(provider) = provider else { continue };
        let (field, seconds) = match &provider.kind {
            ProviderKind::Jwt(jwt) => ("jwks.timeout_seconds", jwt.jwks.timeout_seconds),
            ProviderKind::Introspection(c) => {
                ("upstream.timeout_seconds", c.upstream.timeout_seconds)
            }
            ProviderKind::Webhook(c) => ("upstream.timeout_seconds", c.upstream.timeout_seconds),
            ProviderKind::Github(c) => ("upstream.timeout_seconds", c.upstream.timeout_seconds),
            ProviderKind::Kubernetes(c) => ("upstream.timeout_seconds", c.upstream.timeout_seconds),
            ProviderKind::ApiKey(_)
            | ProviderKind::Mtls(_)
            | ProviderKind::EnvoyJwt(_)
            | ProviderKind::Anonymous(_) => continue,
        };
        waits.push((
            format!("providers[{i}].{field}"),
            seconds.saturating_mul(1000),
            format!("{seconds} s"),
        ));
    }
    if state.backend == Backend::Redis {
        waits.push((
            "state.timeout_ms".to_owned(),
            state.timeout_ms,
            format!("{} ms", state.timeout_ms),
        ));
    }
    for (path, ms, shown) in waits {
        if ms >= proxy_ms {
            problems.add(
                path,
                format!(
                    "{shown} must be below server.ext_authz_timeout_ms ({proxy_ms} ms): the proxy would give up on a Check waiting on this upstream first, and its client would get 503 instead of portcullis' 401; lower this timeout, or raise the proxy's ext_authz timeout and server.ext_authz_timeout_ms together"
                ),
            );
        }
    }
}

/// Several opaque-token providers reading one credential place would each see a credential meant for
/// another (a mistyped API key sent to GitHub, then to a webhook): refused unless each says
/// `shared_location_order: true`, so the declared order is the intended one.
fn shared_places(problems: &mut Problems, providers: &[Option<ProviderConfig>]) {
    let opaque = |p: &ProviderConfig| {
        matches!(
            p.kind,
            ProviderKind::Introspection(_)
                | ProviderKind::Webhook(_)
                | ProviderKind::Github(_)
                | ProviderKind::ApiKey(_)
        )
    };
    for (i, provider) in providers.iter().enumerate() {
        let Some(provider) = provider.as_ref().filter(|p| opaque(p)) else {
            continue;
        };
        let first = providers[..i]
            .iter()
            .flatten()
            .find(|earlier| opaque(earlier) && earlier.credential == provider.credential);
        let Some(first) = first else { continue };
        if !(provider.shared_location_order && first.shared_location_order) {
            problems.add(
                format!("providers[{i}].credential"),
                format!(
                    "`{}` and `{}` both read opaque credentials from the same place: a credential meant for one would be sent to the other; give them different places, or set `shared_location_order: true` on both to try them in their declared order",
                    first.name, provider.name
                ),
            );
        }
    }
}

/// The HTTP forward-auth settings: a listener needs its mode, and the path prefix is Envoy's alone.
fn validate_server(problems: &mut Problems, server: &ServerConfig) {
    match (server.http_listen, server.http_mode) {
        (Some(_), None) => problems.add(
            "server.http_mode",
            "is required with server.http_listen: one of envoy, forwarded, nginx (which proxy's headers describe the original request)",
        ),
        (None, Some(_)) => problems.add(
            "server.http_mode",
            "is set without server.http_listen: no HTTP forward-auth listener would use it",
        ),
        _ => {}
    }
    let prefix = server.http_path_prefix.as_str();
    if !prefix.is_empty() {
        if server.http_mode != Some(HttpMode::Envoy) {
            problems.add(
                "server.http_path_prefix",
                "only applies to http_mode: envoy (Envoy's http_service.path_prefix)",
            );
        }
        if !prefix.starts_with('/')
            || prefix.ends_with('/')
            || prefix.contains(['?', '#', '%'])
            || !prefix.bytes().all(|b| b.is_ascii_graphic())
        {
            problems.add(
                "server.http_path_prefix",
                "must be a path such as `/auth`: starting with `/`, not ending with `/`, without `?`, `#`, `%` or spaces",
            );
        }
    }
    if let Some(http) = server.http_listen {
        for (name, addr) in [
            ("server.listen", server.listen),
            ("server.admin_listen", server.admin_listen),
        ] {
            if addr == http && http.port() != 0 {
                problems.add(
                    "server.http_listen",
                    format!("is the same address as {name}"),
                );
            }
        }
    }
    for (field, value) in [
        ("max_concurrent_checks", server.max_concurrent_checks),
        (
            "max_concurrent_verifications",
            server.max_concurrent_verifications,
        ),
        ("max_request_bytes", server.max_request_bytes),
        ("max_headers", server.max_headers),
    ] {
        if value == 0 {
            problems.add(format!("server.{field}"), "must be at least 1");
        }
    }
}

fn validate_realm(problems: &mut Problems, realm: &str) {
    if realm.is_empty() {
        problems.add("realm", "must not be empty");
    }
    if realm
        .chars()
        .any(|c| c == '"' || c == '\\' || c.is_control() || !c.is_ascii())
    {
        problems.add(
            "realm",
            "must be printable ASCII without `\"` or `\\` (it is quoted in WWW-Authenticate)",
        );
    }
}

fn validate_headers(problems: &mut Problems, headers: &HeadersConfig) {
    if headers.prefix.len() < 2 || !is_header_name(&headers.prefix) {
        problems.add(
            "headers.prefix",
            "must be a lower-case header name prefix of at least 2 characters, e.g. `x-auth-`",
        );
    }
}

/// Header names portcullis sets itself after the prefix.
/// Every one of them is reserved: no claim header or attribute may emit it.
pub const BUILTIN_HEADER_SUFFIXES: &[&str] = &[
    "subject",
    "client-id",
    "issuer",
    "scopes",
    "provider",
    "decision-id",
    "would-deny",
    "actor",
    "delegation-chain",
];

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "
providers:
  - name: auth0
    type: jwt
    issuer: https://example.eu.auth0.com/
    audiences: [https://api.example.com/]
";

    #[test]
    fn dpop_and_resources_are_validated_with_their_paths() {
        let found = problems(
            "
providers:
  - name: a
    type: jwt
    issuer: https://a.example/
    audiences: [x]
    dpop: {mode: required, algorithms: [HS256], max_age_seconds: 0, nonce: true, external_origin: 'https://a.example/path'}
resources:
  - resource: 'http://api.example.com/x?q=1'
    bearer_methods_supported: [cookie]
routes:
  - name: r
    match: {path: /r}
    resource: https://unknown.example.com/
",
        );
        assert_eq!(
            found,
            [
                "providers[0].dpop.algorithms[0]: a DPoP proof is signed with an asymmetric key (RFC 9449 §4.2); HMAC is refused",
                "providers[0].dpop.max_age_seconds: must be between 1 and 3600",
                "providers[0].dpop.nonce_secret: is required with `nonce: true` (every replica must share it)",
                "providers[0].dpop.external_origin: must be an origin such as `https://api.example.com` (scheme and host, optional port, no path)",
                "resources[0].resource: must be an https URL without query or fragment (RFC 9728 §1.2)",
                "resources[0].bearer_methods_supported[0]: must be one of header, body, query (RFC 9728 §2)",
                "routes[0].resource: `https://unknown.example.com/` is not one of `resources[].resource`",
            ]
        );
    }

    #[test]
    fn http_forward_auth_settings_are_validated_with_their_paths() {
        let with = |server: &str| problems(&format!("server: {server}\n{MINIMAL}"));
        assert_eq!(
            with("{http_listen: '127.0.0.1:9192'}"),
            ["server.http_mode: is required with server.http_listen: one of envoy, forwarded, nginx (which proxy's headers describe the original request)"]
        );
        assert_eq!(
            with("{http_mode: nginx}"),
            ["server.http_mode: is set without server.http_listen: no HTTP forward-auth listener would use it"]
        );
        assert!(
            with("{http_listen: '127.0.0.1:9192', http_mode: traefik}")[0]
                .starts_with("server.http_mode: unknown variant `traefik`, expected one of `envoy`, `forwarded`, `nginx`"),
        );
        assert_eq!(
            with("{http_listen: '127.0.0.1:9192', http_mode: nginx, http_path_prefix: 'auth/'}"),
            [
                "server.http_path_prefix: only applies to http_mode: envoy (Envoy's http_service.path_prefix)",
                "server.http_path_prefix: must be a path such as `/auth`: starting with `/`, not ending with `/`, without `?`, `#`, `%` or spaces",
            ]
        );
        assert_eq!(
            with("{listen: '127.0.0.1:9001', http_listen: '127.0.0.1:9001', http_mode: envoy}"),
            ["server.http_listen: is the same address as server.listen"]
        );
        let config = Config::from_yaml_str(&format!(
            "server: {{http_listen: '127.0.0.1:9192', http_mode: envoy, http_path_prefix: /auth}}\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(config.server.http_mode, Some(HttpMode::Envoy));
        assert_eq!(config.server.http_path_prefix, "/auth");
        assert_eq!(ServerConfig::default().http_listen, None);
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = Config::from_yaml_str(MINIMAL).unwrap();
        assert_eq!(config.server, ServerConfig::default());
        assert_eq!(config.realm, "portcullis");
        assert_eq!(config.headers.prefix, "x-auth-");
        let ProviderKind::Jwt(jwt) = &config.providers[0].kind else {
            panic!("a jwt provider")
        };
        assert_eq!(jwt.algorithms, vec![AlgorithmName::RS256]);
        assert_eq!(jwt.leeway_seconds, 30);
        assert_eq!(jwt.max_token_bytes, 8192);
        assert_eq!(jwt.jwks_uri, None);
    }

    #[test]
    fn the_ext_authz_timeout_must_exceed_every_upstream_timeout() {
        let providers = "
providers:
  - {name: a, type: jwt, issuer: 'https://a.example/', audiences: [x]}
  - {name: b, type: jwt, issuer: 'https://b.example/', audiences: [x], jwks: {timeout_seconds: 2}}
  - {name: w, type: webhook, endpoint: 'https://w.example/', upstream: {timeout_seconds: 3}}
  - {name: k, type: api_key, keys: [{sha256: '0000000000000000000000000000000000000000000000000000000000000000', principal: ci}], credential: {header: x-api-key}}
state: {backend: redis, url: 'redis://r:6379/0', timeout_ms: 500}
";
        let at = |ms: u64| format!("server: {{ext_authz_timeout_ms: {ms}}}\n{providers}");
        // 6 s: above the default 5 s.
        Config::from_yaml_str(&at(6000)).unwrap();
        // Unset: not checked.
        Config::from_yaml_str(providers).unwrap();
        let found = problems(&at(3000));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with(
            "providers[0].jwks.timeout_seconds: 5 s must be below server.ext_authz_timeout_ms (3000 ms)"
        ), "{found:?}");
        assert!(found[1].starts_with(
            "providers[2].upstream.timeout_seconds: 3 s must be below server.ext_authz_timeout_ms (3000 ms)"
        ), "{found:?}");
        assert!(found[0].contains("503 instead of portcullis' 401"));
        // Redis' timeout counts too (a DPoP replay check waits on it).
        let found = problems(&at(400));
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("state.timeout_ms: 500 ms must be below")),
            "{found:?}"
        );
        assert_eq!(
            problems(&at(0)),
            ["server.ext_authz_timeout_ms: must be at least 1 (the proxies' ext_authz timeout in milliseconds)"]
        );
    }

    #[test]
    fn server_tls_keys_parse_and_unknown_ones_are_refused() {
        let config = Config::from_yaml_str(&format!(
            "server: {{tls: {{cert_file: /c.pem, key_file: /k.pem, client_ca_file: /ca.pem}}}}\n{MINIMAL}"
        ))
        .unwrap();
        let tls = config.server.tls.unwrap();
        assert_eq!(tls.cert_file, PathBuf::from("/c.pem"));
        assert_eq!(tls.key_file, PathBuf::from("/k.pem"));
        assert_eq!(tls.client_ca_file, Some(PathBuf::from("/ca.pem")));
        let found = problems(&format!(
            "server: {{tls: {{cert_file: /c.pem}}}}\n{MINIMAL}"
        ));
        assert!(
            found[0].starts_with("server.tls: missing field `key_file`"),
            "{found:?}"
        );
        let found = problems(&format!(
            "server: {{tls: {{cert_file: /c.pem, key_file: /k.pem, ca_file: /x}}}}\n{MINIMAL}"
        ));
        assert!(
            found[0].starts_with("server.tls.ca_file: unknown field"),
            "{found:?}"
        );
    }

    #[test]
    fn operating_limits_and_the_decision_log_have_defaults_and_paths() {
        let config = Config::from_yaml_str(MINIMAL).unwrap();
        assert_eq!(config.decision_log.allow_sample_rate, 0.01);
        assert_eq!(config.server.max_headers, 256);
        assert_eq!(config.server.max_request_bytes, 4 << 20);
        assert_eq!(
            config.server.max_concurrent_checks,
            default_max_concurrent_checks()
        );
        assert!(config.server.max_concurrent_checks >= 256);
        assert!(config.server.max_concurrent_verifications >= 1);
        assert!(
            config.server.max_concurrent_verifications
                < std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
        );

        let found = problems(&format!(
            "{MINIMAL}server: {{max_concurrent_checks: 0, max_headers: 0, max_request_bytes: 0, max_concurrent_verifications: 0}}
decision_log: {{allow_sample_rate: 1.5}}"
        ));
        assert_eq!(
            found,
            [
                "server.max_concurrent_checks: must be at least 1",
                "server.max_concurrent_verifications: must be at least 1",
                "server.max_request_bytes: must be at least 1",
                "server.max_headers: must be at least 1",
                "decision_log.allow_sample_rate: must be between 0 and 1 (the share of allows logged)",
            ]
        );
        let found = problems(&format!("{MINIMAL}decision_log: {{sample: 1}}"));
        assert!(
            found[0].starts_with("decision_log.sample: unknown field"),
            "{found:?}"
        );
        let ok = Config::from_yaml_str(&format!("{MINIMAL}decision_log: {{allow_sample_rate: 1}}"))
            .unwrap();
        assert_eq!(ok.decision_log.allow_sample_rate, 1.0);
    }

    fn problems(yaml: &str) -> Vec<String> {
        Config::from_yaml_str(yaml)
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let found = problems(
            "
server:
  listen: 0.0.0.0:9001
  colour: blue
providers:
  - name: a
    type: jwt
    issuer: https://a.example/
    audiences: []
  - name: b
    type: jwt
    issuer: https://b.example/
    audiences: [x]
    algorithms: [HS256]
  - name: c
    type: saml
",
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("server.colour: unknown field")),
            "{found:?}"
        );
        assert!(
            found.contains(&"providers[0].audiences: must not be empty".to_owned()),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("providers[1].algorithms: HS256/384/512 need")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("providers[2].type: unknown provider type `saml`")),
            "{found:?}"
        );
        assert_eq!(found.len(), 4, "{found:?}");
    }

    #[test]
    fn a_bad_policy_key_or_route_hides_no_other_route() {
        let found = problems(&format!(
            "{MINIMAL}mode: enforcing
claims_namespace: [not, a, string]
routes:
  - {{name: r0, match: {{path: /a, methods: GET}}}}
  - {{name: r1, match: {{path: /b}}, resource: 'https://unknown.example/'}}
  - {{name: r2, match: {{paht: /c}}}}
"
        ));
        let paths: Vec<&str> = found.iter().map(|p| p.split_once(':').unwrap().0).collect();
        assert_eq!(
            paths,
            [
                "mode",
                "claims_namespace",
                "routes[0].match.methods",
                "routes[2].match.paht",
                // Checked after parsing, on the routes that parsed: still at its place in the file.
                "routes[1].resource",
            ],
            "{found:?}"
        );
        assert!(problems(&format!("{MINIMAL}routes: {{name: r}}"))[0]
            .starts_with("routes: invalid type: map, expected a sequence"),);
    }

    #[test]
    fn a_partial_parse_keeps_what_parsed_at_its_place() {
        let parsed = Config::parse(
            "
providers:
  - {name: bad, type: saml}
  - {name: good, type: jwt, issuer: 'https://a.example/', audiences: [x]}
routes:
  - {name: bad, match: 7}
  - {name: good, match: {path: /x}}
",
        )
        .unwrap();
        assert_eq!(parsed.problems.len(), 2, "{:?}", parsed.problems);
        assert!(!parsed.references_complete);
        assert_eq!(parsed.config.providers[0].name, "good");
        assert_eq!(parsed.config.policy.routes[0].name, "good");
        let moved = |path: &str| {
            parsed
                .in_document(Problem {
                    path: path.to_owned(),
                    message: String::new(),
                })
                .path
        };
        assert_eq!(moved("providers[0].jwks_file"), "providers[1].jwks_file");
        assert_eq!(moved("routes[0].providers[0]"), "routes[1].providers[0]");
        assert_eq!(moved("routes"), "routes");
        assert_eq!(moved("realm"), "realm");
    }

    #[test]
    fn unknown_provider_key_names_the_key() {
        let found = problems(
            "
providers:
  - name: a
    type: jwt
    issuer: https://a.example/
    audience: [x]
",
        );
        assert!(
            found[0].starts_with("providers[0].audience: unknown field"),
            "{found:?}"
        );
    }

    #[test]
    fn wrong_types_and_values_are_refused() {
        let found = problems(
            "
realm: 'say \"hi\"'
providers:
  - name: a
    type: jwt
    issuer: http://idp.example/
    audiences: [x]
    leeway_seconds: 3600
    max_token_bytes: 10
    claim_headers:
      email: x-email
      sub: x-auth-subject
  - name: a
    type: jwt
    issuer: http://idp.example/
    audiences: [x]
    algorithms: [none]
",
        );
        let has = |needle: &str| found.iter().any(|p| p.starts_with(needle));
        assert!(has("realm: must be printable ASCII"), "{found:?}");
        assert!(
            has("providers[0].issuer: plain http is only allowed to loopback"),
            "{found:?}"
        );
        assert!(
            has("providers[0].leeway_seconds: must be at most 300"),
            "{found:?}"
        );
        assert!(
            has("providers[0].max_token_bytes: must be between"),
            "{found:?}"
        );
        assert!(
            has("providers[0].claim_headers.sub: `x-auth-subject` is set by portcullis"),
            "{found:?}"
        );
        assert!(
            has("providers[1].algorithms[0]: unknown variant `none`"),
            "{found:?}"
        );
    }

    #[test]
    fn bad_prefix_is_refused() {
        let found = problems("headers: {prefix: X}\nproviders: [{name: a, type: jwt, issuer: 'https://a/', audiences: [x]}]");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("headers.prefix: must be a lower-case"),
            "{found:?}"
        );
    }

    #[test]
    fn shared_secret_excludes_jwks_and_asymmetric_algorithms() {
        let found = problems(
            "
providers:
  - name: a
    type: jwt
    issuer: https://a.example/
    audiences: [x]
    jwks_uri: https://a.example/jwks
    algorithms: [HS256, RS256]
    shared_secret: {env: A_SECRET}
",
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("providers[0].algorithms: with shared_secret")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("providers[0].shared_secret: a provider with shared_secret")),
            "{found:?}"
        );
    }

    #[test]
    fn duplicate_issuers_and_names_are_refused() {
        let found = problems(
            "
providers:
  - {name: a, type: jwt, issuer: 'https://a.example/', audiences: [x]}
  - {name: a, type: jwt, issuer: 'https://a.example/', audiences: [y]}
",
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("providers[1].name: duplicate")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("providers[1].issuer: another jwt provider")),
            "{found:?}"
        );
    }

    #[test]
    fn missing_providers_and_garbage_are_refused() {
        assert!(problems("server: {}")[0].starts_with("providers: is required"));
        assert!(problems("")[0].contains("empty"));
        assert!(problems("[1, 2]")[0].contains("must be a mapping"));
        assert!(problems("a: [")[0].contains("not valid YAML"));
        assert!(problems("providers: []\nfoo: 1")[0].starts_with("foo: unknown field"));
    }
}
