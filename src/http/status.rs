//! The status page at `GET /`: one self-contained HTML file (no external assets) that polls
//! `GET /stats` and shows the models, the request rate, latency percentiles and a latency chart.

use super::wire::Response;
use super::State;
use serde_json::json;
use std::sync::atomic::Ordering;

const PAGE: &str = include_str!("status.html");

pub fn page() -> Response {
    Response::new(200, "text/html; charset=utf-8", PAGE.as_bytes().to_vec())
        // The page needs nothing from elsewhere; say so to the browser too.
        .with_header(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
        )
}

/// The `p`-th percentile (0..=100) of sorted values, nearest rank.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

pub fn stats(state: &State) -> Response {
    let recent = state.metrics.recent();
    let mut latencies: Vec<f64> = recent.iter().map(|&(_, ms)| ms).collect();
    latencies.sort_by(f64::total_cmp);
    // The rate over the last 10 s (or the part of it the window covers).
    let last_10s = recent.iter().filter(|&&(age, _)| age <= 10.0).count();
    let models: Vec<_> = state
        .repository
        .list()
        .iter()
        .map(|m| json!({ "name": m.name, "inputs": m.inputs.len(), "outputs": m.outputs.len(), "batchable": m.batchable }))
        .collect();
    Response::json(
        200,
        &json!({
            "version": crate::version(),
            "uptime_s": state.metrics.uptime().as_secs_f64(),
            "models": models,
            "requests_per_s": last_10s as f64 / 10.0,
            "latency_ms": {
                "p50": percentile(&latencies, 50.0),
                "p90": percentile(&latencies, 90.0),
                "p99": percentile(&latencies, 99.0),
            },
            "recent": recent.iter().map(|&(age, ms)| [age, ms]).collect::<Vec<_>>(),
            "in_flight": state.metrics.in_flight.load(Ordering::Relaxed),
            "queue_depth": state.metrics.queue_depth.load(Ordering::Relaxed),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[3.0], 90.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
