//! Injectable wall-clock time for claim checks (`exp`, `nbf`, `iat`, `auth_time`) and for the waits that
//! schedule background work (key set refreshes).
//!
//! tokio's paused time does not move `SystemTime`, so tests that need a moving clock use [`Clock::manual`];
//! [`Clock::sleep`] on a manual clock ends when a test moves the clock past its deadline.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

/// Seconds since the Unix epoch, from the system or from a test.
#[derive(Clone, Debug, Default)]
pub struct Clock(Option<Arc<Manual>>);

/// A test's clock: the time it was set to, and a signal for sleepers when it moves.
#[derive(Debug, Default)]
struct Manual {
    now: AtomicI64,
    moved: Notify,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock(None)
    }

    /// A clock that stands still at `now` until [`Clock::set`] moves it.
    pub fn manual(now: i64) -> Clock {
        Clock(Some(Arc::new(Manual {
            now: AtomicI64::new(now),
            moved: Notify::new(),
        })))
    }

    /// Moves a manual clock (waking the sleepers whose deadline it passes); does nothing to the system clock.
    pub fn set(&self, now: i64) {
        if let Some(manual) = &self.0 {
            manual.now.store(now, Ordering::SeqCst);
            manual.moved.notify_waiters();
        }
    }

    pub fn now(&self) -> i64 {
        match &self.0 {
            Some(manual) => manual.now.load(Ordering::SeqCst),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
        }
    }

    /// Waits `duration` counted from `started` (a time this clock gave): on the system clock a timer of
    /// `duration` from now; on a manual clock until it is moved to at least `started` + `duration` (a
    /// fraction of a second counts as a whole one), so a test that moves the clock decides when it ends.
    pub async fn sleep_from(&self, started: i64, duration: Duration) {
        let Some(manual) = &self.0 else {
            tokio::time::sleep(duration).await;
            return;
        };
        let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
        let deadline = started.saturating_add(i64::try_from(seconds).unwrap_or(i64::MAX));
        loop {
            let moved = manual.moved.notified();
            tokio::pin!(moved);
            // Registered before the check, so a move between the check and the wait is not missed.
            moved.as_mut().enable();
            if manual.now.load(Ordering::SeqCst) >= deadline {
                return;
            }
            moved.await;
        }
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
            async move { clock.sleep_from(1000, Duration::from_secs(10)).await }
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
        clock.sleep_from(1005, Duration::from_secs(5)).await;
    }
}
