//! [`Env`]: everything a [`crate::Runtime`] needs from its host, given once when it is built. There is no
//! second wiring phase: a runtime is complete when [`crate::Runtime::build`] returns.

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::Sources;
use crate::dpop::SharedSeen;
use crate::providers::http::Upstream;
use crate::recorder::{NoRecorder, Recorder};
use crate::revocation::Denylist;

/// Where generated keys are kept, and how new ones are made: the host's side of the signer. The server
/// keeps them in `identity-keys.json` in `state_dir`, private to its user.
pub trait KeyStorage: Send + Sync {
    /// The stored document in `dir` (see [`KeyStorage::save`]), `None` when there is none yet. The host
    /// creates `dir` and makes it private, or refuses with a message saying what to do.
    fn load(&self, dir: &std::path::Path) -> Result<Option<Vec<u8>>, String>;
    /// Replaces the stored document in `dir`, privately and atomically.
    fn save(&self, dir: &std::path::Path, document: &[u8]) -> std::io::Result<()>;
    /// A new P-256 key, as a PKCS#8 document.
    fn generate(&self) -> Option<Vec<u8>>;
}

/// The host's side of a runtime.
#[derive(Clone)]
pub struct Env {
    /// Time for claim checks and caches.
    pub clock: Clock,
    /// Secrets (environment variables, files) and the files a build reads (`jwks_file`, `keys_file`,
    /// `tls.ca_file`).
    pub sources: Sources,
    /// HTTP clients for introspection, webhooks, GitHub, TokenReview, discovery and key sets.
    pub upstream: Arc<dyn Upstream>,
    /// Where generated identity token keys are kept (`identity_token.state_dir`).
    pub key_storage: Arc<dyn KeyStorage>,
    /// Cache, upstream and verification counts.
    pub recorder: Arc<dyn Recorder>,
    /// Revocations, read by every check; the host feeds it (admin API, Auth0, Redis).
    pub denylist: Arc<Denylist>,
    /// The "seen once" store replicas share (DPoP proof replay); `None`: this process remembers alone.
    pub seen: Option<Arc<dyn SharedSeen>>,
}

// === impl Env ===

impl Env {
    /// An environment with the host's sources, HTTP clients and key storage, recording nothing, with an
    /// empty denylist of its own and no shared store.
    pub fn new(
        clock: Clock,
        sources: Sources,
        upstream: Arc<dyn Upstream>,
        key_storage: Arc<dyn KeyStorage>,
    ) -> Env {
        Env {
            clock,
            sources,
            upstream,
            key_storage,
            recorder: Arc::new(NoRecorder),
            denylist: Arc::default(),
            seen: None,
        }
    }
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("clock", &self.clock)
            .field("shared_seen", &self.seen.is_some())
            .finish_non_exhaustive()
    }
}

/// A host without HTTP: every client it is asked for is refused (a provider that needs one fails its
/// build, saying so).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoUpstream;

impl Upstream for NoUpstream {
    fn client(
        &self,
        _: &crate::config::TlsSettings,
        _: crate::providers::http::Purpose,
        _: &Sources,
    ) -> Result<Arc<dyn crate::providers::http::HttpClient>, crate::providers::http::TlsError> {
        Err(crate::providers::http::TlsError::Client(
            "this host makes no HTTP calls".into(),
        ))
    }
}

/// A host that keeps no identity token keys (a configured `signing_key` still works).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoKeyStorage;

impl KeyStorage for NoKeyStorage {
    fn load(&self, dir: &std::path::Path) -> Result<Option<Vec<u8>>, String> {
        Err(format!(
            "cannot keep generated keys in `{}` here: configure identity_token.signing_key",
            dir.display()
        ))
    }

    fn save(&self, _: &std::path::Path, _: &[u8]) -> std::io::Result<()> {
        Err(std::io::Error::other("no key storage"))
    }

    fn generate(&self) -> Option<Vec<u8>> {
        None
    }
}

impl Env {
    /// An environment that reads `files` and makes no HTTP calls: decision tests, and hosts that resolve
    /// everything up front.
    pub fn offline(clock: Clock, files: crate::config::MemoryFiles) -> Env {
        Env::new(
            clock,
            Sources::new(Arc::new(files)),
            Arc::new(NoUpstream),
            Arc::new(NoKeyStorage),
        )
    }
}
