//! `qzhou serve` over loopback: OpenAI and TEI routes against the transformers reference and
//! `qzhou embed`, every kind of bad request, 64 concurrent clients, overload (429) and a
//! SIGTERM drain. The official `openai` Python client is exercised by
//! `tests/serve_openai_client.py` (run by `.ci/run`).

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

fn fixture(name: &str) -> PathBuf {
    common::root().join("tests/fixtures").join(name)
}

/// A running `qzhou serve` on a free loopback port; killed when dropped.
struct Server {
    child: Child,
    base: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(extra: &[&str]) -> Self {
        let model = fixture("tiny-qwen2");
        let mut child = Command::new(env!("CARGO_BIN_EXE_qzhou"))
            .args(["serve", "--model", model.to_str().unwrap(), "--port", "0"])
            .args(extra)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start qzhou serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(String::new()));
        let mut base = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            log.lock().unwrap().push_str(&format!("{line}\n"));
            if let Some(rest) = line.split("listening on ").nth(1) {
                base = Some(rest.split_whitespace().next().unwrap().to_string());
                break;
            }
        }
        let Some(base) = base else {
            panic!("qzhou serve did not start: {}", log.lock().unwrap());
        };
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        Self { child, base, log }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer: status, `Retry-After` and the JSON body.
struct Reply {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

fn reply(result: Result<ureq::Response, ureq::Error>) -> Result<Reply, ureq::Error> {
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(e),
    };
    let status = response.status();
    let retry_after = response.header("Retry-After").map(str::to_string);
    let text = response.into_string().unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text:.200}"));
    Ok(Reply {
        status,
        retry_after,
        body,
    })
}

fn post(agent: &ureq::Agent, url: &str, body: &str) -> Result<Reply, ureq::Error> {
    reply(
        agent
            .post(url)
            .set("Content-Type", "application/json")
            .send_string(body),
    )
}

fn post_ok(url: &str, body: &Value) -> Value {
    let r = post(&ureq::agent(), url, &body.to_string()).unwrap();
    assert_eq!(r.status, 200, "{url} {body:.300}: {}", r.body);
    r.body
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn openai_vectors(body: &Value) -> Vec<Vec<f32>> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["index"], i);
            assert_eq!(d["object"], "embedding");
            floats(&d["embedding"])
        })
        .collect()
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

/// `qzhou embed` on the tiny fixture with `flags`, one vector per text.
fn qzhou_embed(texts: &[String], flags: &[&str]) -> Vec<Vec<f32>> {
    let model = fixture("tiny-qwen2");
    let mut args = vec!["embed", "--model", model.to_str().unwrap()];
    args.extend_from_slice(flags);
    args.extend(texts.iter().map(String::as_str));
    let out = common::ok(&common::qzhou(&args));
    out.lines()
        .map(|l| floats(&serde_json::from_str::<Value>(l).unwrap()["embedding"]))
        .collect()
}

#[test]
fn openai_and_tei_routes_give_the_reference_vectors() {
    let server = Server::start(&[]);
    let expected = expected();
    let texts = strings(&expected["texts"]);
    let reference: Vec<Vec<f32>> = expected["models"]["tiny-qwen2"]["embeddings"]
        ["bidirectional-mean"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    let ids = &expected["models"]["tiny-qwen2"]["token_ids"];
    let tokens: usize = ids
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_array().unwrap().len())
        .sum();

    // OpenAI: texts as given (documents: no prompt), the longest one truncated to 96 tokens.
    let body = post_ok(
        &server.url("/v1/embeddings"),
        &json!({"model": "anything", "input": texts, "truncate": true}),
    );
    let got = openai_vectors(&body);
    assert!(
        max_diff(&got, &reference) <= 1e-5,
        "{}",
        max_diff(&got, &reference)
    );
    assert_eq!(body["object"], "list");
    assert_eq!(body["usage"]["prompt_tokens"], tokens);
    assert_eq!(body["usage"]["total_tokens"], tokens);
    // The transformers tokenizer's ids give the same vectors.
    let by_ids = openai_vectors(&post_ok(
        &server.url("/v1/embeddings"),
        &json!({"model": "m", "input": ids}),
    ));
    assert!(max_diff(&by_ids, &reference) <= 1e-5);
    // One string, and what `qzhou embed` prints for it (in a batch of three: padding changes
    // the last bits only).
    let one = post_ok(
        &server.url("/v1/embeddings"),
        &json!({"model": "m", "input": texts[1]}),
    );
    let cli = qzhou_embed(&texts[..3], &["--document"]);
    assert!(max_diff(&openai_vectors(&one), &cli[1..2]) <= 1e-6);
    let floats3 = openai_vectors(&post_ok(
        &server.url("/v1/embeddings"),
        &json!({"model": "m", "input": &texts[..3]}),
    ));
    assert!(max_diff(&floats3, &cli) <= 1e-6);

    // base64: little-endian f32 bytes of the same floats.
    let b64 = post_ok(
        &server.url("/v1/embeddings"),
        &json!({"model": "m", "input": &texts[..3], "encoding_format": "base64"}),
    );
    for (i, d) in b64["data"].as_array().unwrap().iter().enumerate() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(d["embedding"].as_str().unwrap())
            .unwrap();
        let v: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(v, floats3[i], "base64 and float replies differ");
    }

    // dimensions: the first 8 values, back to unit length.
    let short = openai_vectors(&post_ok(
        &server.url("/v1/embeddings"),
        &json!({"model": "m", "input": &texts[..3], "dimensions": 8}),
    ));
    for (s, full) in short.iter().zip(&cli) {
        let norm = full[..8].iter().map(|x| x * x).sum::<f32>().sqrt();
        let want: Vec<f32> = full[..8].iter().map(|x| x / norm).collect();
        assert!(max_diff(&[s.clone()], &[want]) <= 1e-6);
    }

    // Prompts: qzhou's extension fields give what `qzhou embed` gives with the same flags.
    let query = openai_vectors(&post_ok(
        &server.url("/v1/embeddings"),
        &json!({"model": "m", "input": &texts[1..3], "input_type": "query"}),
    ));
    assert!(max_diff(&query, &qzhou_embed(&texts[1..3], &["--query"])) <= 1e-6);
    let task = openai_vectors(&post_ok(
        &server.url("/v1/embeddings"),
        &json!({"model": "m", "input": &texts[1..3], "input_type": "document", "task": "STSBenchmark"}),
    ));
    let sts = qzhou_embed(&texts[1..3], &["--document", "--task", "STSBenchmark"]);
    assert!(max_diff(&task, &sts) <= 1e-6);
    assert!(
        max_diff(&task, &cli[1..3]) > 1e-3,
        "the task's instruction changed nothing"
    );

    // TEI: same vectors; normalize=false; prompt_name from the folder's prompts.
    let tei = post_ok(&server.url("/embed"), &json!({"inputs": &texts[..3]}));
    let tei: Vec<Vec<f32>> = tei.as_array().unwrap().iter().map(floats).collect();
    assert!(max_diff(&tei, &cli) <= 1e-6);
    let raw = post_ok(
        &server.url("/embed"),
        &json!({"inputs": texts[1], "normalize": false}),
    );
    let raw: Vec<Vec<f32>> = raw.as_array().unwrap().iter().map(floats).collect();
    let cli_raw = qzhou_embed(&texts[1..2], &["--document", "--no-normalize"]);
    assert!(max_diff(&raw, &cli_raw) <= 1e-6);
    assert!((raw[0].iter().map(|x| x * x).sum::<f32>().sqrt() - 1.0).abs() > 1e-3);
    let named = post_ok(
        &server.url("/embed"),
        &json!({"inputs": &texts[1..3], "prompt_name": "query"}),
    );
    let named: Vec<Vec<f32>> = named.as_array().unwrap().iter().map(floats).collect();
    assert!(max_diff(&named, &query) <= 1e-6);

    // Info, models, health, metrics.
    let info: Value = serde_json::from_str(
        &ureq::get(&server.url("/info"))
            .call()
            .unwrap()
            .into_string()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(info["max_input_length"], 96);
    assert_eq!(info["dimensions"], 32);
    assert_eq!(info["model_type"]["embedding"]["pooling"], "mean");
    assert_eq!(info["attention"], "bidirectional");
    let models: Value = serde_json::from_str(
        &ureq::get(&server.url("/v1/models"))
            .call()
            .unwrap()
            .into_string()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        models["data"][0]["id"],
        fixture("tiny-qwen2").to_str().unwrap()
    );
    assert_eq!(
        ureq::get(&server.url("/health")).call().unwrap().status(),
        200
    );
    let metrics = ureq::get(&server.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    for needle in [
        "qzhou_requests_total{route=\"/v1/embeddings\",status=\"200\"}",
        "qzhou_request_duration_seconds_bucket{route=\"/embed\"",
        "qzhou_batch_texts_bucket",
        "qzhou_tokens_total",
        "qzhou_queue_depth",
    ] {
        assert!(
            metrics.contains(needle),
            "{needle} not in /metrics:\n{metrics}"
        );
    }
}

#[test]
fn bad_requests_are_4xx_json_errors_and_the_server_keeps_serving() {
    let server = Server::start(&["--api-key", "s3cret", "--max-inputs", "1000"]);
    let agent = ureq::agent();
    let send = |path: &str, body: &str, key: Option<&str>| {
        let mut request = agent
            .post(&server.url(path))
            .set("Content-Type", "application/json");
        if let Some(k) = key {
            request = request.set("Authorization", &format!("Bearer {k}"));
        }
        reply(request.send_string(body)).unwrap()
    };
    let huge = "word ".repeat(200_000); // 1 MB
    let many = json!({"input": vec!["hi"; 10_000]}).to_string();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "/v1/embeddings",
            "{\"input\": [\"a\",".into(),
            400,
            "invalid_json",
        ),
        ("/v1/embeddings", "[\"a\"]".into(), 400, "invalid_json"),
        (
            "/v1/embeddings",
            r#"{"input": 42}"#.into(),
            400,
            "invalid_type",
        ),
        (
            "/v1/embeddings",
            r#"{"input": ["a", {"b": 1}]}"#.into(),
            400,
            "invalid_type",
        ),
        (
            "/v1/embeddings",
            r#"{"input": "a", "dimensions": "8"}"#.into(),
            400,
            "invalid_type",
        ),
        (
            "/v1/embeddings",
            r#"{"input": "a", "dimensions": 33}"#.into(),
            400,
            "invalid_dimensions",
        ),
        (
            "/v1/embeddings",
            r#"{"input": "a", "encoding_format": "hex"}"#.into(),
            400,
            "invalid_encoding_format",
        ),
        (
            "/v1/embeddings",
            r#"{"model": 3, "input": "a"}"#.into(),
            400,
            "invalid_type",
        ),
        (
            "/v1/embeddings",
            r#"{"input": []}"#.into(),
            400,
            "empty_input",
        ),
        (
            "/v1/embeddings",
            r#"{"input": ""}"#.into(),
            400,
            "empty_input",
        ),
        (
            "/v1/embeddings",
            r#"{"input": ["ok", "   "]}"#.into(),
            400,
            "empty_input",
        ),
        ("/v1/embeddings", r#"{}"#.into(), 400, "missing_input"),
        ("/v1/embeddings", many, 413, "too_many_inputs"),
        (
            "/v1/embeddings",
            json!({"input": huge}).to_string(),
            413,
            "input_too_long",
        ),
        (
            "/v1/embeddings",
            r#"{"input": [[1, 2, 151936]]}"#.into(),
            400,
            "token_out_of_range",
        ),
        (
            "/v1/embeddings",
            r#"{"input": [1, -2]}"#.into(),
            400,
            "invalid_type",
        ),
        (
            "/v1/embeddings",
            r#"{"input": [[1, 2]], "input_type": "query"}"#.into(),
            400,
            "prompt_with_token_ids",
        ),
        (
            "/v1/embeddings",
            r#"{"input": "a", "task": "NoSuchTask"}"#.into(),
            400,
            "unknown_task",
        ),
        (
            "/v1/embeddings",
            r#"{"input": "a", "input_type": "question"}"#.into(),
            400,
            "invalid_input_type",
        ),
        (
            "/embed",
            r#"{"inputs": "a", "prompt_name": "nope"}"#.into(),
            400,
            "unknown_prompt",
        ),
        (
            "/embed",
            r#"{"inputs": "a", "normalize": "yes"}"#.into(),
            400,
            "invalid_type",
        ),
        (
            "/embed",
            r#"{"inputs": "a", "truncation_direction": "Left"}"#.into(),
            400,
            "invalid_truncation_direction",
        ),
        ("/nowhere", "{}".into(), 404, "unknown_route"),
    ];
    for (path, body, status, code) in &cases {
        let r = send(path, body, Some("s3cret"));
        assert_eq!(r.status, *status, "{path} {body:.80}: {}", r.body);
        assert_eq!(
            r.body["error"]["code"], *code,
            "{path} {body:.80}: {}",
            r.body
        );
        assert!(r.body["error"]["message"].as_str().unwrap().len() > 5);
        assert!(r.body["error"]["type"].is_string());
    }
    // A body over --max-body-bytes (4 MiB): 413 once the limit is passed, before any parsing
    // (sent by hand: the server answers without reading the rest, so a client still writing
    // would see a broken pipe instead of the answer).
    let (status, body) = raw_post(&server.base, "/embed", 5 << 20, (4 << 20) + 4096, "s3cret");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("body_too_large")),
        "{body}"
    );
    // Wrong method, missing or wrong key.
    let r = reply(
        agent
            .get(&server.url("/v1/embeddings"))
            .set("Authorization", "Bearer s3cret")
            .call(),
    )
    .unwrap();
    assert_eq!(r.status, 405);
    for key in [None, Some("wrong"), Some("s3cret ")] {
        let r = send("/v1/embeddings", r#"{"input": "a"}"#, key);
        if key == Some("s3cret ") {
            assert_eq!(r.status, 200, "surrounding spaces are not part of the key");
            continue;
        }
        assert_eq!(
            (r.status, r.body["error"]["type"].as_str()),
            (401, Some("authentication_error"))
        );
    }
    // /health needs no key; everything still works.
    assert_eq!(
        agent.get(&server.url("/health")).call().unwrap().status(),
        200
    );
    let r = send(
        "/v1/embeddings",
        r#"{"input": ["still", "serving"]}"#,
        Some("s3cret"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body["data"].as_array().unwrap().len(), 2);
    // Over-long input with truncation asked for is served.
    let long = json!({"input": "word ".repeat(500), "truncate": true}).to_string();
    let r = send("/v1/embeddings", &long, Some("s3cret"));
    assert_eq!(
        (r.status, r.body["usage"]["prompt_tokens"].as_u64()),
        (200, Some(96))
    );
}

/// POST `sent` bytes of a body announced as `length` bytes over a raw connection and read
/// the answer's status and JSON body.
fn raw_post(base: &str, path: &str, length: usize, sent: usize, key: &str) -> (u16, Value) {
    use std::io::{Read, Write};
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
    .unwrap();
    stream.write_all(&vec![b'x'; sent]).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).unwrap();
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer).to_string();
        if let Some(split) = text.find("\r\n\r\n") {
            let head = text[..split].to_ascii_lowercase();
            let want: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .expect("a content-length");
            if answer.len() >= split + 4 + want || n == 0 {
                let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
                let body = serde_json::from_slice(&answer[split + 4..split + 4 + want]).unwrap();
                return (status, body);
            }
        }
        assert!(n > 0, "connection closed without an answer");
    }
}

/// Texts of 1 to ~60 tokens, and `qzhou embed`'s vector of each.
fn text_pool() -> (Vec<String>, Vec<Vec<f32>>) {
    let words = [
        "alpha", "beta", "gamma", "天气", "delta", "epsilon", "zeta", "数据",
    ];
    let texts: Vec<String> = (0..24)
        .map(|i| {
            (0..(1 + i * i / 12))
                .map(|k| words[(i + k) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let vectors = qzhou_embed(&texts, &["--document"]);
    (texts, vectors)
}

/// Latency percentile of sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[test]
fn sixty_four_clients_get_correct_vectors_and_a_tiny_queue_sheds_load_with_429() {
    let (texts, want) = text_pool();
    let (texts, want) = (Arc::new(texts), Arc::new(want));
    let server = Server::start(&[]);
    // Every client sends 50 requests of 1-4 texts of mixed lengths, each checked.
    let run = |url: String, clients: usize, requests: usize, inputs: usize| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let (texts, want, url) = (texts.clone(), want.clone(), url.clone());
                std::thread::spawn(move || {
                    let agent = ureq::agent();
                    let mut outcomes = Vec::new();
                    for r in 0..requests {
                        let n = 1 + (c + r) % inputs;
                        let picks: Vec<usize> = (0..n)
                            .map(|k| (c * 7 + r * 3 + k * 5) % texts.len())
                            .collect();
                        let input: Vec<&str> = picks.iter().map(|&i| texts[i].as_str()).collect();
                        let started = Instant::now();
                        let reply =
                            post(&agent, &url, &json!({"input": input}).to_string()).unwrap();
                        let took = started.elapsed();
                        if reply.status == 200 {
                            let got = openai_vectors(&reply.body);
                            let expect: Vec<Vec<f32>> =
                                picks.iter().map(|&i| want[i].clone()).collect();
                            let d = max_diff(&got, &expect);
                            assert!(d <= 1e-5, "client {c} request {r}: max|Δ| {d}");
                        } else {
                            assert_eq!(reply.status, 429, "{}", reply.body);
                            assert_eq!(reply.retry_after.as_deref(), Some("1"));
                            assert_eq!(reply.body["error"]["code"], "queue_full");
                        }
                        outcomes.push((reply.status, took));
                    }
                    outcomes
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a client failed"))
            .collect::<Vec<(u16, Duration)>>()
    };
    let outcomes = run(server.url("/v1/embeddings"), 64, 50, 4);
    assert_eq!(outcomes.len(), 64 * 50);
    assert!(
        outcomes.iter().all(|(s, _)| *s == 200),
        "429 with the default queue"
    );
    let mut latencies: Vec<Duration> = outcomes.iter().map(|o| o.1).collect();
    latencies.sort();
    println!(
        "64 clients × 50 requests: p50 {:?}, p99 {:?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    let metrics = ureq::get(&server.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        metrics.contains("qzhou_requests_total{route=\"/v1/embeddings\",status=\"200\"} 3200"),
        "{metrics}"
    );
    drop(server);

    // A one-request queue and no batching wait: some requests are turned away, every
    // accepted one is still correct.
    let server = Server::start(&["--max-queue", "1", "--batch-wait-ms", "0"]);
    let outcomes = run(server.url("/v1/embeddings"), 64, 5, 16);
    let rejected = outcomes.iter().filter(|(s, _)| *s == 429).count();
    let served = outcomes.iter().filter(|(s, _)| *s == 200).count();
    println!("queue of 1: {served} served, {rejected} turned away");
    assert!(rejected > 0, "the queue never filled");
    assert!(served > 0);
    assert_eq!(
        ureq::get(&server.url("/health")).call().unwrap().status(),
        200
    );
}

#[cfg(unix)]
#[test]
fn sigterm_finishes_requests_in_flight_then_exits() {
    let (texts, want) = text_pool();
    let (texts, want) = (Arc::new(texts), Arc::new(want));
    let mut server = Server::start(&[]);
    let url = server.url("/v1/embeddings");
    let stop_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let clients: Vec<_> = (0..16)
        .map(|c| {
            let (texts, want, url, stop_at) =
                (texts.clone(), want.clone(), url.clone(), stop_at.clone());
            std::thread::spawn(move || {
                // No connection reuse: after the signal a new request finds the port closed.
                let agent = ureq::AgentBuilder::new().max_idle_connections(0).build();
                let (mut done, mut finished_after_signal) = (0usize, 0usize);
                for r in 0.. {
                    let picks: Vec<usize> = (0..16).map(|k| (c + r + k) % texts.len()).collect();
                    let input: Vec<&str> = picks.iter().map(|&i| texts[i].as_str()).collect();
                    let sent = Instant::now();
                    match post(&agent, &url, &json!({"input": input}).to_string()) {
                        Ok(reply) => {
                            assert_eq!(reply.status, 200, "{}", reply.body);
                            let expect: Vec<Vec<f32>> =
                                picks.iter().map(|&i| want[i].clone()).collect();
                            assert!(max_diff(&openai_vectors(&reply.body), &expect) <= 1e-5);
                            done += 1;
                            if stop_at.lock().unwrap().is_some_and(|t| sent < t) {
                                finished_after_signal += 1;
                            }
                        }
                        Err(ureq::Error::Transport(t)) => {
                            // Only after the signal: a refused connection, or one still in the
                            // kernel's accept queue when the listener closed (reset).
                            assert!(
                                stop_at.lock().unwrap().is_some(),
                                "transport error before SIGTERM: {t}"
                            );
                            assert!(
                                matches!(
                                    t.kind(),
                                    ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Io
                                ),
                                "{t}"
                            );
                            return (done, finished_after_signal);
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                unreachable!()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    *stop_at.lock().unwrap() = Some(Instant::now());
    let killed = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = server.child.wait().unwrap();
    let results: Vec<(usize, usize)> = clients
        .into_iter()
        .map(|c| c.join().expect("a client failed"))
        .collect();
    assert!(status.success(), "exit {status:?}: {}", server.log());
    let done: usize = results.iter().map(|r| r.0).sum();
    let drained: usize = results.iter().map(|r| r.1).sum();
    println!("{done} requests answered, {drained} of them sent before SIGTERM and answered after");
    assert!(
        done > 16,
        "too few requests before the signal to mean anything"
    );
    assert!(drained > 0, "no request was in flight at SIGTERM");
    assert!(server.log().contains("shutting down"));
}
