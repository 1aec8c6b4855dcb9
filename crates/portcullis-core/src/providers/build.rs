//! Building the providers from the configuration, once per runtime: secrets resolved, files read, HTTP
//! clients made; on reload, what is unchanged ([`Fingerprint`]) is kept with its key set and cache.

use std::sync::Arc;

use super::jwks::{AlgSet, KeySet, KeyStore};
use super::jwt::{JwtProvider, JwtProviders};
use super::{
    api_key, envoy_jwt, github, http, introspection, jwks, kubernetes, mtls, webhook, Entry, Kind,
    Opaque, Providers,
};
use crate::clock::Clock;
use crate::config::{
    BodyStyle, Config, CredentialLocation, Problem, ProviderConfig, ProviderKind, Sources,
};
use crate::dpop::{Dpop, ReplayCache};
use crate::env::Env;
use crate::identity::IdentityBuilder;

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

/// Everything a provider is built from: its configuration section, the secrets and files it read at build
/// time, and for a webhook the credential places it forwards. Equal fingerprints mean the provider would
/// be built the same, so a reload keeps the running one with its key set and cache.
#[derive(PartialEq)]
pub(super) struct Fingerprint {
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
        secrets: &Sources,
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
            match secrets.read(path) {
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

// === impl Providers ===

impl Providers {
    /// Builds the providers; resolves secrets and reads files through `env.sources`, makes HTTP clients
    /// through `env.upstream`, counts into `env.recorder`. Nothing is fetched yet: a host's runners
    /// refresh the key sets ([`Providers::key_stores`]).
    ///
    /// On reload, `previous` is the running runtime's providers: a provider whose [`Fingerprint`] is
    /// unchanged is kept (a `jwt` provider's key set, an opaque provider with its cache), so a reload
    /// costs no key set fetch and no cold cache for it. The verified-token cache is kept when every `jwt`
    /// provider is; the DPoP replay cache when its capacity is the same, so a proof seen before a
    /// reload is still a replay after it.
    pub fn from_config(
        config: &Config,
        env: &Env,
        previous: Option<&Providers>,
    ) -> Result<Providers, BuildError> {
        let secrets = &env.sources;
        let clock = env.clock.clone();
        let recorder = &*env.recorder;
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
                env.seen.clone(),
            )),
            None => Arc::new(ReplayCache::new(
                replay_entries,
                clock.clone(),
                env.seen.clone(),
            )),
        };
        let mut kept = Vec::new();
        for (index, provider) in config.providers.iter().enumerate() {
            let name: Arc<str> = Arc::from(provider.name.as_str());
            let fingerprint = Fingerprint::of(index, provider, config, secrets)?;
            // The running provider of this name (names are unique), looked up, not searched for: a
            // reload of thousands of providers stays linear.
            let running_entry = previous.and_then(|p| {
                let index = *p.tables.by_name.get(&name)?;
                Some((p, index, &p.entries[index]))
            });
            let unchanged = running_entry.filter(|(_, _, e)| e.fingerprint == fingerprint);
            if unchanged.is_some() {
                kept.push(Arc::clone(&name));
            }
            let dpop = match &provider.kind {
                ProviderKind::Jwt(_)
                | ProviderKind::Introspection(_)
                | ProviderKind::EnvoyJwt(_) => {
                    // The rules this provider had before a reload, for the proofs issued under them.
                    let before = running_entry
                        .and_then(|(_, _, e)| e.dpop.as_ref())
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
                env.upstream
                    .client(tls, http::Purpose::Calls, secrets)
                    .map_err(|source| BuildError::Tls { index, source })
            };
            let key_tls_client = |tls| {
                env.upstream
                    .client(tls, http::Purpose::Keys, secrets)
                    .map_err(|source| BuildError::Tls { index, source })
            };
            let running_opaque = unchanged.and_then(|(_, _, e)| match &e.kind {
                Kind::Opaque(opaque) => Some(Arc::clone(opaque)),
                _ => None,
            });
            let kind = match (&provider.kind, running_opaque) {
                (_, Some(opaque)) => Kind::Opaque(opaque),
                (ProviderKind::Jwt(c), None) => {
                    // `jwt_entries` is in entry order: the running provider's `jwt` index by search.
                    let running = unchanged.and_then(|(p, index, _)| {
                        let k = p.jwt_entries.binary_search(&index).ok()?;
                        p.jwt.providers().get(k)
                    });
                    let store = match running {
                        Some(running) => Arc::clone(running.keys()),
                        None => Arc::new(jwt_key_store(
                            index,
                            &name,
                            c,
                            secrets,
                            key_tls_client(&c.tls)?,
                            recorder,
                        )?),
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
                        recorder,
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
                        recorder,
                    )
                    .map_err(url_err)?;
                    Kind::Opaque(Arc::new(Opaque::Webhook(provider)))
                }
                (ProviderKind::Github(c), None) => {
                    let http = tls_client(&crate::config::TlsSettings::default())?;
                    let provider = github::Github::new(provider, c, http, clock.clone(), recorder);
                    Kind::Opaque(Arc::new(Opaque::Github(provider)))
                }
                (ProviderKind::ApiKey(c), None) => {
                    let keys = api_key::ApiKeys::new(
                        Arc::clone(&name),
                        c,
                        &provider.claims_mapping,
                        secrets,
                    )
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
                        recorder,
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
            recorder,
        );
        if let Some(previous) = previous {
            jwt = jwt.keeping_limit_of(&previous.jwt);
        }
        // A cached token names its provider by index: keep the cache only when the `jwt` providers are the
        // same ones, unchanged, in the same order.
        let kept_names: std::collections::HashSet<&Arc<str>> = kept.iter().collect();
        let same_jwt_providers = |p: &Providers| {
            p.jwt_entries.len() == jwt_entries.len()
                && jwt_entries.iter().zip(&p.jwt_entries).all(|(&new, &old)| {
                    entries[new].name == p.entries[old].name
                        && kept_names.contains(&entries[new].name)
                })
        };
        if let Some(previous) = previous.filter(|p| same_jwt_providers(p)) {
            jwt = jwt.keeping_cache_of(&previous.jwt);
        }
        drop(kept_names);
        Ok(Providers {
            tables: super::tables::Tables::new(&entries),
            entries,
            jwt,
            jwt_entries,
            replay,
            replay_entries,
            kept,
        })
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
    secrets: &Sources,
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

fn jwt_key_store(
    index: usize,
    name: &Arc<str>,
    c: &crate::config::JwtProviderConfig,
    secrets: &Sources,
    http: Arc<dyn http::HttpClient>,
    recorder: &dyn crate::recorder::Recorder,
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
            let body = secrets.read(path).map_err(|source| BuildError::JwksFile {
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
                http,
                c.issuer.clone(),
                c.jwks_uri.as_deref(),
                allowed,
                c.jwks.clone(),
                c.dangerous_allow_plain_http,
                recorder,
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
