//! `qzhou synth` against a scripted OpenAI-compatible server on 127.0.0.1 (tiny_http, in the
//! test process): good replies wrapped in prose, malformed replies, constraint-breaking and
//! duplicate outputs, 429 with Retry-After, 500s, a hang past the client timeout, a server
//! without JSON mode; then `kill -9` mid-run on 200 real STS-B inputs and a resume.
//!
//! The server answers from the prompt it receives: it reads the query and passage lines of the
//! shipped templates and writes "rewrites" that pass the constraints by construction (word
//! order reversed, so > 30 % different at the same length; variant j swaps one more adjacent
//! pair, so variants differ from each other). Which misbehaviour a request gets is chosen by a
//! marker word in the query.

mod common;

use common::{qzhou, root};

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Word order reversed; variant `j` also swaps the pair at (j - 1, j).
fn rewrite(text: &str, j: usize) -> String {
    let mut words: Vec<&str> = text.split_whitespace().rev().collect();
    if j > 0 && j < words.len() {
        words.swap(j - 1, j);
    }
    words.join(" ")
}

/// Requests seen per query marker, with arrival times and whether JSON mode was asked for.
#[derive(Default)]
struct Log {
    requests: HashMap<String, Vec<(Instant, bool)>>,
}

struct Server {
    url: String,
    log: Arc<Mutex<Log>>,
}

fn line_after<'a>(prompt: &'a str, label: &str) -> &'a str {
    prompt
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no `{label}` line in the prompt"))
        .trim()
}

fn wanted(prompt: &str) -> usize {
    // "Rewrite the pair below N times." / "write N hard-negative passages".
    prompt
        .split_whitespace()
        .zip(prompt.split_whitespace().skip(1))
        .find_map(|(a, b)| {
            (a == "below" || a == "write")
                .then(|| b.parse::<usize>().ok())
                .flatten()
        })
        .expect("a count in the prompt")
}

/// The reply body (or status) for one request.
fn respond(
    body: &Value,
    log: &Mutex<Log>,
    delay: Duration,
) -> (u16, Vec<(String, String)>, String) {
    let prompt = body["messages"][1]["content"].as_str().unwrap().to_string();
    let json_mode = body.get("response_format").is_some();
    let hardneg = prompt.contains("Positive passage:");
    let (query, pos) = if hardneg {
        (
            line_after(&prompt, "Query: "),
            line_after(&prompt, "Positive passage: "),
        )
    } else {
        (
            line_after(&prompt, "Original query: "),
            line_after(&prompt, "Original passage: "),
        )
    };
    let marker = query.split_whitespace().next().unwrap_or("").to_string();
    let attempt = {
        let mut l = log.lock().unwrap();
        let e = l.requests.entry(query.to_string()).or_default();
        e.push((Instant::now(), json_mode));
        e.len()
    };
    std::thread::sleep(delay);
    let n = wanted(&prompt);
    let good = |offset: usize| -> Value {
        if hardneg {
            json!({"negatives": (0..n).map(|j| rewrite(pos, j + offset)).collect::<Vec<_>>()})
        } else {
            json!({"pairs": (0..n).map(|j| json!({"query": rewrite(query, j + offset), "pos": rewrite(pos, j + offset)})).collect::<Vec<_>>()})
        }
    };
    let chat = |content: String| {
        json!({
            "choices": [{"message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 40},
        })
        .to_string()
    };
    let ok = |content: String| (200, vec![], chat(content));
    match (marker.as_str(), attempt) {
        ("prose", _) => ok(format!(
            "Here you are:\n```json\n{}\n```\nAnything else?",
            good(0)
        )),
        ("malformed", 1) => ok("I cannot help with that.".into()),
        ("breaking", 1) => ok(json!({"pairs": [
            {"query": query, "pos": pos},
            {"query": rewrite(query, 0), "pos": format!("{} {}", rewrite(pos, 0), pos)},
        ]})
        .to_string()),
        ("duplicate", 1) => {
            let p = json!({"query": rewrite(query, 0), "pos": rewrite(pos, 0)});
            ok(json!({"pairs": [p.clone(), p]}).to_string())
        }
        // The duplicate run's second try must give a new variant (the first is taken).
        ("duplicate", _) => ok(good(1).to_string()),
        ("limited", 1) => (
            429,
            vec![("Retry-After".into(), "1".into())],
            "slow down".into(),
        ),
        ("flaky", 1 | 2) => (500, vec![], "internal error".into()),
        ("hang", 1) => {
            std::thread::sleep(Duration::from_secs(4));
            ok(good(0).to_string())
        }
        ("stubborn", _) => ok(json!({"pairs": [{"query": query, "pos": pos}]}).to_string()),
        ("nojson", _) if json_mode => (
            400,
            vec![],
            "{\"error\": \"response_format is not supported\"}".into(),
        ),
        _ => ok(good(0).to_string()),
    }
}

fn start_server(delay: Duration) -> Server {
    let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
    let url = format!("http://{}/v1", server.server_addr().to_ip().unwrap());
    let log = Arc::new(Mutex::new(Log::default()));
    for _ in 0..8 {
        let (server, log) = (server.clone(), log.clone());
        std::thread::spawn(move || {
            for mut request in server.incoming_requests() {
                let mut body = String::new();
                request.as_reader().read_to_string(&mut body).unwrap();
                assert!(
                    request.url().ends_with("/chat/completions"),
                    "{}",
                    request.url()
                );
                let body: Value = serde_json::from_str(&body).unwrap();
                let (status, headers, text) = respond(&body, &log, delay);
                let mut response = tiny_http::Response::from_string(text).with_status_code(status);
                for (k, v) in headers {
                    response.add_header(
                        tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).unwrap(),
                    );
                }
                let _ = request.respond(response);
            }
        });
    }
    Server { url, log }
}

fn jsonl(path: &Path) -> Vec<Value> {
    match std::fs::read_to_string(path) {
        Ok(t) => t
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn synth_args<'a>(
    pipeline: &'a str,
    input: &'a str,
    out: &'a str,
    url: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "synth",
        pipeline,
        "--input",
        input,
        "--out",
        out,
        "--base-url",
        url,
        "--model",
        "scripted",
        "--quiet",
        "--backoff-s",
        "0.05",
    ];
    args.extend_from_slice(extra);
    args
}

/// Real STS-B sentence pairs (file order), `count` distinct (query, pos) pairs.
fn stsb_pairs(count: usize) -> Vec<(String, String)> {
    let file =
        std::fs::File::open(root().join("../shared/data/sts-b-en/stsbenchmark.tsv.gz")).unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for line in std::io::BufReader::new(flate2::read::GzDecoder::new(file))
        .lines()
        .skip(1)
    {
        let line = line.unwrap();
        let f: Vec<&str> = line.split('\t').collect();
        let (a, b) = (f[f.len() - 2].trim(), f[f.len() - 1].trim());
        // 5-12 words, all distinct: reversed variants then differ by > 10 % from each other.
        let fits = |s: &str| {
            let w: Vec<&str> = s.split_whitespace().collect();
            let distinct = w
                .iter()
                .map(|x| x.to_lowercase())
                .collect::<std::collections::HashSet<_>>();
            (5..=12).contains(&w.len()) && distinct.len() == w.len()
        };
        if fits(a) && fits(b) && seen.insert((a.to_string(), b.to_string())) {
            out.push((a.to_string(), b.to_string()));
        }
        if out.len() == count {
            break;
        }
    }
    assert_eq!(out.len(), count);
    out
}

#[test]
fn retries_limits_rejections_and_exact_outputs() {
    let server = start_server(Duration::ZERO);
    let tmp = tempfile::tempdir().unwrap();
    let pairs = stsb_pairs(9);
    let markers = [
        "prose",
        "malformed",
        "breaking",
        "duplicate",
        "limited",
        "flaky",
        "hang",
        "stubborn",
        "plain",
    ];
    let input = tmp.path().join("in.jsonl");
    let mut lines = String::new();
    let mut sources = Vec::new();
    for (m, (q, p)) in markers.iter().zip(&pairs) {
        let query = format!("{m} {q}");
        lines.push_str(
            &json!({"type": "retrieval", "query": query, "pos": p, "negs": []}).to_string(),
        );
        lines.push('\n');
        sources.push((m.to_string(), query, p.clone()));
    }
    std::fs::write(&input, lines).unwrap();
    let out = tmp.path().join("out/para.jsonl");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    let run = qzhou(&synth_args(
        "paraphrase",
        i,
        o,
        &server.url,
        &[
            "--n",
            "2",
            "--max-tries",
            "3",
            "--timeout-s",
            "1.5",
            "--concurrency",
            "4",
            "--price-input",
            "2",
            "--price-output",
            "8",
        ],
    ));
    let stderr = String::from_utf8_lossy(&run.stderr).to_string();
    assert!(run.status.success(), "{stderr}");
    let summary: Value = serde_json::from_str(stderr.lines().last().unwrap()).unwrap();

    // Exact outputs: variants 0 and 1 per input (for `duplicate`, the copy of variant 0 is
    // rejected and the second try brings variant 1), nothing for `stubborn` (3 tries fail).
    let records = jsonl(&out);
    let mut by_source: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let key_of: HashMap<String, String> = jsonl(&tmp.path().join("out/para.jsonl.done.jsonl"))
        .iter()
        .map(|v| (v["key"].as_str().unwrap().to_string(), v.to_string()))
        .collect();
    assert_eq!(key_of.len(), markers.len(), "every input journaled once");
    for r in &records {
        assert_eq!(r["type"], "retrieval");
        assert_eq!(r["negs"], json!([]));
        assert!(key_of.contains_key(r["meta"]["key"].as_str().unwrap()));
        let q = r["query"].as_str().unwrap().to_string();
        let source = sources
            .iter()
            .find(|(_, sq, _)| rewrite(sq, 0) == q || rewrite(sq, 1) == q || rewrite(sq, 2) == q)
            .expect("a known rewrite");
        by_source
            .entry(source.0.clone())
            .or_default()
            .push((q, r["pos"].as_str().unwrap().to_string()));
    }
    for (m, q, p) in &sources {
        let want: Vec<(String, String)> = match m.as_str() {
            "stubborn" => vec![],
            _ => vec![
                (rewrite(q, 0), rewrite(p, 0)),
                (rewrite(q, 1), rewrite(p, 1)),
            ],
        };
        assert_eq!(by_source.get(m).cloned().unwrap_or_default(), want, "{m}");
    }

    // Rejections with reasons.
    let rejected = jsonl(&tmp.path().join("out/para.jsonl.rejected.jsonl"));
    let reasons = |marker: &str| -> Vec<String> {
        let (_, q, _) = sources.iter().find(|(m, _, _)| m == marker).unwrap();
        let key = records
            .iter()
            .find(|r| r["query"].as_str() == Some(&rewrite(q, 0)))
            .map(|r| r["meta"]["key"].clone());
        rejected
            .iter()
            .filter(|r| {
                r["line"].as_u64().unwrap() as usize
                    == markers.iter().position(|x| *x == marker).unwrap() + 1
            })
            .inspect(|r| {
                if let Some(k) = &key {
                    assert_eq!(&r["key"], k)
                }
            })
            .map(|r| r["reason"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        reasons("malformed"),
        ["the reply holds no JSON object or array"]
    );
    let breaking = reasons("breaking");
    assert_eq!(breaking.len(), 2, "{breaking:?}");
    assert!(
        breaking[0].starts_with("query differs from its source by 0.0%"),
        "{breaking:?}"
    );
    assert!(
        breaking[1].starts_with("pos length changed by +100.0%"),
        "{breaking:?}"
    );
    assert_eq!(
        reasons("duplicate"),
        ["query duplicates an earlier output or the source"]
    );
    let stubborn = reasons("stubborn");
    assert_eq!(stubborn.len(), 3, "one per try: {stubborn:?}");
    assert!(reasons("prose").is_empty() && reasons("limited").is_empty());

    // Retries: the 429 was waited out for its Retry-After (1 s), the two 500s and the hang
    // retried; every request asked for JSON mode.
    let log = server.log.lock().unwrap();
    let times = |marker: &str| -> Vec<Instant> {
        let (_, q, _) = sources.iter().find(|(m, _, _)| m == marker).unwrap();
        log.requests[q.as_str()].iter().map(|(t, _)| *t).collect()
    };
    let limited = times("limited");
    assert_eq!(limited.len(), 2);
    assert!(
        limited[1] - limited[0] >= Duration::from_millis(950),
        "{:?}",
        limited[1] - limited[0]
    );
    assert_eq!(times("flaky").len(), 3);
    assert_eq!(times("hang").len(), 2);
    assert_eq!(times("stubborn").len(), 3);
    assert!(log
        .requests
        .values()
        .flatten()
        .all(|(_, json_mode)| *json_mode));
    let client = &summary["client"];
    // 9 inputs: 1 request each, + malformed/breaking/duplicate 1 more, + limited 1, flaky 2,
    // hang 1, stubborn 2.
    assert_eq!(client["requests"], 9 + 3 + 1 + 2 + 1 + 2);
    assert_eq!(client["retries"], 1 + 2 + 1);
    assert_eq!(client["prompt_tokens"], 100 * (9 + 3 + 2 + 0));
    assert_eq!(summary["inputs_finished"], 9);
    assert_eq!(summary["inputs_short"], 1);
    let cost = client["cost_usd"].as_f64().unwrap();
    let want = (100.0 * 14.0 * 2.0 + 40.0 * 14.0 * 8.0) / 1e6;
    assert!((cost - want).abs() < 1e-12, "{cost} vs {want}");

    // A second run skips every finished input and sends nothing.
    drop(log);
    let again = qzhou(&synth_args(
        "paraphrase",
        i,
        o,
        &server.url,
        &["--n", "2", "--max-tries", "3"],
    ));
    let stderr = String::from_utf8_lossy(&again.stderr).to_string();
    assert!(again.status.success(), "{stderr}");
    let s: Value = serde_json::from_str(stderr.lines().last().unwrap()).unwrap();
    assert_eq!(s["inputs_skipped_as_done"], 9);
    assert_eq!(s["client"]["requests"], 0);
    assert_eq!(jsonl(&out), records);
    // Resuming with other settings would mix rules in one file: refused, nothing touched.
    let other = qzhou(&synth_args("paraphrase", i, o, &server.url, &["--n", "3"]));
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success());
    assert!(
        stderr.contains("was written with n = 2, this run has 3"),
        "{stderr}"
    );
    assert_eq!(jsonl(&out), records);
}

#[test]
fn falls_back_without_json_mode_and_reports_fatal_errors() {
    let server = start_server(Duration::ZERO);
    let tmp = tempfile::tempdir().unwrap();
    let (q, p) = stsb_pairs(1).remove(0);
    let input = tmp.path().join("in.jsonl");
    std::fs::write(
        &input,
        json!({"query": format!("nojson {q}"), "pos": p}).to_string() + "\n",
    )
    .unwrap();
    let out = tmp.path().join("neg.jsonl");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    let run = qzhou(&synth_args("hardneg", i, o, &server.url, &["--n", "2"]));
    let stderr = String::from_utf8_lossy(&run.stderr).to_string();
    assert!(run.status.success(), "{stderr}");
    let s: Value = serde_json::from_str(stderr.lines().last().unwrap()).unwrap();
    assert_eq!(s["client"]["json_mode"], false);
    let records = jsonl(&out);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["negs"], json!([rewrite(&p, 0), rewrite(&p, 1)]));

    // Nothing listens here: every attempt is a network error; the input stays unfinished.
    let dead = "http://127.0.0.1:9/v1";
    let out2 = tmp.path().join("dead.jsonl");
    let run = qzhou(&synth_args(
        "hardneg",
        i,
        out2.to_str().unwrap(),
        dead,
        &["--max-retries", "1"],
    ));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        stderr.contains("1 inputs failed on the server side"),
        "{stderr}"
    );
    assert!(jsonl(&sibling(&out2, ".done.jsonl")).is_empty());
    // Bad input lines name file:line.
    std::fs::write(&input, "{\"query\": \"only a query\"}\n").unwrap();
    let fresh = tmp.path().join("fresh.jsonl");
    let run = qzhou(&synth_args(
        "hardneg",
        i,
        fresh.to_str().unwrap(),
        &server.url,
        &[],
    ));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(stderr.contains("in.jsonl:1: no string `pos`"), "{stderr}");
}

fn sibling(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// `kill -9` mid-run on 200 real inputs, then the same command again: every input's record
/// appears exactly once and nothing written before the kill is lost.
#[test]
fn kill_nine_then_resume_gives_every_input_exactly_once() {
    let server = start_server(Duration::from_millis(25));
    let tmp = tempfile::tempdir().unwrap();
    let pairs = stsb_pairs(200);
    let input = tmp.path().join("in.jsonl");
    let text: String = pairs
        .iter()
        .map(|(q, p)| {
            json!({"type": "retrieval", "query": q, "pos": p, "negs": ["an old negative"]})
                .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(&input, text).unwrap();
    let out = tmp.path().join("neg.jsonl");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    let args = synth_args(
        "hardneg",
        i,
        o,
        &server.url,
        &["--n", "2", "--concurrency", "4"],
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_qzhou"))
        .args(&args)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        let done = std::fs::read_to_string(&out)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if done >= 60 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = std::fs::read_to_string(&out).unwrap();
    let kept = before.rfind('\n').map_or(0, |i| i + 1);
    let finished_before = before[..kept].lines().count();
    eprintln!(
        "killed with {finished_before} complete lines, {} torn bytes",
        before.len() - kept
    );
    assert!(
        finished_before < 200,
        "the kill came too late to test anything"
    );

    let run = qzhou(&args);
    let stderr = String::from_utf8_lossy(&run.stderr).to_string();
    assert!(run.status.success(), "{stderr}");
    let after = std::fs::read_to_string(&out).unwrap();
    // Every complete line written before the kill is still there, byte for byte.
    assert!(after.starts_with(&before[..kept]));
    let records = jsonl(&out);
    let mut count: HashMap<(String, String), usize> = HashMap::new();
    for r in &records {
        let k = (
            r["query"].as_str().unwrap().to_string(),
            r["pos"].as_str().unwrap().to_string(),
        );
        *count.entry(k).or_default() += 1;
        let p = r["pos"].as_str().unwrap();
        assert_eq!(
            r["negs"],
            json!(["an old negative", rewrite(p, 0), rewrite(p, 1)])
        );
    }
    assert_eq!(records.len(), 200);
    for (q, p) in &pairs {
        assert_eq!(count.get(&(q.clone(), p.clone())), Some(&1), "{q}");
    }
    let s: Value = serde_json::from_str(stderr.lines().last().unwrap()).unwrap();
    assert!(s["inputs_skipped_as_done"].as_u64().unwrap() >= 60, "{s}");
    assert_eq!(
        s["inputs_skipped_as_done"].as_u64().unwrap() + s["inputs_finished"].as_u64().unwrap(),
        200
    );
}
