//! Load generator for `benches/serve.sh`: `clients` threads send `requests` OpenAI-style
//! embedding requests (one text of about `tokens` tokens each, every text different) to `url`
//! and print one JSON line: requests/s, tokens/s, p50/p99 latency, errors.
//!
//! `bench_serve URL MODEL CLIENTS REQUESTS TOKENS`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WORDS: &[&str] = &[
    "the", "river", "market", "quiet", "engine", "paper", "summer", "light", "window", "stone",
    "garden", "music", "signal", "forest", "number", "travel", "winter", "ocean", "letter",
    "bridge", "story", "silver", "morning", "planet", "coffee", "school", "mountain", "yellow",
];

/// A text of about `tokens` tokens (common English words are one token each with the Qwen
/// tokenizer), different for every `seed`.
fn text(seed: usize, tokens: usize) -> String {
    let mut words = vec![format!("request {seed}:")];
    let mut x = seed as u64 * 2654435761 + 12345;
    while words.len() + 3 < tokens {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        words.push(WORDS[(x >> 33) as usize % WORDS.len()].to_string());
    }
    words.join(" ")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: bench_serve URL MODEL CLIENTS REQUESTS TOKENS");
        std::process::exit(2);
    }
    let url = args[1].clone();
    let model = args[2].clone();
    let parse = |i: usize| -> usize { args[i].parse().expect("a number") };
    let (clients, requests, tokens) = (parse(3), parse(4), parse(5));

    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(requests)));
    let errors = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (next, latencies, errors) = (next.clone(), latencies.clone(), errors.clone());
            let (url, model) = (url.clone(), model.clone());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(3600))
                    .build();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= requests {
                        return;
                    }
                    let body = serde_json::json!({"model": model, "input": [text(i, tokens)]});
                    let sent = Instant::now();
                    let ok = agent
                        .post(&url)
                        .set("Content-Type", "application/json")
                        .send_string(&body.to_string())
                        .ok()
                        .and_then(|r| r.into_json::<serde_json::Value>().ok())
                        .is_some_and(|v| {
                            v["data"][0]["embedding"]
                                .as_array()
                                .is_some_and(|e| !e.is_empty())
                        });
                    if ok {
                        latencies.lock().unwrap().push(sent.elapsed());
                    } else {
                        errors.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client thread panicked");
    }
    let wall = started.elapsed().as_secs_f64();
    let mut l = latencies.lock().unwrap().clone();
    l.sort();
    let pct = |p: f64| {
        if l.is_empty() {
            f64::NAN
        } else {
            l[((l.len() as f64 - 1.0) * p).round() as usize].as_secs_f64()
        }
    };
    println!(
        "{}",
        serde_json::json!({
            "clients": clients, "requests": requests, "tokens": tokens,
            "ok": l.len(), "errors": errors.load(Ordering::SeqCst),
            "seconds": wall, "requests_per_s": l.len() as f64 / wall,
            "p50_s": pct(0.5), "p99_s": pct(0.99),
        })
    );
}
