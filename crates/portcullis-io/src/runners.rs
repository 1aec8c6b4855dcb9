//! The background work a runtime needs while it serves, run on tokio: each `jwt` provider's key set
//! refresher and each API key file's reloader, until the runtime is replaced or serving stops.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use portcullis_core::clock::Clock;
use portcullis_core::providers::api_key::ApiKeys;
use portcullis_core::providers::jwks::KeyStore;
use portcullis_core::runtime::Runtime;

/// Starts `runtime`'s background tasks until `cancel`. `clock` schedules the key set refreshes (a test's
/// manual clock drives them).
pub fn spawn_background(runtime: &Runtime, clock: &Clock, cancel: &CancellationToken) {
    for store in runtime.key_stores() {
        tokio::spawn(refresh_keys(
            Arc::clone(store),
            clock.clone(),
            cancel.child_token(),
        ));
    }
    for keys in runtime.api_key_files() {
        tokio::spawn(reload_api_keys(Arc::clone(keys), cancel.child_token()));
    }
}

/// Loads a remote key set, then keeps it fresh until `cancel` (see [`KeyStore::refresh`] for the
/// schedule and the back-off).
async fn refresh_keys(store: Arc<KeyStore>, clock: Clock, cancel: CancellationToken) {
    if !store.is_remote() {
        return;
    }
    // A store kept across a reload was refreshed by the previous runtime's refresher: go on from its
    // schedule rather than fetching again.
    let mut delay = store.first_refresh_in().await;
    let mut started = clock.now();
    let mut failures: u32 = 0;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = sleep_from(&clock, started, delay) => {}
        }
        // The next wait counts from the start of this fetch.
        started = clock.now();
        delay = store.refresh(&mut failures).await;
    }
}

/// Re-reads `keys_file` whenever its modification time changes, until `cancel`. A broken file keeps the
/// keys already loaded.
async fn reload_api_keys(keys: Arc<ApiKeys>, cancel: CancellationToken) {
    let Some(path) = keys.file().map(Path::to_owned) else {
        return;
    };
    let mut seen = modified(&path);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(keys.reload_every()) => {}
        }
        let now = modified(&path);
        if now == seen {
            continue;
        }
        seen = now;
        let result = std::fs::read(&path)
            .map_err(
                |source| portcullis_core::providers::api_key::KeysFileError::Unreadable {
                    path: path.clone(),
                    source,
                },
            )
            .and_then(|bytes| keys.reload(&bytes));
        match result {
            Ok(count) => {
                tracing::info!(provider.name = %keys.name(), api_keys.file_keys = count, "API keys file reloaded")
            }
            Err(error) => {
                tracing::warn!(provider.name = %keys.name(), %error, "API keys file not reloaded; keeping the keys loaded before")
            }
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Waits `duration` counted from `started` (a time `clock` gave): on the system clock a timer of
/// `duration` from now; on a manual clock until it is moved to at least `started` + `duration` (a
/// fraction of a second counts as a whole one), so a test that moves the clock decides when it ends.
pub async fn sleep_from(clock: &Clock, started: i64, duration: Duration) {
    if !clock.is_manual() {
        tokio::time::sleep(duration).await;
        return;
    }
    let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    let deadline = started.saturating_add(i64::try_from(seconds).unwrap_or(i64::MAX));
    loop {
        // Registered before the check, so a move between the check and the wait is not missed.
        let Some(moved) = clock.moved() else { return };
        if clock.now() >= deadline {
            return;
        }
        moved.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_sleep_ends_when_the_clock_passes_its_deadline() {
        let clock = Clock::manual(1000);
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { sleep_from(&clock, 1000, Duration::from_secs(10)).await }
        });
        tokio::task::yield_now().await;
        clock.set(1009);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!sleeper.is_finished(), "one second short");
        clock.set(1010);
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("woken at the deadline")
            .unwrap();
        // A wait whose deadline has passed returns at once.
        sleep_from(&clock, 1005, Duration::from_secs(5)).await;
    }
}
