//! The provider chain and the contract every provider keeps.
//!
//! A provider looks at one request and answers exactly one [`Outcome`]:
//! - [`Outcome::NoCredential`]: nothing of its kind in the request;
//! - [`Outcome::Authenticated`]: a verified identity;
//! - [`Outcome::Rejected`]: a credential of its kind that failed, with the reason;
//! - [`Outcome::Unavailable`]: it cannot tell, because something it depends on (an IdP) is unavailable.
//!
//! Fail-closed behaviour rests on keeping the last two apart: a rejection is a 401, an unavailable upstream
//! is an error answer that Envoy turns into its `status_on_error`, and neither is ever an allow.

pub mod jwks;
pub mod jwt;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use self::jwks::{AlgSet, KeySet, KeyStore};
use self::jwt::{JwtProvider, JwtProviders};
use crate::clock::Clock;
use crate::config::{Config, ProviderConfig, SecretSource};
use crate::credential::{self, Credential};
use crate::decision::{DenyReason, Identity, Unavailable};
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
    #[error("providers[{index}].shared_secret: {source}")]
    Secret {
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
}

/// Every configured provider, built once at start.
pub struct Providers {
    jwt: JwtProviders,
}

impl Providers {
    /// Builds the providers; resolves secrets from `secrets`. Nothing is fetched yet: see
    /// [`Providers::spawn_refreshers`].
    pub fn from_config(
        config: &Config,
        secrets: &SecretSource,
        http: &reqwest::Client,
        clock: Clock,
    ) -> Result<Providers, BuildError> {
        let mut jwt = Vec::new();
        let mut cache_entries = 0;
        for (index, provider) in config.providers.iter().enumerate() {
            match provider {
                ProviderConfig::Jwt(c) => {
                    let name: Arc<str> = Arc::from(c.name.as_str());
                    let allowed = AlgSet::from_config(&c.algorithms);
                    let store = match (&c.shared_secret, &c.jwks_file) {
                        (Some(secret), _) => {
                            let secret = secret
                                .resolve(secrets)
                                .map_err(|source| BuildError::Secret { index, source })?;
                            KeyStore::fixed(name, KeySet::shared_secret(secret.expose(), allowed))
                        }
                        (None, Some(path)) => {
                            let body =
                                std::fs::read(path).map_err(|source| BuildError::JwksFile {
                                    index,
                                    path: path.clone(),
                                    source,
                                })?;
                            let keys = KeySet::from_jwks(&body, allowed)
                                .map_err(|source| BuildError::Keys { index, source })?;
                            KeyStore::fixed(name, keys)
                        }
                        (None, None) => KeyStore::remote(
                            name,
                            http.clone(),
                            c.issuer.clone(),
                            c.jwks_uri.as_deref(),
                            allowed,
                            c.jwks.clone(),
                        )
                        .map_err(|source| BuildError::Keys { index, source })?,
                    };
                    cache_entries += c.cache.max_entries;
                    jwt.push(JwtProvider::new(c, Arc::new(store)));
                }
            }
        }
        Ok(Providers {
            jwt: JwtProviders::new(jwt, cache_entries, clock),
        })
    }

    /// Starts one background task per remote key set: load now, then keep fresh until `cancel`.
    pub fn spawn_refreshers(&self, cancel: &CancellationToken) {
        for store in self.key_stores() {
            tokio::spawn(Arc::clone(store).run_refresher(cancel.child_token()));
        }
    }

    pub fn key_stores(&self) -> impl Iterator<Item = &Arc<KeyStore>> {
        self.jwt.providers().iter().map(JwtProvider::keys)
    }

    /// Named key stores, for metrics.
    pub fn named_key_stores(&self) -> impl Iterator<Item = (&str, &Arc<KeyStore>)> {
        self.jwt.providers().iter().map(|p| (&**p.name(), p.keys()))
    }

    /// True once every provider's keys are loaded.
    pub fn ready(&self) -> bool {
        self.key_stores().all(|s| s.is_loaded())
    }

    pub fn cached_tokens(&self) -> u64 {
        self.jwt.cached_tokens()
    }

    /// Runs the chain for one request.
    pub async fn authenticate(&self, request: &RequestView<'_>) -> Outcome {
        match credential::bearer(request) {
            Credential::None => Outcome::NoCredential,
            Credential::Malformed(reason) => Outcome::Rejected(reason),
            Credential::Bearer(token)
                if credential::is_jws_shaped(token) && !self.jwt.is_empty() =>
            {
                self.jwt.authenticate(token).await
            }
            Credential::Bearer(_) => Outcome::Rejected(DenyReason::NotAJwt),
        }
    }
}
