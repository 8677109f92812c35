//! Dynamic batching: requests wait in a bounded queue; the model thread takes as many as fit
//! one padded-token budget (waiting a short while for more when the budget is not full), runs
//! them as one [`Embedder::embed_token_ids_with`] call and sends each request its own rows.
//!
//! A text's vector does not depend on its batch mates (padding is masked in attention and
//! pooling), so a request gets what the library returns for it alone.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use qzhou_core::{Embedder, KernelBackend};
use tokio::sync::oneshot;

use super::error::ApiError;
use super::telemetry;

/// One request's token ids on their way to the model, and where its vectors go.
pub struct Job {
    /// Token ids of each input (already prefixed, truncated and checked).
    pub ids: Vec<Vec<u32>>,
    /// L2-normalise the vectors.
    pub normalize: bool,
    reply: oneshot::Sender<Result<Vec<Vec<f32>>, ApiError>>,
}

impl Job {
    fn texts(&self) -> usize {
        self.ids.len()
    }
    fn longest(&self) -> usize {
        self.ids.iter().map(Vec::len).max().unwrap_or(0)
    }
}

/// The sending side, shared by every request handler.
#[derive(Clone)]
pub struct Queue {
    sender: SyncSender<Job>,
    depth: Arc<AtomicUsize>,
    capacity: usize,
    alive: Arc<AtomicBool>,
}

/// The model thread's side.
pub struct QueueReceiver {
    receiver: Receiver<Job>,
    depth: Arc<AtomicUsize>,
    alive: Arc<AtomicBool>,
}

/// A bounded queue of `capacity` (≥ 1) requests waiting for the model.
pub fn queue(capacity: usize) -> (Queue, QueueReceiver) {
    let (sender, receiver) = std::sync::mpsc::sync_channel(capacity);
    let depth = Arc::new(AtomicUsize::new(0));
    let alive = Arc::new(AtomicBool::new(true));
    (
        Queue {
            sender,
            depth: depth.clone(),
            capacity,
            alive: alive.clone(),
        },
        QueueReceiver {
            receiver,
            depth,
            alive,
        },
    )
}

impl Queue {
    /// Queue `ids` and wait for their vectors. A full queue is a 429 at once (never an
    /// unbounded wait or buffer).
    pub async fn embed(
        &self,
        ids: Vec<Vec<u32>>,
        normalize: bool,
    ) -> Result<Vec<Vec<f32>>, ApiError> {
        let (reply, answer) = oneshot::channel();
        // Count first so the model thread never decrements below zero.
        let depth = self.depth.fetch_add(1, Ordering::SeqCst) + 1;
        match self.sender.try_send(Job {
            ids,
            normalize,
            reply,
        }) {
            Ok(()) => telemetry::queue_depth(depth),
            Err(TrySendError::Full(_)) => {
                self.depth.fetch_sub(1, Ordering::SeqCst);
                telemetry::queue_rejected();
                return Err(ApiError::overloaded(self.capacity, 1));
            }
            Err(TrySendError::Disconnected(_)) => {
                self.depth.fetch_sub(1, Ordering::SeqCst);
                return Err(ApiError::unavailable("the model thread has stopped"));
            }
        }
        answer
            .await
            .map_err(|_| ApiError::unavailable("the model thread stopped before answering"))?
    }

    /// Whether the model thread is still taking work.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Requests waiting (not yet taken by the model thread).
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::SeqCst)
    }
}

/// How the model thread forms batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    /// Padded tokens (texts × longest text) one batch may hold; a request over it runs alone
    /// (the embedder splits it into passes of this size).
    pub max_batch_tokens: usize,
    /// How long to wait for more requests when the budget is not full.
    pub max_wait: Duration,
}

/// Run `embedder` on queued requests until every [`Queue`] is dropped (the HTTP server has
/// shut down and drained), then return.
pub fn run<B: KernelBackend>(embedder: &Embedder<B>, queue: QueueReceiver, policy: BatchPolicy) {
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match queue.receiver.recv() {
                Ok(job) => {
                    queue.taken();
                    job
                }
                Err(_) => break,
            },
        };
        let mut texts = first.texts();
        let mut longest = first.longest();
        let mut jobs = vec![first];
        let deadline = Instant::now() + policy.max_wait;
        while texts * longest < policy.max_batch_tokens {
            let next = match queue.receiver.try_recv() {
                Ok(job) => job,
                Err(_) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match queue.receiver.recv_timeout(left) {
                        Ok(job) => job,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            queue.taken();
            let (t, l) = (texts + next.texts(), longest.max(next.longest()));
            if t * l > policy.max_batch_tokens {
                carried = Some(next);
                break;
            }
            (texts, longest) = (t, l);
            jobs.push(next);
        }
        run_batch(embedder, jobs);
    }
    queue.alive.store(false, Ordering::SeqCst);
}

impl QueueReceiver {
    fn taken(&self) {
        let depth = self.depth.fetch_sub(1, Ordering::SeqCst) - 1;
        telemetry::queue_depth(depth);
    }
}

/// Embed the jobs' texts in one call per normalisation setting and answer each job.
fn run_batch<B: KernelBackend>(embedder: &Embedder<B>, jobs: Vec<Job>) {
    // Clients that hung up do not need their vectors.
    let (normalized, plain): (Vec<Job>, Vec<Job>) = jobs
        .into_iter()
        .filter(|j| !j.reply.is_closed())
        .partition(|j| j.normalize);
    for group in [normalized, plain] {
        if !group.is_empty() {
            run_group(embedder, group);
        }
    }
}

/// One call for jobs with the same normalisation. When the merged call fails, each job runs
/// alone so that an error reaches only the request that caused it.
fn run_group<B: KernelBackend>(embedder: &Embedder<B>, group: Vec<Job>) {
    let normalize = group[0].normalize;
    let ids: Vec<Vec<u32>> = group.iter().flat_map(|j| j.ids.iter().cloned()).collect();
    let started = Instant::now();
    let result = embed_guarded(embedder, &ids, normalize);
    telemetry::batch(ids.len(), ids.iter().map(Vec::len).sum(), started.elapsed());
    match result {
        Ok(rows) => {
            let mut rows = rows.into_iter();
            for job in group {
                let mine: Vec<Vec<f32>> = rows.by_ref().take(job.texts()).collect();
                let _ = job.reply.send(Ok(mine)); // Err: the client left
            }
        }
        Err(_) if group.len() > 1 => {
            for job in group {
                let alone = embed_guarded(embedder, &job.ids, normalize);
                let _ = job.reply.send(alone);
            }
        }
        Err(e) => {
            for job in group {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
}

/// [`Embedder::embed_token_ids_with`] with a panic turned into a 500 (the server keeps serving).
fn embed_guarded<B: KernelBackend>(
    embedder: &Embedder<B>,
    ids: &[Vec<u32>],
    normalize: bool,
) -> Result<Vec<Vec<f32>>, ApiError> {
    let pooling = embedder.pooling();
    match catch_unwind(AssertUnwindSafe(|| {
        embedder.embed_token_ids_with(ids, (pooling, normalize))
    })) {
        Ok(result) => result.map_err(ApiError::from),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            Err(ApiError::internal(format!("the model failed: {what}")))
        }
    }
}
