//! The module's background: one small tokio runtime (one worker thread, started with the first filter
//! config that needs it and kept for the life of the process) on which
//! - each filter config's background work runs ([`Background`], stopped when the config is destroyed):
//!   its key sets behind `jwks_uri` or discovery fetched and refreshed, its API key files reloaded when
//!   they change (`portcullis_io::spawn_background`, the server's runners);
//! - every upstream HTTP call is made ([`upstream`]: the server's `ReqwestUpstream`, calling on this
//!   runtime). A call is spawned onto the runtime and awaited through a channel, so the future a
//!   decision holds can be polled on Envoy's worker thread, which has no tokio context.
//!
//! Envoy's workers never block on it: a decision that still waits for a call after its inline poll
//! answers 503 (see `filter`).

use std::sync::OnceLock;

use portcullis_core::{Clock, Runtime};
use portcullis_io::ReqwestUpstream;
use tokio_util::sync::CancellationToken;

/// The process's background runtime, or why it could not be started.
fn handle() -> Result<&'static tokio::runtime::Handle, &'static str> {
    static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("portcullis-bg")
                .enable_all()
                .build()
                .ok()
        })
        .as_ref()
        .map(tokio::runtime::Runtime::handle)
        .ok_or("cannot start the module's background thread")
}

/// Upstream HTTP for providers (`User-Agent: portcullis-envoy/VERSION`), every call made on the
/// background runtime; an error when reqwest cannot build its clients.
pub fn upstream() -> Result<ReqwestUpstream, String> {
    const USER_AGENT: &str = concat!("portcullis-envoy/", env!("CARGO_PKG_VERSION"));
    ReqwestUpstream::with_user_agent(USER_AGENT)
        .map(|upstream| upstream.calls_on(handle))
        .map_err(|e| e.to_string())
}

/// One filter config's background tasks; dropping it stops them.
pub struct Background {
    cancel: CancellationToken,
}

impl Background {
    /// Starts `runtime`'s background tasks (remote key set refreshers, API key file reloaders), with
    /// `clock` scheduling the refreshes. The background thread starts only when there is work for it.
    pub fn spawn(runtime: &Runtime, clock: &Clock) -> Result<Background, &'static str> {
        let cancel = CancellationToken::new();
        let idle = !runtime.key_stores().any(|s| s.is_remote())
            && runtime.api_key_files().next().is_none();
        if !idle {
            // `spawn_background` spawns onto the runtime it is called in.
            let _entered = handle()?.enter();
            portcullis_io::spawn_background(runtime, clock, &cancel);
        }
        Ok(Background { cancel })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
