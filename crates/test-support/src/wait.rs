//! Waiting for eventually-true conditions, and names that do not collide between tests.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Polls `check` until it returns `Ok`, and returns that value.
///
/// `check` returns `Err(last_seen)` while the condition does not hold yet; on timeout the
/// panic message names `what` and shows the last `last_seen`, so a failure explains itself.
/// A single check that hangs is cut off at the deadline.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(50);
    let mut last_seen = String::from("(no check finished)");
    let mut attempts = 0u32;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        attempts += 1;
        match tokio::time::timeout(remaining.max(Duration::from_millis(100)), check()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(seen)) => last_seen = seen,
            Err(_) => last_seen = format!("{last_seen} (then a check hung past the deadline)"),
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} ({attempts} checks) waiting for {what}; last seen: {last_seen}");
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(delay.min(remaining)).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

/// `prefix-` followed by 8 characters unique within the test binary and unlikely to repeat
/// across runs. The result is a valid DNS label (and S3 bucket name) if `prefix` is one and
/// at most 54 characters long.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    assert!(
        !prefix.is_empty()
            && prefix.len() <= 54
            && prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && prefix.as_bytes()[0].is_ascii_alphanumeric(),
        "unique_name prefix {prefix:?} must be a lowercase DNS label of at most 54 characters"
    );
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    // 5 random hex digits, then the counter, so names from one binary never collide.
    let random = rand::random::<u32>() & 0xf_ffff;
    format!("{prefix}-{random:05x}{:03x}", count & 0xfff)
}
