//! The proof `jti` replay cache (RFC 9449 §11.1): in-process, bounded, keyed by a SHA-256 digest so no
//! proof content is kept. A full cache of unexpired entries refuses new proofs instead of forgetting one:
//! forgetting would let a captured proof be replayed.
//!
//! The call is async so that a shared store (several replicas) can stand behind the same
//! [`ReplayCache::first_use`] later; its error means "cannot tell", and callers deny on it.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use crate::clock::Clock;

/// The replay store could not answer (full of unexpired entries, or a shared store unreachable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("DPoP replay protection is unavailable")]
pub struct ReplayUnavailable;

/// A "seen once" store shared by every replica (the `state` layer's Redis): with it, a proof used on one
/// replica is a replay on all of them.
pub trait SharedSeen: Send + Sync + std::fmt::Debug {
    /// As [`ReplayCache::first_use`]; an error means the store cannot answer.
    fn first_use(
        &self,
        digest: [u8; 32],
        expires_at: i64,
    ) -> Pin<Box<dyn Future<Output = Result<bool, ReplayUnavailable>> + Send + '_>>;
}

/// Remembers each proof digest until its expiry: in this process, or in a [`SharedSeen`] store when the
/// host gives one.
#[derive(Debug)]
pub struct ReplayCache {
    seen: Mutex<HashMap<[u8; 32], i64>>,
    capacity: usize,
    clock: Clock,
    shared: Option<Arc<dyn SharedSeen>>,
    /// The cache this one replaced on a reload that changed the capacity, still consulted.
    previous: Option<Arc<ReplayCache>>,
}

// === impl ReplayCache ===

impl ReplayCache {
    /// With `shared`, digests are kept there (every replica sees them), not in this process.
    pub fn new(capacity: usize, clock: Clock, shared: Option<Arc<dyn SharedSeen>>) -> ReplayCache {
        ReplayCache {
            seen: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            clock,
            shared,
            previous: None,
        }
    }

    /// A cache of another capacity that replaces `previous` on reload. It consults `previous` too (which
    /// the old runtime may still write while its last checks finish), so a proof remembered there is a
    /// replay here: forgetting one on reload would let it be replayed.
    pub fn replacing(
        capacity: usize,
        clock: Clock,
        previous: &Arc<ReplayCache>,
        shared: Option<Arc<dyn SharedSeen>>,
    ) -> ReplayCache {
        let mut cache = ReplayCache::new(capacity, clock, shared);
        cache.previous = Some(Arc::clone(previous));
        cache
    }

    /// Whether this cache, or one it replaced, remembers `digest` at `now`.
    fn remembers(&self, digest: &[u8; 32], now: i64) -> Result<bool, ReplayUnavailable> {
        let seen = self.seen.lock().map_err(|_| ReplayUnavailable)?;
        if seen.get(digest).is_some_and(|&until| until > now) {
            return Ok(true);
        }
        drop(seen);
        match &self.previous {
            Some(previous) => previous.remembers(digest, now),
            None => Ok(false),
        }
    }

    /// `Ok(true)` the first time `digest` is seen before `expires_at` (Unix seconds), `Ok(false)` for a
    /// replay. The digest is remembered until `expires_at`.
    pub async fn first_use(
        &self,
        digest: [u8; 32],
        expires_at: i64,
    ) -> Result<bool, ReplayUnavailable> {
        if let Some(shared) = &self.shared {
            return shared.first_use(digest, expires_at).await;
        }
        let now = self.clock.now();
        if let Some(previous) = &self.previous {
            if previous.remembers(&digest, now)? {
                return Ok(false);
            }
        }
        let mut seen = self.seen.lock().map_err(|_| ReplayUnavailable)?;
        if let Some(&until) = seen.get(&digest) {
            if until > now {
                return Ok(false);
            }
        }
        if seen.len() >= self.capacity && !seen.contains_key(&digest) {
            seen.retain(|_, until| *until > now);
            if seen.len() >= self.capacity {
                return Err(ReplayUnavailable);
            }
        }
        seen.insert(digest, expires_at);
        Ok(true)
    }

    /// How many digests are held (expired ones included until the next purge).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.lock().map_or(0, |s| s.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_digest_is_fresh_once_until_it_expires() {
        let clock = Clock::manual(1_000);
        let cache = ReplayCache::new(10, clock.clone(), None);
        assert_eq!(cache.first_use([1; 32], 1_300).await, Ok(true));
        assert_eq!(cache.first_use([1; 32], 1_300).await, Ok(false));
        assert_eq!(cache.first_use([2; 32], 1_300).await, Ok(true));
        clock.set(1_300);
        assert_eq!(cache.first_use([1; 32], 1_600).await, Ok(true));
    }

    #[tokio::test]
    async fn a_cache_of_another_size_keeps_what_the_old_one_remembered() {
        let clock = Clock::manual(1_000);
        let old = Arc::new(ReplayCache::new(10, clock.clone(), None));
        assert_eq!(old.first_use([1; 32], 1_300).await, Ok(true));
        assert_eq!(old.first_use([2; 32], 1_300).await, Ok(true));
        assert_eq!(old.first_use([3; 32], 999).await, Ok(true));
        for capacity in [1, 100] {
            let new = ReplayCache::replacing(capacity, clock.clone(), &old, None);
            assert_eq!(new.first_use([1; 32], 1_300).await, Ok(false), "{capacity}");
            assert_eq!(new.first_use([2; 32], 1_300).await, Ok(false), "{capacity}");
        }
        // The old runtime's last checks still write the old cache: the new one sees those too.
        let new = ReplayCache::replacing(10, clock.clone(), &old, None);
        assert_eq!(old.first_use([5; 32], 1_300).await, Ok(true));
        assert_eq!(new.first_use([5; 32], 1_300).await, Ok(false));
        assert_eq!(new.first_use([6; 32], 1_300).await, Ok(true));
        // What the old cache remembered has expired: fresh again.
        clock.set(1_300);
        assert_eq!(new.first_use([1; 32], 1_600).await, Ok(true));
    }

    #[tokio::test]
    async fn a_full_cache_refuses_rather_than_forgets() {
        let clock = Clock::manual(1_000);
        let cache = ReplayCache::new(2, clock.clone(), None);
        assert_eq!(cache.first_use([1; 32], 1_100).await, Ok(true));
        assert_eq!(cache.first_use([2; 32], 1_200).await, Ok(true));
        assert_eq!(
            cache.first_use([3; 32], 1_200).await,
            Err(ReplayUnavailable)
        );
        // The remembered ones still are.
        assert_eq!(cache.first_use([1; 32], 1_100).await, Ok(false));
        clock.set(1_100);
        // [1] expired: purged to make room.
        assert_eq!(cache.first_use([3; 32], 1_200).await, Ok(true));
        assert_eq!(cache.len(), 2);
    }
}
