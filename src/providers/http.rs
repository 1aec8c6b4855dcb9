//! Calling upstreams (IdPs, introspection, webhooks, GitHub): bounded bodies and one error type that keeps
//! the detail for the log and never reaches a client.

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

pub fn result_cache<V: Clone + Send + Sync + 'static>(max_entries: u64) -> ResultCache<V> {
    moka::future::Cache::builder()
        .max_capacity(max_entries.max(1))
        .expire_after(TimedExpiry)
        .build()
}
