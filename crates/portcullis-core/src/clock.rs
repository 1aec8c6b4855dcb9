//! Injectable wall-clock time for claim checks (`exp`, `nbf`, `iat`, `auth_time`) and for the waits that
//! schedule background work (key set refreshes).
//!
//! tokio's paused time does not move `SystemTime`, so tests that need a moving clock use [`Clock::manual`].
//! The engine never waits: a host's runner that schedules work by this clock waits on a timer for the
//! system clock and on [`Clock::moved`] for a manual one, so a test that moves the clock decides when a
//! wait ends.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use event_listener::{Event, EventListener};

/// Seconds since the Unix epoch, from the system or from a test.
#[derive(Clone, Debug, Default)]
pub struct Clock(Option<Arc<Manual>>);

/// A test's clock: the time it was set to, and a signal for sleepers when it moves.
#[derive(Debug, Default)]
struct Manual {
    now: AtomicI64,
    moved: Event,
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
            moved: Event::new(),
        })))
    }

    /// Moves a manual clock (waking the sleepers whose deadline it passes); does nothing to the system clock.
    pub fn set(&self, now: i64) {
        if let Some(manual) = &self.0 {
            manual.now.store(now, Ordering::SeqCst);
            manual.moved.notify(usize::MAX);
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

    /// The time with microseconds (the decision log's timestamps); a manual clock's whole seconds.
    pub fn now_micros(&self) -> i64 {
        match &self.0 {
            Some(manual) => manual.now.load(Ordering::SeqCst).saturating_mul(1_000_000),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
                .unwrap_or(0),
        }
    }

    /// Whether this is a test's clock.
    pub fn is_manual(&self) -> bool {
        self.0.is_some()
    }

    /// For a manual clock, a listener that fires when the clock is next moved (registered now, so a move
    /// between this call and the wait is not missed); `None` for the system clock.
    pub fn moved(&self) -> Option<EventListener> {
        self.0.as_ref().map(|manual| manual.moved.listen())
    }
}
