//! Injectable wall-clock time for claim checks (`exp`, `nbf`, `iat`, `auth_time`).
//!
//! tokio's paused time does not move `SystemTime`, so tests that need a moving clock use [`Clock::manual`].

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, from the system or from a test.
#[derive(Clone, Debug, Default)]
pub struct Clock(Option<Arc<AtomicI64>>);

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock(None)
    }

    /// A clock that stands still at `now` until [`Clock::set`] moves it.
    pub fn manual(now: i64) -> Clock {
        Clock(Some(Arc::new(AtomicI64::new(now))))
    }

    /// Moves a manual clock; does nothing to the system clock.
    pub fn set(&self, now: i64) {
        if let Some(cell) = &self.0 {
            cell.store(now, Ordering::Relaxed);
        }
    }

    pub fn now(&self) -> i64 {
        match &self.0 {
            Some(cell) => cell.load(Ordering::Relaxed),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
        }
    }
}
