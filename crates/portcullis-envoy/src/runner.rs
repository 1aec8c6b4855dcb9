//! The module's background: one small tokio runtime (one worker thread, started with the first filter
//! config that needs it and kept for the life of the process) on which
//! - each filter config's background work runs ([`Background`], stopped when the config is destroyed):
//!   its key sets behind `jwks_uri` or discovery fetched and refreshed, its API key files reloaded when
//!   they change (`portcullis_io::spawn_background`, the server's runners);
//! - every upstream HTTP call is made ([`upstream`]: the server's `ReqwestUpstream`, calling on this
//!   runtime). A call is spawned onto the runtime and awaited through a channel, so the future a
//!   decision holds can be polled on Envoy's worker thread, which has no tokio context.
//!
//! - every paused decision is driven to completion ([`resume`]), its result handed to a callback that
//!   wakes the stream's worker (Envoy's scheduler, in `ffi`).
//!
//! Envoy's workers never block on it.

use std::sync::OnceLock;
use std::time::Duration;

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

/// Why a paused decision has no answer: it panicked, or the background runtime could not take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    Panicked,
    NoRuntime,
}

/// Drives `decision` to completion on the background runtime and calls `done` there with its result
/// (a panic in the decision is caught: `Err(Failed::Panicked)`). Without a runtime, `done` is called
/// at once with `Err(Failed::NoRuntime)`.
pub fn resume<T: Send + 'static>(
    decision: futures_util::future::BoxFuture<'static, T>,
    done: impl FnOnce(Result<T, Failed>) + Send + 'static,
) {
    let handle = match handle() {
        Ok(handle) => handle,
        Err(_) => return done(Err(Failed::NoRuntime)),
    };
    // The decision runs as its own task so that a panic in it ends only that task (tokio catches it
    // and reports it through the JoinHandle); `done` runs in the task that awaits it.
    let decision = handle.spawn(decision);
    handle.spawn(async move {
        done(decision.await.map_err(|_| Failed::Panicked));
    });
}

/// How often a `config_file` is read to see whether it changed (as `serve --config` does).
pub const POLL: Duration = Duration::from_secs(1);
/// How long a changed file must read the same before it is reloaded.
pub const SETTLE: Duration = Duration::from_millis(200);
/// How old a changed file's modification time must be before it is reloaded: a writer that pauses
/// for less than this between chunks is never read half-way.
pub const QUIET: Duration = Duration::from_secs(2);

/// Watches `path` on the background runtime: every [`POLL`], reads it; when its SHA-256 differs from
/// the last one seen (`digest` at first), and it reads the same again [`SETTLE`] later, and its
/// modification time is [`QUIET`] old, calls `changed` with its bytes (once per change: a broken file
/// is not retried until it changes again). A file that cannot be read is skipped until it can.
/// Dropping the returned [`Background`] stops the watch.
pub fn watch_file(
    path: std::path::PathBuf,
    digest: [u8; 32],
    mut changed: impl FnMut(Vec<u8>) + Send + 'static,
) -> Result<Background, &'static str> {
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    handle()?.spawn(async move {
        let mut seen = digest;
        loop {
            tokio::time::sleep(POLL).await;
            if stop.is_cancelled() {
                return;
            }
            let Ok(bytes) = tokio::fs::read(&path).await else {
                continue;
            };
            if crate::settings::digest(&bytes) == seen {
                continue;
            }
            tokio::time::sleep(SETTLE).await;
            match tokio::fs::read(&path).await {
                Ok(again) if again == bytes => {}
                _ => continue,
            }
            let quiet = tokio::fs::metadata(&path)
                .await
                .and_then(|m| m.modified())
                .ok()
                .and_then(|modified| std::time::SystemTime::now().duration_since(modified).ok())
                .is_some_and(|age| age >= QUIET);
            if !quiet || stop.is_cancelled() {
                continue;
            }
            seen = crate::settings::digest(&bytes);
            changed(bytes);
        }
    });
    Ok(Background { cancel })
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant, SystemTime};

    use portcullis_core::config::MemoryFiles;
    use portcullis_core::providers::Outcome;
    use portcullis_core::{Config, Env};

    use super::*;

    fn keys_file(principal: &str, key: &str) -> String {
        format!(
            "- {{sha256: '{}', principal: {principal}}}\n",
            portcullis_core::hash_key(key)
        )
    }

    /// Called from a thread with no tokio context, as Envoy's main thread calls it.
    #[test]
    fn an_api_key_file_is_reloaded_on_the_background_runtime_until_the_config_goes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.yaml");
        let mut files = MemoryFiles::default();
        files
            .files
            .insert(path.clone(), keys_file("first", "key-1").into_bytes());
        std::fs::write(&path, keys_file("first", "key-1")).unwrap();
        let yaml = format!(
            "providers: [{{name: keys, type: api_key, credential: {{header: x-api-key}}, keys_file: '{}', reload_seconds: 1}}]",
            path.display()
        );
        let config = Config::from_yaml_str(&yaml).unwrap();
        let runtime = Runtime::build(&config, &Env::offline(Clock::system(), files)).unwrap();
        let keys = Arc::clone(runtime.api_key_files().next().unwrap());
        let background = Background::spawn(&runtime, &Clock::system()).unwrap();

        let rewrite = |principal: &str, key: &str, modified: u64| {
            std::fs::write(&path, keys_file(principal, key)).unwrap();
            // A modification time of its own, whatever the file system's granularity.
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(modified))
                .unwrap();
        };
        // Rewritten until seen: a change made before the reloader first looks is not one it can see.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut modified = 1_000_000;
        while !matches!(keys.authenticate("key-2"), Outcome::Authenticated(_)) {
            assert!(Instant::now() < deadline, "the keys file was not reloaded");
            modified += 1;
            rewrite("second", "key-2", modified);
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(matches!(keys.authenticate("key-1"), Outcome::Rejected(_)));

        // Once the config is gone its reloader is stopped: three reload intervals see no change.
        drop(background);
        for _ in 0..3 {
            modified += 1;
            rewrite("third", "key-3", modified);
            std::thread::sleep(Duration::from_secs(1));
        }
        assert!(matches!(keys.authenticate("key-3"), Outcome::Rejected(_)));
        assert!(matches!(
            keys.authenticate("key-2"),
            Outcome::Authenticated(_)
        ));
    }
}
