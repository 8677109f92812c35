//! A blocking OpenAI-compatible chat-completions client (`POST {base}/chat/completions`; works
//! with OpenAI, vLLM, llama.cpp's server and Ollama) for many worker threads at once: request
//! timeouts, retries with exponential backoff and jitter on 429 / 5xx / network errors
//! (honouring `Retry-After`), a requests-per-minute and tokens-per-minute limiter, JSON mode
//! with a fallback for servers that reject it, and token/cost accounting.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

/// Where and how to call the server.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL up to the API version, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<String>,
    /// Whole-request timeout (a hung server counts as a network error and is retried).
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff; doubles each retry up to `backoff_max`, times a jitter in [0.5, 1).
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
    /// Ask for `response_format = {"type": "json_object"}` (dropped for good if the server
    /// answers 400 naming it).
    pub json_mode: bool,
    pub temperature: f32,
    pub max_tokens: Option<u32>,
    /// USD per million prompt / completion tokens, for the cost summary.
    pub price_input: f64,
    pub price_output: f64,
}

/// One chat message.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub role: &'static str,
    pub content: String,
}

/// A completion's text and token counts.
#[derive(Debug, Clone)]
pub struct Completion {
    pub content: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// Why a request failed for good.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("HTTP {status} from {url}: {body}")]
    Status {
        status: u16,
        url: String,
        body: String,
    },
    #[error("gave up after {attempts} attempts; last error: {last}")]
    Exhausted { attempts: u32, last: String },
    #[error("unreadable reply from {url}: {problem}")]
    Reply { url: String, problem: String },
}

/// Totals over a run (all threads).
#[derive(Debug, Default)]
pub struct Usage {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub failures: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
}

/// A sliding one-minute window of (time, tokens) for the rate limits.
struct Window {
    sent: VecDeque<(Instant, u64)>,
}

pub struct ChatClient {
    agent: ureq::Agent,
    config: ClientConfig,
    window: Mutex<Window>,
    json_mode: AtomicBool,
    jitter: Mutex<u64>,
    /// Length of the rate-limit window (one minute; shorter in tests).
    window_length: Duration,
    pub usage: Usage,
}

impl ChatClient {
    pub fn new(config: ClientConfig) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout(config.timeout)
            .timeout_connect(config.timeout.min(Duration::from_secs(30)))
            .build();
        Self {
            agent,
            json_mode: AtomicBool::new(config.json_mode),
            config,
            window: Mutex::new(Window {
                sent: VecDeque::new(),
            }),
            jitter: Mutex::new(0x9e37_79b9_7f4a_7c15),
            window_length: Duration::from_secs(60),
            usage: Usage::default(),
        }
    }

    fn url(&self) -> String {
        format!(
            "{}/chat/completions",
            self.config.base_url.trim_end_matches('/')
        )
    }

    /// Blocks until one more request of `tokens` (estimated) fits the per-minute limits.
    fn wait_for_budget(&self, tokens: u64) {
        let (rpm, tpm) = (
            self.config.requests_per_minute,
            self.config.tokens_per_minute,
        );
        if rpm.is_none() && tpm.is_none() {
            return;
        }
        let minute = self.window_length;
        loop {
            let wait = {
                let mut w = self.window.lock().expect("rate window");
                let now = Instant::now();
                while w
                    .sent
                    .front()
                    .is_some_and(|(t, _)| now.duration_since(*t) >= minute)
                {
                    w.sent.pop_front();
                }
                let used: u64 = w.sent.iter().map(|(_, n)| n).sum();
                let requests_ok = rpm.is_none_or(|r| (w.sent.len() as u64) < r as u64);
                // A request larger than the whole budget still goes, alone in its minute.
                let tokens_ok = tpm.is_none_or(|t| used + tokens <= t || w.sent.is_empty());
                if requests_ok && tokens_ok {
                    w.sent.push_back((now, tokens));
                    return;
                }
                let oldest = w.sent.front().map(|(t, _)| *t).unwrap_or(now);
                (oldest + minute).saturating_duration_since(now)
            };
            std::thread::sleep(wait.max(Duration::from_millis(5)));
        }
    }

    /// A jitter factor in [0.5, 1).
    fn jitter(&self) -> f64 {
        let mut state = self.jitter.lock().expect("jitter");
        let mut rng = qzhou_core::data::rng::SplitMix64(*state);
        let v = rng.next();
        *state = rng.0;
        0.5 + (v >> 11) as f64 / (1u64 << 53) as f64 * 0.5
    }

    fn backoff(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .config
            .backoff_base
            .saturating_mul(1u32 << retry.min(16))
            .min(self.config.backoff_max);
        let jittered = exp.mul_f64(self.jitter());
        retry_after.map_or(jittered, |r| r.max(jittered))
    }

    /// One completion of `messages`, retried as configured.
    pub fn complete(&self, messages: &[Message], seed: u64) -> Result<Completion, ClientError> {
        let url = self.url();
        let prompt_chars: usize = messages.iter().map(|m| m.content.len()).sum();
        let estimate = (prompt_chars / 4) as u64 + self.config.max_tokens.unwrap_or(512) as u64;
        let mut last = String::new();
        let attempts = self.config.max_retries + 1;
        for attempt in 0..attempts {
            if attempt > 0 {
                self.usage.retries.fetch_add(1, Ordering::Relaxed);
            }
            self.wait_for_budget(estimate);
            let mut body = json!({
                "model": self.config.model,
                "messages": messages,
                "temperature": self.config.temperature,
                "seed": seed,
            });
            if let Some(m) = self.config.max_tokens {
                body["max_tokens"] = json!(m);
            }
            let json_mode = self.json_mode.load(Ordering::Relaxed);
            if json_mode {
                body["response_format"] = json!({"type": "json_object"});
            }
            let mut request = self
                .agent
                .post(&url)
                .set("Content-Type", "application/json");
            if let Some(key) = &self.config.api_key {
                request = request.set("Authorization", &format!("Bearer {key}"));
            }
            self.usage.requests.fetch_add(1, Ordering::Relaxed);
            let retry_after = match request.send_string(&body.to_string()) {
                Ok(response) => {
                    let text = response.into_string().map_err(|e| ClientError::Reply {
                        url: url.clone(),
                        problem: e.to_string(),
                    });
                    match text.and_then(|t| self.read_reply(&url, &t)) {
                        Ok(c) => return Ok(c),
                        // A truncated body is a network hiccup: retry.
                        Err(e) => {
                            last = e.to_string();
                            None
                        }
                    }
                }
                Err(ureq::Error::Status(status, response)) => {
                    let retry_after = response
                        .header("retry-after")
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .filter(|s| s.is_finite() && *s >= 0.0)
                        .map(|s| Duration::from_secs_f64(s.min(600.0)));
                    let body = response.into_string().unwrap_or_default();
                    if status == 400 && json_mode && body.contains("response_format") {
                        // The server has no JSON mode: ask again without it, no backoff.
                        self.json_mode.store(false, Ordering::Relaxed);
                        continue;
                    }
                    if status != 429 && status < 500 {
                        self.usage.failures.fetch_add(1, Ordering::Relaxed);
                        return Err(ClientError::Status {
                            status,
                            url,
                            body: body.chars().take(300).collect(),
                        });
                    }
                    last = format!(
                        "HTTP {status}: {}",
                        body.chars().take(200).collect::<String>()
                    );
                    retry_after
                }
                Err(ureq::Error::Transport(t)) => {
                    last = t.to_string();
                    None
                }
            };
            if attempt + 1 < attempts {
                std::thread::sleep(self.backoff(attempt, retry_after));
            }
        }
        self.usage.failures.fetch_add(1, Ordering::Relaxed);
        Err(ClientError::Exhausted { attempts, last })
    }

    fn read_reply(&self, url: &str, text: &str) -> Result<Completion, ClientError> {
        let problem = |p: &str| ClientError::Reply {
            url: url.to_string(),
            problem: p.to_string(),
        };
        let v: Value =
            serde_json::from_str(text).map_err(|e| problem(&format!("not JSON ({e})")))?;
        let content = v["choices"][0]["message"]["content"]
            .as_str()
            .ok_or_else(|| problem("no choices[0].message.content"))?
            .to_string();
        let prompt_tokens = v["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
        let completion_tokens = v["usage"]["completion_tokens"].as_u64().unwrap_or(0);
        self.usage
            .prompt_tokens
            .fetch_add(prompt_tokens, Ordering::Relaxed);
        self.usage
            .completion_tokens
            .fetch_add(completion_tokens, Ordering::Relaxed);
        Ok(Completion {
            content,
            prompt_tokens,
            completion_tokens,
        })
    }

    /// Cost so far in USD.
    pub fn cost(&self) -> f64 {
        let p = self.usage.prompt_tokens.load(Ordering::Relaxed) as f64;
        let c = self.usage.completion_tokens.load(Ordering::Relaxed) as f64;
        (p * self.config.price_input + c * self.config.price_output) / 1e6
    }

    /// The run's totals as JSON.
    pub fn summary(&self) -> Value {
        let u = &self.usage;
        json!({
            "requests": u.requests.load(Ordering::Relaxed),
            "retries": u.retries.load(Ordering::Relaxed),
            "failed_requests": u.failures.load(Ordering::Relaxed),
            "prompt_tokens": u.prompt_tokens.load(Ordering::Relaxed),
            "completion_tokens": u.completion_tokens.load(Ordering::Relaxed),
            "cost_usd": self.cost(),
            "json_mode": self.json_mode.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(rpm: Option<u32>, tpm: Option<u64>) -> ChatClient {
        let mut c = ChatClient::new(ClientConfig {
            base_url: "http://127.0.0.1:9/v1".into(),
            model: "m".into(),
            api_key: None,
            timeout: Duration::from_secs(1),
            max_retries: 0,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(350),
            requests_per_minute: rpm,
            tokens_per_minute: tpm,
            json_mode: true,
            temperature: 0.0,
            max_tokens: None,
            price_input: 0.0,
            price_output: 0.0,
        });
        c.window_length = Duration::from_millis(300);
        c
    }

    #[test]
    fn request_and_token_windows_hold_back_the_excess() {
        // 2 requests per window: requests 3-4 wait one window, request 5 a second one.
        let c = client(Some(2), None);
        let start = Instant::now();
        for _ in 0..5 {
            c.wait_for_budget(10);
        }
        assert!(
            start.elapsed() >= Duration::from_millis(600),
            "{:?}",
            start.elapsed()
        );
        // 100 tokens per window, 60 per request: every request after the first waits.
        let c = client(None, Some(100));
        let start = Instant::now();
        for _ in 0..3 {
            c.wait_for_budget(60);
        }
        assert!(
            start.elapsed() >= Duration::from_millis(600),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn backoff_doubles_within_bounds_and_honours_retry_after() {
        let c = client(None, None);
        for retry in 0..6 {
            let d = c.backoff(retry, None);
            let full = Duration::from_millis(100 * (1 << retry)).min(Duration::from_millis(350));
            assert!(d >= full / 2 && d < full, "retry {retry}: {d:?}");
        }
        assert_eq!(
            c.backoff(0, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
    }
}
