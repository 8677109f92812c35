//! One contrastive training step with GradCache (Gao et al. 2021): embed the batch in chunks
//! without building a graph, compute the loss and its gradient with respect to the
//! embeddings, then re-embed chunk by chunk with a graph and back-propagate each chunk's slice
//! of that gradient. Peak activation memory is one chunk's, while the loss still sees every
//! in-batch negative, so a 256 × 1536-token batch fits one GPU. The result equals plain
//! back-propagation through the whole batch (the model has no dropout), up to float rounding.

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::batching::pad_batch;
use crate::error::{QzhouError, Result};
use crate::kernels::KernelBackend;
use crate::model::QwenEncoder;
use crate::pooling::{pool, Pooling};

/// What a step produced.
pub struct StepOutput {
    /// The loss value.
    pub loss: f64,
    /// Gradients of the loss for every trainable parameter.
    pub grads: GradientsParams,
}

/// Pooled, unnormalised embeddings `[texts, hidden]` of token-id sequences (each non-empty)
/// in one padded forward pass.
pub fn embed_texts<B: KernelBackend>(
    model: &QwenEncoder<B>,
    texts: &[&[u32]],
    pad_id: u32,
    pooling: Pooling,
    device: &B::Device,
) -> Tensor<B, 2> {
    let (ids, mask) = pad_batch::<B>(texts, pad_id, device);
    let hidden = model.forward(ids, mask.clone());
    match pooling {
        Pooling::Mean => B::mean_pool(hidden, mask, false),
        other => pool(hidden, mask, other),
    }
}

/// Embed `texts` (token ids, in the order `loss` expects its rows), apply `loss` to the
/// `[texts, hidden]` embeddings and return the loss with the parameter gradients. With
/// `chunk ≥ texts.len()` this is plain back-propagation; otherwise GradCache runs the model
/// on `chunk` texts at a time (see the module docs).
pub fn grad_cache_step<B, F>(
    model: &QwenEncoder<B>,
    texts: &[Vec<u32>],
    pad_id: u32,
    pooling: Pooling,
    chunk: usize,
    loss: F,
) -> Result<StepOutput>
where
    B: AutodiffBackend + KernelBackend,
    B::InnerBackend: KernelBackend,
    F: FnOnce(Tensor<B, 2>) -> Result<Tensor<B, 1>>,
{
    data_parallel_step(
        std::slice::from_ref(model),
        texts,
        pad_id,
        pooling,
        chunk,
        loss,
    )
}

/// [`grad_cache_step`] over several devices (data parallel): `replicas[i]` is the model on
/// device `i` (`replicas[0]`'s device is the main one, where the loss runs and the gradients
/// are returned; the others are [`burn::module::Module::fork`]s of it). Chunk `c` runs on
/// replica `c mod n`, each device in its own thread; the embeddings of all devices meet on the
/// main device, so **every in-batch negative is seen by every query** whatever device embedded
/// it, and each device back-propagates its chunks' slices of the loss gradient. Gradients are
/// summed on the main device in chunk order, so the result does not depend on thread timing.
/// After the optimizer step, re-fork the updated model to the other devices.
pub fn data_parallel_step<B, F>(
    replicas: &[QwenEncoder<B>],
    texts: &[Vec<u32>],
    pad_id: u32,
    pooling: Pooling,
    chunk: usize,
    loss: F,
) -> Result<StepOutput>
where
    B: AutodiffBackend + KernelBackend,
    B::InnerBackend: KernelBackend,
    F: FnOnce(Tensor<B, 2>) -> Result<Tensor<B, 1>>,
{
    if chunk == 0 {
        return Err(QzhouError::InvalidOption(
            "GradCache chunk size must be at least 1".into(),
        ));
    }
    let Some(main) = replicas.first() else {
        return Err(QzhouError::InvalidOption("no device to train on".into()));
    };
    if let Some(i) = texts.iter().position(Vec::is_empty) {
        return Err(QzhouError::EmptyText { index: i });
    }
    let device_of = |m: &QwenEncoder<B>| m.embed_tokens.device();
    let main_device = device_of(main);
    let chunks: Vec<Vec<&[u32]>> = texts
        .chunks(chunk)
        .map(|c| c.iter().map(Vec::as_slice).collect())
        .collect();
    if chunks.len() == 1 && replicas.len() == 1 {
        let embeddings = embed_texts(main, &chunks[0], pad_id, pooling, &main_device);
        let value = loss(embeddings)?;
        let loss_value = scalar(&value)?;
        let grads = GradientsParams::from_grads(value.backward(), main);
        return Ok(StepOutput {
            loss: loss_value,
            grads,
        });
    }
    let n = replicas.len();
    // Chunks of replica r, with their index: c = r, r + n, r + 2n, ...
    let assigned = |r: usize| (r..chunks.len()).step_by(n);
    // 1. Embeddings without a graph, every device at once; gathered on the main device.
    let mut cached: Vec<Option<Tensor<B::InnerBackend, 2>>> = vec![None; chunks.len()];
    std::thread::scope(|s| {
        let jobs: Vec<_> = replicas
            .iter()
            .enumerate()
            .map(|(r, replica)| {
                let chunks = &chunks;
                let main_device = &main_device;
                s.spawn(move || {
                    let frozen = replica.valid();
                    let device = device_of(replica);
                    assigned(r)
                        .map(|c| {
                            let e = embed_texts(&frozen, &chunks[c], pad_id, pooling, &device);
                            (c, e.to_device(main_device))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for job in jobs {
            for (c, e) in job.join().expect("an embedding thread panicked") {
                cached[c] = Some(e);
            }
        }
    });
    let cached: Vec<_> = cached
        .into_iter()
        .map(|e| e.expect("every chunk embedded"))
        .collect();
    // 2. Loss and its gradient with respect to the embeddings (main device).
    let embeddings = Tensor::<B, 2>::from_inner(Tensor::cat(cached, 0)).require_grad();
    let value = loss(embeddings.clone())?;
    let loss_value = scalar(&value)?;
    let embedding_grad = embeddings
        .grad(&value.backward())
        .ok_or_else(|| QzhouError::Backend("the loss does not depend on the embeddings".into()))?;
    let starts: Vec<usize> = chunks
        .iter()
        .scan(0, |at, c| {
            let start = *at;
            *at += c.len();
            Some(start)
        })
        .collect();
    // 3. Each device re-embeds its chunks with a graph and back-propagates its slices. The
    //    gradients are summed on the main device in chunk order as they arrive, and a device
    //    starts its next chunk only once its last one is summed, so the main device holds the
    //    running sum plus at most one chunk's gradients per device (not every chunk's).
    type Summed = std::sync::mpsc::SyncSender<()>;
    type Chunk = (usize, std::thread::Result<GradientsParams>, Summed);
    let mut accumulator = GradientsAccumulator::<QwenEncoder<B>>::new();
    std::thread::scope(|s| {
        let (results, arrivals) = std::sync::mpsc::channel::<Chunk>();
        for (r, replica) in replicas.iter().enumerate() {
            let results = results.clone();
            let (chunks, starts, embedding_grad) = (&chunks, &starts, &embedding_grad);
            let main_device = &main_device;
            s.spawn(move || {
                let device = device_of(replica);
                for c in assigned(r) {
                    let grads = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let rows = embedding_grad
                            .clone()
                            .narrow(0, starts[c], chunks[c].len())
                            .to_device(&device);
                        let e = embed_texts(replica, &chunks[c], pad_id, pooling, &device);
                        let surrogate = (e * Tensor::from_inner(rows)).sum();
                        GradientsParams::from_grads(surrogate.backward(), replica)
                            .to_device(main_device, replica)
                    }));
                    let failed = grads.is_err();
                    let (summed, wait) = std::sync::mpsc::sync_channel(1);
                    // Stop when this chunk failed or the main thread gave up (its end of
                    // either channel is gone).
                    if results.send((c, grads, summed)).is_err() || failed || wait.recv().is_err() {
                        return;
                    }
                }
            });
        }
        drop(results);
        let mut waiting = std::collections::BTreeMap::new();
        let mut next = 0;
        for (c, grads, summed) in arrivals {
            let grads = grads.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            waiting.insert(c, (grads, summed));
            while let Some((grads, summed)) = waiting.remove(&next) {
                accumulator.accumulate(main, grads);
                // The device may be gone already (its last chunk); nothing waits then.
                let _ = summed.send(());
                next += 1;
            }
        }
        assert_eq!(next, chunks.len(), "every chunk back-propagated");
    });
    Ok(StepOutput {
        loss: loss_value,
        grads: accumulator.grads(),
    })
}

/// A `[1]` tensor's value, refusing NaN/inf (a diverged step must not reach the optimizer).
fn scalar<B: Backend>(t: &Tensor<B, 1>) -> Result<f64> {
    let v = t.clone().into_scalar().elem::<f64>();
    if v.is_finite() {
        Ok(v)
    } else {
        Err(QzhouError::Backend(format!(
            "the loss is {v}: training diverged (lower the learning rate or check the data)"
        )))
    }
}
