//! `qzhou synth paraphrase|augment|hardneg`: the paper's LLM data synthesis (section 6) over an
//! OpenAI-compatible server, with the constraints enforced in code
//! (`qzhou_core::synthesis::constraints`), durable resumable output ([`store`]) and a
//! rate-limited, retrying client ([`client`]).
//!
//! Each input (query, pos) gets up to `--max-tries` requests (paper: 20) until `--n` outputs
//! pass every check; rejected outputs go to `OUT.rejected.jsonl` with their reason. Outputs are
//! trainer retrieval records: paraphrase → (query', pos'), augment → (query', pos', [neg']),
//! hardneg → (query, pos, input negatives + generated ones).

pub mod client;
pub mod store;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use qzhou_core::synthesis::parse::{json_items, negatives_from, pairs_from, triples_from};
use qzhou_core::synthesis::text::{length, script, Script};
use qzhou_core::synthesis::{
    check_augment, check_hardneg, check_paraphrase, Constraints, Pair, Seen,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use client::{ChatClient, ClientConfig, Message};
use store::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Pipeline {
    /// (query, pos) → N rewritten pairs with the same meaning.
    Paraphrase,
    /// (query, pos) → N new (query, pos, hard negative) triples on a shifted topic.
    Augment,
    /// (query, pos) → N hard negatives.
    Hardneg,
}

impl Pipeline {
    fn name(self) -> &'static str {
        match self {
            Self::Paraphrase => "paraphrase",
            Self::Augment => "augment",
            Self::Hardneg => "hardneg",
        }
    }

    /// The shipped prompt template (`prompts/synth/<name>.md`).
    fn default_template(self) -> &'static str {
        match self {
            Self::Paraphrase => include_str!("../../../../prompts/synth/paraphrase.md"),
            Self::Augment => include_str!("../../../../prompts/synth/augment.md"),
            Self::Hardneg => include_str!("../../../../prompts/synth/hardneg.md"),
        }
    }
}

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Which synthesis to run.
    #[arg(value_enum)]
    pub pipeline: Pipeline,
    /// Input JSONL: objects with `query` and `pos` (a string, or a list whose first item is
    /// used), e.g. qzhou training records; `negs` are kept by hardneg.
    #[arg(long)]
    pub input: PathBuf,
    /// Output JSONL (trainer records); `OUT.rejected.jsonl`, `OUT.done.jsonl` and `OUT.run.json`
    /// beside it. An existing output is resumed (same pipeline, prompt, seed and n):
    /// finished inputs are skipped.
    #[arg(long)]
    pub out: PathBuf,
    /// Outputs wanted per input.
    #[arg(long, default_value_t = 3)]
    pub n: usize,
    /// Requests per input at most (the paper's "at most 20 tries").
    #[arg(long, default_value_t = 20)]
    pub max_tries: usize,
    /// Seed sent with each request (and part of each input's key).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Prompt template to use instead of the shipped `prompts/synth/<pipeline>.md`
    /// (placeholders {{query}} {{pos}} {{n}} {{language}} {{query_units}} {{pos_units}}).
    #[arg(long)]
    pub prompt: Option<PathBuf>,
    /// Server base URL (up to the API version).
    #[arg(
        long,
        env = "OPENAI_BASE_URL",
        default_value = "https://api.openai.com/v1"
    )]
    pub base_url: String,
    /// Model name the server knows.
    #[arg(long, env = "QZHOU_SYNTH_MODEL")]
    pub model: String,
    /// API key (optional for local servers).
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seconds before a request counts as hung (then retried).
    #[arg(long, default_value_t = 120.0)]
    pub timeout_s: f64,
    /// Retries per request on 429, 5xx and network errors.
    #[arg(long, default_value_t = 6)]
    pub max_retries: u32,
    /// First retry delay in seconds (doubles per retry, with jitter; Retry-After wins if longer).
    #[arg(long, default_value_t = 1.0)]
    pub backoff_s: f64,
    /// Requests-per-minute limit.
    #[arg(long)]
    pub rpm: Option<u32>,
    /// Tokens-per-minute limit (estimated from prompt size + max tokens).
    #[arg(long)]
    pub tpm: Option<u64>,
    /// Do not ask for JSON mode (`response_format`); replies are parsed tolerantly either way.
    #[arg(long)]
    pub no_json_mode: bool,
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// USD per million prompt tokens (cost summary).
    #[arg(long, default_value_t = 0.0)]
    pub price_input: f64,
    /// USD per million completion tokens.
    #[arg(long, default_value_t = 0.0)]
    pub price_output: f64,
    /// Input lines that are not JSON objects with query and pos: `skip` (counted) or `fail`.
    #[arg(long, default_value = "fail", value_parser = ["skip", "fail"])]
    pub malformed: String,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// One input line.
struct Input {
    line: usize,
    key: String,
    pair: Pair,
    negs: Vec<String>,
}

/// What one input produced.
struct Outcome {
    key: String,
    /// Outputs that passed (hard negatives: negatives, all in one record).
    accepted: usize,
    records: Vec<Value>,
    rejections: Vec<Value>,
    tries: usize,
    /// Prompt + completion tokens this input cost.
    tokens: u64,
}

fn language(s: Script) -> &'static str {
    match s {
        Script::Chinese => "Chinese",
        Script::Japanese => "Japanese",
        Script::Korean => "Korean",
        Script::Latin => "the original's language (Latin script)",
        Script::Cyrillic => "the original's language (Cyrillic script)",
        Script::Other => "the original's language",
    }
}

fn render(template: &str, pair: &Pair, n: usize) -> String {
    template
        .replace("{{query}}", &pair.query)
        .replace("{{pos}}", &pair.pos)
        .replace("{{n}}", &n.to_string())
        .replace("{{language}}", language(script(&pair.pos)))
        .replace("{{query_units}}", &length(&pair.query).to_string())
        .replace("{{pos_units}}", &length(&pair.pos).to_string())
}

/// The text of a JSON field that may be a string or a list of strings (first item).
fn first_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => a.first().and_then(|x| x.as_str()).map(str::to_string),
        _ => None,
    }
}

/// Parses one input line; `Err` names the problem.
fn parse_input(line: &str) -> std::result::Result<(Pair, Vec<String>), String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("malformed JSON ({e})"))?;
    let query = first_text(&v["query"]).ok_or("no string `query`")?;
    let pos = first_text(&v["pos"]).ok_or("no string `pos`")?;
    if query.trim().is_empty() || pos.trim().is_empty() {
        return Err("empty query or pos".into());
    }
    let negs = match &v["negs"] {
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    Ok((Pair { query, pos }, negs))
}

struct Job {
    pipeline: Pipeline,
    template: String,
    n: usize,
    max_tries: usize,
    seed: u64,
    constraints: Constraints,
}

impl Job {
    /// Requests until `n` outputs pass or the tries run out; `Err` only when the server fails
    /// for good (the input stays unfinished and is retried by the next run).
    fn process(&self, client: &ChatClient, input: &Input) -> Result<Outcome> {
        let c = &self.constraints;
        let source = &input.pair;
        let mut seen = Seen::new([source.query.as_str(), source.pos.as_str()]);
        let mut accepted: Vec<Value> = Vec::new();
        let mut rejections = Vec::new();
        let mut tries = 0;
        let mut tokens = 0;
        let key_seed = u64::from_str_radix(&input.key[..16], 16).unwrap_or(0);
        while accepted.len() < self.n && tries < self.max_tries {
            let wanted = self.n - accepted.len();
            let messages = [
                Message {
                    role: "system",
                    content: "You generate training data for a text-embedding model. Reply with JSON only.".into(),
                },
                Message {
                    role: "user",
                    content: render(&self.template, source, wanted),
                },
            ];
            let seed = key_seed ^ self.seed.wrapping_add(tries as u64);
            tries += 1;
            let reply = client
                .complete(&messages, seed)
                .with_context(|| format!("input line {}", input.line))?;
            tokens += reply.prompt_tokens + reply.completion_tokens;
            let mut reject = |output: Value, reason: String| {
                rejections.push(json!({"key": input.key, "line": input.line, "try": tries, "reason": reason, "output": output}));
            };
            let items = match json_items(&reply.content) {
                Ok(items) => items,
                Err(e) => {
                    reject(json!(reply.content), e.to_string());
                    continue;
                }
            };
            // Each item: the accepted output (a record, or a negative's text) or the reason.
            let checked: Vec<std::result::Result<Value, String>> = match self.pipeline {
                Pipeline::Paraphrase => pairs_from(&items)
                    .into_iter()
                    .map(|p| {
                        let p = p.map_err(|e| e.to_string())?;
                        check_paraphrase(c, source, &p, &mut seen).map_err(|e| e.to_string())?;
                        Ok(json!({"type": "retrieval", "query": p.query, "pos": p.pos, "negs": []}))
                    })
                    .collect(),
                Pipeline::Augment => triples_from(&items)
                    .into_iter()
                    .map(|t| {
                        let t = t.map_err(|e| e.to_string())?;
                        check_augment(c, source, &t, &mut seen).map_err(|e| e.to_string())?;
                        Ok(json!({"type": "retrieval", "query": t.query, "pos": t.pos, "negs": [t.neg]}))
                    })
                    .collect(),
                Pipeline::Hardneg => negatives_from(&items)
                    .into_iter()
                    .map(|n| {
                        let n = n.map_err(|e| e.to_string())?;
                        check_hardneg(c, source, &n, &mut seen).map_err(|e| e.to_string())?;
                        Ok(json!(n))
                    })
                    .collect(),
            };
            for (item, result) in items.iter().zip(checked) {
                match result {
                    Ok(output) if accepted.len() < self.n => accepted.push(output),
                    Ok(_) => {}
                    Err(reason) => reject(item.clone(), reason),
                }
            }
        }
        let count = accepted.len();
        // Hard negatives: one record, the input's negatives then the generated ones.
        let records = match self.pipeline {
            Pipeline::Hardneg if accepted.is_empty() => Vec::new(),
            Pipeline::Hardneg => {
                let mut negs: Vec<Value> = input.negs.iter().map(|n| json!(n)).collect();
                negs.extend(accepted);
                vec![json!({
                    "type": "retrieval", "query": source.query, "pos": source.pos, "negs": negs,
                })]
            }
            _ => accepted,
        };
        Ok(Outcome {
            key: input.key.clone(),
            accepted: count,
            records,
            rejections,
            tries,
            tokens,
        })
    }
}

pub fn run(args: SynthArgs) -> Result<()> {
    if args.n == 0 || args.max_tries == 0 || args.concurrency == 0 {
        bail!("--n, --max-tries and --concurrency must be at least 1");
    }
    if !(args.timeout_s.is_finite() && args.timeout_s > 0.0)
        || !(args.backoff_s.is_finite() && args.backoff_s >= 0.0)
    {
        bail!("--timeout-s must be positive and --backoff-s non-negative");
    }
    let template = match &args.prompt {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read prompt template {}", p.display()))?,
        None => args.pipeline.default_template().to_string(),
    };
    for needed in ["{{query}}", "{{pos}}", "{{n}}"] {
        if !template.contains(needed) {
            bail!("the prompt template has no {needed} placeholder");
        }
    }
    let prompt_version = hex(&Sha256::digest(template.as_bytes()))[..12].to_string();
    // One output file holds one configuration: a resume with another pipeline, prompt, seed
    // or n would mix records made under different rules.
    let run = json!({
        "pipeline": args.pipeline.name(),
        "prompt_version": prompt_version,
        "seed": args.seed,
        "n": args.n,
        "input": args.input.display().to_string(),
    });
    let run_path = store::sibling(&args.out, ".run.json");
    match std::fs::read_to_string(&run_path) {
        Ok(text) => {
            let before: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", run_path.display()))?;
            for field in ["pipeline", "prompt_version", "seed", "n"] {
                if before[field] != run[field] {
                    bail!(
                        "{} was written with {field} = {}, this run has {}; use another --out (or delete it to start over)",
                        args.out.display(),
                        before[field],
                        run[field]
                    );
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = run_path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            std::fs::write(&run_path, serde_json::to_vec_pretty(&run)?)
                .with_context(|| format!("cannot write {}", run_path.display()))?;
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", run_path.display())),
    }
    let mut store = Store::open(&args.out)?;
    let input_file = std::fs::File::open(&args.input)
        .with_context(|| format!("cannot open {}", args.input.display()))?;
    let total_lines = BufReader::new(
        std::fs::File::open(&args.input)
            .with_context(|| format!("cannot open {}", args.input.display()))?,
    )
    .lines()
    .count();

    let client = Arc::new(ChatClient::new(ClientConfig {
        base_url: args.base_url.clone(),
        model: args.model.clone(),
        api_key: args.api_key.clone(),
        timeout: Duration::from_secs_f64(args.timeout_s),
        max_retries: args.max_retries,
        backoff_base: Duration::from_secs_f64(args.backoff_s),
        backoff_max: Duration::from_secs(60),
        requests_per_minute: args.rpm,
        tokens_per_minute: args.tpm,
        json_mode: !args.no_json_mode,
        temperature: args.temperature,
        max_tokens: args.max_tokens,
        price_input: args.price_input,
        price_output: args.price_output,
    }));
    let job = Arc::new(Job {
        pipeline: args.pipeline,
        template,
        n: args.n,
        max_tries: args.max_tries,
        seed: args.seed,
        constraints: Constraints::default(),
    });

    // Inputs stream from the file through a shared reader; finished keys are skipped there.
    let lines = Arc::new(Mutex::new(BufReader::new(input_file).lines().enumerate()));
    let skip = args.malformed == "skip";
    let source = args.input.display().to_string();
    let (pipeline_name, seed, n) = (args.pipeline.name(), args.seed, args.n);
    let finished_before = store.finished();
    let (tx, rx) = mpsc::channel::<Result<Outcome>>();
    let malformed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let resumed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Keys already on disk, for the workers' skip check.
    let done_keys = Arc::new(store.keys());
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (lines, tx, client, job) = (lines.clone(), tx.clone(), client.clone(), job.clone());
        let (source, malformed, resumed, done_keys) = (
            source.clone(),
            malformed.clone(),
            resumed.clone(),
            done_keys.clone(),
        );
        workers.push(std::thread::spawn(move || loop {
            let next = lines.lock().expect("input").next();
            let Some((i, line)) = next else { break };
            let line = match line {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(anyhow::anyhow!(
                        "{source}:{}: cannot read ({e})",
                        i + 1
                    )));
                    break;
                }
            };
            if line.trim().is_empty() {
                continue;
            }
            let (pair, negs) = match parse_input(&line) {
                Ok(p) => p,
                Err(problem) if skip => {
                    eprintln!("qzhou: warning: {source}:{}: {problem}; skipped", i + 1);
                    malformed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Err(problem) => {
                    let _ = tx.send(Err(anyhow::anyhow!("{source}:{}: {problem}", i + 1)));
                    break;
                }
            };
            let key = input_key(&pair, pipeline_name, &job.template, seed, n);
            if done_keys.contains(&key) {
                resumed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let input = Input {
                line: i + 1,
                key,
                pair,
                negs,
            };
            if tx.send(job.process(&client, &input)).is_err() {
                break;
            }
        }));
    }
    drop(tx);

    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total_lines as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} inputs  {per_sec}  ETA {eta}  {msg}")
            .expect("a valid template"),
    );
    let (mut outputs, mut rejected, mut failed, mut first_error) = (0usize, 0usize, 0usize, None);
    let mut finished = 0usize;
    let mut short = 0usize;
    for result in rx {
        match result {
            Ok(o) => {
                outputs += o.records.len();
                rejected += o.rejections.len();
                let count = o.accepted;
                if count < n {
                    short += 1;
                }
                store.commit(
                    &o.key,
                    o.records,
                    &o.rejections,
                    json!({"accepted": count, "rejected": o.rejections.len(), "tries": o.tries, "tokens": o.tokens}),
                )?;
                finished += 1;
            }
            Err(e) => {
                // A server failure leaves the input for the next run; a bad input stops the run.
                if e.downcast_ref::<client::ClientError>().is_some()
                    || e.chain().any(|c| c.is::<client::ClientError>())
                {
                    failed += 1;
                    eprintln!("qzhou: warning: {e:#}");
                } else if first_error.is_none() {
                    first_error = Some(e);
                }
            }
        }
        bar.set_position((finished + failed + resumed.load(Ordering::Relaxed)) as u64);
        bar.set_message(format!("${:.4}", client.cost()));
    }
    for w in workers {
        let _ = w.join();
    }
    bar.finish_and_clear();
    let summary = json!({
        "pipeline": pipeline_name,
        "prompt_version": prompt_version,
        "inputs_finished": finished,
        "inputs_skipped_as_done": resumed.load(Ordering::Relaxed),
        "inputs_failed": failed,
        "inputs_short": short,
        "malformed_skipped": malformed.load(Ordering::Relaxed),
        "outputs": outputs,
        "rejected": rejected,
        "finished_before_this_run": finished_before,
        "client": client.summary(),
    });
    eprintln!("{summary}");
    if let Some(e) = first_error {
        return Err(e);
    }
    if failed > 0 {
        bail!(
            "{failed} inputs failed on the server side; run the same command again to retry them"
        );
    }
    Ok(())
}

/// SHA-256 of (input pair, pipeline, prompt template, seed, n), hex.
fn input_key(pair: &Pair, pipeline: &str, template: &str, seed: u64, n: usize) -> String {
    let mut h = Sha256::new();
    for part in [
        pair.query.as_str(),
        pair.pos.as_str(),
        pipeline,
        template,
        &seed.to_string(),
        &n.to_string(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
