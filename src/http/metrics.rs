//! Counters, gauges and histograms for `GET /metrics` (Prometheus text format 0.0.4), and the
//! recent-latency window the status page draws.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Upper bounds in seconds of the latency buckets (a typical range from sub-millisecond models
/// to multi-second ones).
const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
/// How many recent requests the status page's percentiles and chart cover.
const RECENT: usize = 512;

#[derive(Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram { bounds, counts: vec![0; bounds.len()], sum: 0.0, count: 0 }
    }

    fn observe(&mut self, v: f64) {
        if let Some(k) = self.bounds.iter().position(|&b| v <= b) {
            self.counts[k] += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", self.count);
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

pub struct Metrics {
    started: Instant,
    /// (endpoint, model, status) -> count.
    requests: Mutex<BTreeMap<(&'static str, String, u16), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    batch_sizes: Mutex<Histogram>,
    recent: Mutex<VecDeque<(Instant, f64)>>,
    pub in_flight: AtomicI64,
    pub queue_depth: AtomicI64,
    pub load_failures: AtomicU64,
    /// Requests refused by the per-key and per-IP rate limits.
    pub rate_limited_key: AtomicU64,
    pub rate_limited_ip: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            started: Instant::now(),
            requests: Mutex::default(),
            latency: Mutex::default(),
            batch_sizes: Mutex::new(Histogram::new(&BATCH_BUCKETS)),
            recent: Mutex::default(),
            in_flight: AtomicI64::new(0),
            queue_depth: AtomicI64::new(0),
            load_failures: AtomicU64::new(0),
            rate_limited_key: AtomicU64::new(0),
            rate_limited_ip: AtomicU64::new(0),
        }
    }
}

/// A label value with `\`, `"` and newlines escaped, as the text format asks.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// One answered request; `model` is empty when the request named no loaded model (so that
    /// clients cannot grow the label set with made-up names).
    pub fn observe_request(&self, endpoint: &'static str, model: &str, status: u16, elapsed: Duration) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((endpoint, model.to_string(), status))
            .or_default() += 1;
        let seconds = elapsed.as_secs_f64();
        self.latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(endpoint)
            .or_insert_with(|| Histogram::new(&LATENCY_BUCKETS))
            .observe(seconds);
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back((Instant::now(), seconds * 1e3));
    }

    pub fn observe_batch(&self, jobs: usize) {
        self.batch_sizes.lock().unwrap_or_else(|e| e.into_inner()).observe(jobs as f64);
    }

    /// The recent requests' latencies in ms, oldest first, with their age in seconds.
    pub fn recent(&self) -> Vec<(f64, f64)> {
        let now = Instant::now();
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(t, ms)| (now.duration_since(*t).as_secs_f64(), *ms))
            .collect()
    }

    /// Every metric in the Prometheus text format.
    pub fn render(&self, models_loaded: usize) -> String {
        let mut text = String::new();
        let header = |text: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        header(&mut text, "crx580_requests_total", "counter", "HTTP requests answered, by endpoint, model and status.");
        for ((endpoint, model, status), n) in self.requests.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                text,
                "crx580_requests_total{{endpoint=\"{endpoint}\",model=\"{}\",status=\"{status}\"}} {n}",
                escape(model)
            );
        }
        header(
            &mut text,
            "crx580_request_duration_seconds",
            "histogram",
            "Time from a request's arrival to its answer, by endpoint.",
        );
        for (endpoint, h) in self.latency.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            h.write(&mut text, "crx580_request_duration_seconds", &format!("endpoint=\"{endpoint}\""));
        }
        header(&mut text, "crx580_batch_size", "histogram", "Requests per model run.");
        self.batch_sizes.lock().unwrap_or_else(|e| e.into_inner()).write(&mut text, "crx580_batch_size", "");
        let gauges: [(&str, &str, f64); 6] = [
            ("crx580_in_flight_requests", "Requests being handled now.", self.in_flight.load(Ordering::Relaxed) as f64),
            (
                "crx580_queue_depth",
                "Inference requests waiting for a worker.",
                self.queue_depth.load(Ordering::Relaxed) as f64,
            ),
            ("crx580_models_loaded", "Models being served.", models_loaded as f64),
            ("crx580_uptime_seconds", "Seconds since the server started.", self.uptime().as_secs_f64()),
            (
                "crx580_process_resident_memory_bytes",
                "Resident memory of the process (0 where unknown).",
                resident_bytes().unwrap_or(0) as f64,
            ),
            (
                "crx580_device_memory_bytes",
                "Bytes of OpenCL device buffers the process holds (0 on the CPU and in builds without OpenCL).",
                crate::backend::device_memory_bytes().unwrap_or(0) as f64,
            ),
        ];
        for (name, help, v) in gauges {
            header(&mut text, name, "gauge", help);
            let _ = writeln!(text, "{name} {v}");
        }
        header(&mut text, "crx580_model_load_failures_total", "counter", "Model loads that failed.");
        let _ = writeln!(text, "crx580_model_load_failures_total {}", self.load_failures.load(Ordering::Relaxed));
        header(
            &mut text,
            "crx580_rate_limited_total",
            "counter",
            "Requests refused with 429, by the limit that refused them.",
        );
        let _ =
            writeln!(text, "crx580_rate_limited_total{{by=\"key\"}} {}", self.rate_limited_key.load(Ordering::Relaxed));
        let _ =
            writeln!(text, "crx580_rate_limited_total{{by=\"ip\"}} {}", self.rate_limited_ip.load(Ordering::Relaxed));
        text
    }
}

/// The process's resident set size, from /proc (Linux); `None` elsewhere.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labels_escaped() {
        let m = Metrics::default();
        m.observe_request("predict", "a\"b", 200, Duration::from_millis(3));
        m.observe_request("predict", "a\"b", 200, Duration::from_secs(20));
        let text = m.render(1);
        assert!(
            text.contains("crx580_requests_total{endpoint=\"predict\",model=\"a\\\"b\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(text.contains("crx580_request_duration_seconds_bucket{endpoint=\"predict\",le=\"0.005\"} 1"));
        assert!(text.contains("crx580_request_duration_seconds_bucket{endpoint=\"predict\",le=\"10\"} 1"));
        assert!(text.contains("crx580_request_duration_seconds_bucket{endpoint=\"predict\",le=\"+Inf\"} 2"));
        assert!(text.contains("crx580_models_loaded 1"));
    }
}
