//! Prometheus metrics of `qzhou serve` (`GET /metrics`), recorded through the `metrics` facade.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `qzhou_requests_total` | counter | `route`, `status` |
//! | `qzhou_request_duration_seconds` | histogram | `route` |
//! | `qzhou_queue_depth` | gauge | |
//! | `qzhou_queue_rejected_total` | counter (429s) | |
//! | `qzhou_batch_texts` | histogram | |
//! | `qzhou_batch_tokens` | histogram | |
//! | `qzhou_batch_duration_seconds` | histogram | |
//! | `qzhou_tokens_total` | counter (`rate()` of it is tokens/s) | |
//! | `qzhou_batch_tokens_per_second` | gauge (last batch) | |

use std::time::Duration;

use anyhow::{Context, Result};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const COUNTS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];
const TOKENS: &[f64] = &[
    16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0,
];

/// Install the process-wide recorder (histograms with fixed buckets, not summaries).
pub fn install() -> Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)?
        .set_buckets_for_metric(Matcher::Full("qzhou_batch_texts".into()), COUNTS)?
        .set_buckets_for_metric(Matcher::Full("qzhou_batch_tokens".into()), TOKENS)?
        .install_recorder()
        .context("installing the metrics recorder")
}

/// One HTTP request answered.
pub fn request(route: &str, status: u16, elapsed: Duration) {
    counter!("qzhou_requests_total", "route" => route.to_string(), "status" => status.to_string())
        .increment(1);
    histogram!("qzhou_request_duration_seconds", "route" => route.to_string())
        .record(elapsed.as_secs_f64());
}

/// Requests waiting for the model.
pub fn queue_depth(depth: usize) {
    gauge!("qzhou_queue_depth").set(depth as f64);
}

/// A request turned away because the queue was full.
pub fn queue_rejected() {
    counter!("qzhou_queue_rejected_total").increment(1);
}

/// One model call: `texts` inputs holding `tokens` tokens (unpadded) in `elapsed`.
pub fn batch(texts: usize, tokens: usize, elapsed: Duration) {
    histogram!("qzhou_batch_texts").record(texts as f64);
    histogram!("qzhou_batch_tokens").record(tokens as f64);
    histogram!("qzhou_batch_duration_seconds").record(elapsed.as_secs_f64());
    counter!("qzhou_tokens_total").increment(tokens as u64);
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        gauge!("qzhou_batch_tokens_per_second").set(tokens as f64 / seconds);
    }
}
