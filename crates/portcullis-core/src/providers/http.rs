//! Calling upstreams (IdPs, introspection, webhooks, GitHub): the [`Upstream`] seam through which a host
//! makes the calls (the server with reqwest, a module through its proxy), one error type that keeps the
//! detail for the log and never reaches a client, and [`CachedUpstream`], the one way an upstream's answer
//! about a credential is cached and turned into an [`Outcome`].

use std::future::Future;
use std::sync::Arc;

use super::Outcome;
use crate::clock::Clock;
use crate::config::{Secret, SecretRef, Sources, TlsSettings};
use crate::decision::{DenyReason, Unavailable};
use crate::identity::Identity;
use crate::recorder::Recorder;
use crate::recorder::{CacheCounters, UpstreamCalls};

/// Why an upstream call failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The host's client failed (connect, TLS, timeout, a refused redirect); its error is kept for the log.
    #[error("request failed: {0}")]
    RequestFailed(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    #[error("answered HTTP {0}")]
    BadStatus(u16),
    #[error("response is not the expected JSON")]
    BadBody,
    #[error("cannot read the bearer token file `{0}`")]
    TokenFile(std::path::PathBuf),
}

/// An HTTP method an upstream call uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// One call to an upstream, as the engine builds it; the host sends it.
#[derive(Debug)]
pub struct HttpRequest {
    pub method: Method,
    pub url: url::Url,
    /// Header names in lower case.
    pub headers: Vec<(&'static str, String)>,
    /// HTTP Basic credentials (already encoded as RFC 6749 §2.3.1 wants, where it applies).
    pub basic_auth: Option<(String, String)>,
    /// A bearer credential the host resolves at send time (a projected token file is read then).
    pub bearer: Option<BearerToken>,
    pub body: Vec<u8>,
    /// The whole call's deadline; `None`: the client's own.
    pub timeout: Option<std::time::Duration>,
    /// The largest body accepted: a longer one is [`UpstreamError::TooLarge`] (by `Content-Length` and
    /// while reading).
    pub max_body: usize,
}

// === impl HttpRequest ===

impl HttpRequest {
    pub fn new(method: Method, url: url::Url, max_body: usize) -> HttpRequest {
        HttpRequest {
            method,
            url,
            headers: Vec::new(),
            basic_auth: None,
            bearer: None,
            body: Vec::new(),
            timeout: None,
            max_body,
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> HttpRequest {
        self.headers.push((name, value.into()));
        self
    }
}

/// An upstream's answer: its status, its headers (names in lower case), and for a 2xx status its body,
/// read up to the request's `max_body` (a host reads no other body: nothing judges one).
#[derive(Debug, Default)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

// === impl HttpResponse ===

impl HttpResponse {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A client for one provider's TLS settings and [`Purpose`].
pub trait HttpClient: Send + Sync {
    fn send(
        &self,
        request: HttpRequest,
    ) -> futures_util::future::BoxFuture<'static, Result<HttpResponse, UpstreamError>>;
}

/// The host's HTTP side: makes a client for a provider's `tls` settings (trusting only `ca_file`'s CAs,
/// or dangerously any certificate) and purpose (which redirects it follows).
pub trait Upstream: Send + Sync {
    fn client(
        &self,
        tls: &TlsSettings,
        purpose: Purpose,
        sources: &Sources,
    ) -> Result<Arc<dyn HttpClient>, TlsError>;
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
        .eviction_listener(move |_, _, cause| counters.removed(cause.was_evicted()))
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
    /// What the upstream is, for the log (`token introspection`, `auth webhook`, `GitHub`).
    what: &'static str,
    cache: Option<ResultCache<Answer>>,
    counters: CacheCounters,
    calls: UpstreamCalls,
    clock: Clock,
}

// === impl CachedUpstream ===

impl CachedUpstream {
    /// `cache_max_entries` of `None` calls the upstream every time. The cache's hits, misses and
    /// evictions and the calls' durations and failures go to `recorder`, labelled with this upstream's
    /// kind and provider.
    pub fn new(
        name: Arc<str>,
        kind: &'static str,
        what: &'static str,
        cache_max_entries: Option<u64>,
        clock: Clock,
        recorder: &dyn Recorder,
    ) -> CachedUpstream {
        let counters = match cache_max_entries {
            Some(_) => CacheCounters::new(recorder, kind, &name),
            None => CacheCounters::default(),
        };
        CachedUpstream {
            calls: UpstreamCalls::new(recorder, kind, &name),
            name,
            what,
            cache: cache_max_entries.map(|n| result_cache(n, &counters)),
            counters,
            clock,
        }
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
    Client(#[source] Box<dyn std::error::Error + Send + Sync>),
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
        secrets: &Sources,
    ) -> Result<BearerToken, crate::config::secret::SecretError> {
        let value = reference.resolve(secrets)?;
        Ok(match reference {
            SecretRef::File(path) => BearerToken::File(path.clone()),
            SecretRef::Env(_) => BearerToken::Fixed(value),
        })
    }

    /// The `Authorization` header value, `Bearer <token>`, from the token's value (a fixed secret, or a
    /// file's text the host just read).
    pub fn header_from(&self, value: &[u8]) -> Result<String, UpstreamError> {
        let token = String::from_utf8_lossy(value).trim().to_owned();
        if token.is_empty() {
            return Err(UpstreamError::TokenFile(match self {
                BearerToken::File(path) => path.clone(),
                BearerToken::Fixed(_) => std::path::PathBuf::new(),
            }));
        }
        Ok(format!("Bearer {token}"))
    }
}

/// Whether portcullis may call this URL: HTTPS, or plain HTTP to loopback, or anywhere with the provider's
/// `dangerous_allow_plain_http`. Configured URLs are checked by `validate-config`; discovered ones and
/// redirect targets here.
pub fn url_allowed(url: &url::Url, allow_plain_http: bool) -> bool {
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
