//! What the micro-benchmarks share: timing a call by its best window, so that one quiet window
//! on a shared machine suffices. Each bench includes it with `#[path = "support/timing.rs"]
//! mod timing;` (a folder without a main.rs, so cargo does not take it for a bench of its own).

use std::time::Instant;

/// Best seconds per call of `f` over `windows` windows of `reps` calls.
pub fn best_time(windows: usize, reps: usize, mut f: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..windows {
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    best
}
