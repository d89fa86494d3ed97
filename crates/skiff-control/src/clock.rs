//! The control plane's monotonic clock: tokio's, so that tests that pause and advance
//! tokio's time move the reconciler, the scaler and the router's pools together. Outside
//! tests it is the plain monotonic clock.

use std::time::Instant;

/// Now, on the clock the scaler and the pools are fed with.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Seconds since the Unix epoch, for what `describe` shows.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
