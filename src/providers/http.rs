//! Calling upstreams (IdPs, introspection, webhooks, GitHub): bounded bodies, one error type that keeps
//! the detail for the log and never reaches a client, and [`CachedUpstream`], the one way an upstream's
//! answer about a credential is cached and turned into an [`Outcome`].

use std::future::Future;
use std::sync::Arc;

use super::Outcome;
use crate::clock::Clock;
use crate::config::{Secret, SecretRef, SecretSource, TlsSettings};
use crate::decision::{DenyReason, Unavailable};
use crate::identity::Identity;
use crate::metrics::{CacheCounters, Metrics, UpstreamCalls};

/// Why an upstream call failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("request failed: {0}")]
    RequestFailed(#[source] reqwest::Error),
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    #[error("answered HTTP {0}")]
    BadStatus(u16),
    #[error("response is not the expected JSON")]
    BadBody,
    #[error("cannot read the bearer token file `{0}`")]
    TokenFile(std::path::PathBuf),
}

/// Reads a response body, refusing more than `limit` bytes (by `Content-Length` and while streaming).
pub async fn read_bounded(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, UpstreamError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(UpstreamError::TooLarge(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(UpstreamError::RequestFailed)?
    {
        if body.len() + chunk.len() > limit {
            return Err(UpstreamError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// SHA-256 of a credential: the only form in which a credential is ever used as a cache key.
pub fn digest(credential: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(credential.as_bytes()).into()
}

/// A cached upstream result and how long it may live.
#[derive(Clone)]
pub struct Timed<V> {
    pub value: V,
    pub ttl: std::time::Duration,
}

struct TimedExpiry;

// === impl Expiry ===

impl<V> moka::Expiry<[u8; 32], Timed<V>> for TimedExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Timed<V>,
        _created_at: std::time::Instant,
    ) -> Option<std::time::Duration> {
        Some(value.ttl)
    }
}

/// A cache keyed by credential digest whose entries each carry their own TTL. Use `try_get_with` so that
/// concurrent misses for one credential share one upstream call; errors are never cached.
pub type ResultCache<V> = moka::future::Cache<[u8; 32], Timed<V>>;

/// A [`ResultCache`] of at most `max_entries`, counting its evictions in `counters`.
pub fn result_cache<V: Clone + Send + Sync + 'static>(
    max_entries: u64,
    counters: &CacheCounters,
) -> ResultCache<V> {
    let counters = counters.clone();
    moka::future::Cache::builder()
        .max_capacity(max_entries.max(1))
        .expire_after(TimedExpiry)
        .eviction_listener(move |_, _, cause| counters.removed(cause))
        .build()
}

/// What an upstream said of a credential: the value that is cached.
#[derive(Clone)]
pub enum Answer {
    Accepted(Arc<Identity>),
    Refused(DenyReason),
}

/// An opaque-credential upstream (introspection, webhook, GitHub) with its answer cache: concurrent
/// misses for one credential share one call, answers live as long as the [`Timed`] TTL the call gave,
/// errors are never cached, and an accepted identity past its `exp` is refused.
pub struct CachedUpstream {
    name: Arc<str>,
    /// The kind of upstream, the metric label (`introspection`, `webhook`, `github`, `kubernetes`).
    kind: &'static str,
    /// What the upstream is, for the log (`token introspection`, `auth webhook`, `GitHub`).
    what: &'static str,
    cache: Option<ResultCache<Answer>>,
    counters: CacheCounters,
    calls: UpstreamCalls,
    clock: Clock,
}

// === impl CachedUpstream ===

impl CachedUpstream {
    /// `cache_max_entries` of `None` calls the upstream every time.
    pub fn new(
        name: Arc<str>,
        kind: &'static str,
        what: &'static str,
        cache_max_entries: Option<u64>,
        clock: Clock,
    ) -> CachedUpstream {
        let counters = CacheCounters::default();
        CachedUpstream {
            name,
            kind,
            what,
            cache: cache_max_entries.map(|n| result_cache(n, &counters)),
            counters,
            calls: UpstreamCalls::default(),
            clock,
        }
    }

    /// Reports the cache's hits, misses and evictions and the calls' durations and failures into
    /// `metrics`, labelled with this upstream's kind and provider.
    pub fn use_metrics(&self, metrics: &Metrics) {
        if self.cache.is_some() {
            self.counters.bind(metrics, self.kind, &self.name);
        }
        self.calls.bind(metrics, self.kind, &self.name);
    }

    /// The cached answer for `credential`, else `call`'s.
    pub async fn authenticate(
        &self,
        credential: &str,
        call: impl Future<Output = Result<Timed<Answer>, UpstreamError>>,
    ) -> Outcome {
        let now = self.clock.now();
        let call = async {
            let start = std::time::Instant::now();
            let result = call.await;
            self.calls.observe(start.elapsed(), result.is_ok());
            result
        };
        let answer = match &self.cache {
            // Concurrent misses for one credential share one call; only the caller that ran it counts
            // a miss.
            Some(cache) => match cache
                .entry(digest(credential))
                .or_try_insert_with(call)
                .await
            {
                Ok(entry) => {
                    if entry.is_fresh() {
                        self.counters.miss();
                    } else {
                        self.counters.hit();
                    }
                    Ok(entry.into_value())
                }
                Err(error) => {
                    self.counters.miss();
                    Err(error)
                }
            },
            None => call.await.map_err(Arc::new),
        };
        match answer {
            Ok(Timed {
                value: Answer::Accepted(identity),
                ..
            }) if identity.expires_at > now => Outcome::Authenticated(identity),
            Ok(Timed {
                value: Answer::Accepted(_),
                ..
            }) => Outcome::Rejected(DenyReason::Expired),
            Ok(Timed {
                value: Answer::Refused(reason),
                ..
            }) => Outcome::Rejected(reason),
            Err(error) => {
                tracing::warn!(provider.name = %self.name, upstream = self.what, %error, "upstream unavailable");
                Outcome::Unavailable(Unavailable::Upstream)
            }
        }
    }
}

/// The client of introspection, webhook and GitHub calls: redirects are never followed, so a 307 cannot
/// re-POST a token and client secret to another host (a 3xx is an unavailable upstream).
pub fn client() -> reqwest::Client {
    builder().build().unwrap_or_else(|_| reqwest::Client::new())
}

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
}

/// What a client is for, which sets the redirects it follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Introspection, webhook, GitHub and TokenReview calls: no redirects.
    Calls,
    /// Discovery and key set GETs: the [`key_client`] redirect policy.
    Keys,
}

/// Why a provider's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{0}` holds no PEM certificate")]
    NoCertificate(std::path::PathBuf),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// The client for one provider's `tls` settings: `shared` when they are the defaults, else a client of its
/// own trusting only `ca_file`'s CAs, or (dangerously) any certificate.
pub fn client_for(
    shared: &reqwest::Client,
    tls: &TlsSettings,
    purpose: Purpose,
) -> Result<reqwest::Client, TlsError> {
    let builder = || match purpose {
        Purpose::Calls => builder(),
        Purpose::Keys => key_builder(),
    };
    if let Some(path) = &tls.ca_file {
        let pem = std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.clone(),
            source,
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| TlsError::NoCertificate(path.clone()))?;
        return builder()
            .tls_certs_only(certs)
            .build()
            .map_err(TlsError::Client);
    }
    if tls.insecure_skip_verify {
        return builder()
            .tls_danger_accept_invalid_certs(true)
            .build()
            .map_err(TlsError::Client);
    }
    Ok(shared.clone())
}

/// A bearer credential portcullis presents to an upstream (a key set behind the Kubernetes API server, a
/// TokenReview): a value resolved at start, or a file read again at every use, so a rotated token (a
/// projected service-account token) is picked up.
#[derive(Debug, Clone)]
pub enum BearerToken {
    Fixed(Secret),
    File(std::path::PathBuf),
}

// === impl BearerToken ===

impl BearerToken {
    /// Resolves `reference`; a file must be readable now, so a missing one fails at start.
    pub fn new(
        reference: &SecretRef,
        secrets: &SecretSource,
    ) -> Result<BearerToken, crate::config::secret::SecretError> {
        let value = reference.resolve(secrets)?;
        Ok(match reference {
            SecretRef::File(path) => BearerToken::File(path.clone()),
            SecretRef::Env(_) => BearerToken::Fixed(value),
        })
    }

    /// The `Authorization` header value, `Bearer <token>`.
    pub async fn header(&self) -> Result<String, UpstreamError> {
        let token = match self {
            BearerToken::Fixed(secret) => String::from_utf8_lossy(secret.expose()).into_owned(),
            BearerToken::File(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|_| UpstreamError::TokenFile(path.clone()))?
                .trim()
                .to_owned(),
        };
        if token.is_empty() {
            return Err(UpstreamError::TokenFile(match self {
                BearerToken::File(path) => path.clone(),
                BearerToken::Fixed(_) => std::path::PathBuf::new(),
            }));
        }
        Ok(format!("Bearer {token}"))
    }
}

/// The client of discovery and key set GETs: at most 3 redirects, each to a URL [`url_allowed`] without
/// the plain-HTTP opt-in (HTTPS, or plain HTTP to loopback).
pub fn key_client() -> reqwest::Client {
    key_builder()
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

fn key_builder() -> reqwest::ClientBuilder {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() >= 3 {
            attempt.error("too many redirects")
        } else if !url_allowed(attempt.url(), false) {
            attempt.error("redirect to a plain-HTTP URL")
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder()
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(5))
        .redirect(policy)
}

/// Whether portcullis may call this URL: HTTPS, or plain HTTP to loopback, or anywhere with the provider's
/// `dangerous_allow_plain_http`. Configured URLs are checked by `validate-config`; discovered ones and
/// redirect targets here.
pub fn url_allowed(url: &reqwest::Url, allow_plain_http: bool) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => {
            allow_plain_http
                || match url.host() {
                    Some(url::Host::Domain(d)) => d == "localhost",
                    Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                    Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                    None => false,
                }
        }
        _ => false,
    }
}
