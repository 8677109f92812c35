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
    if chunk == 0 {
        return Err(QzhouError::InvalidOption(
            "GradCache chunk size must be at least 1".into(),
        ));
    }
    if let Some(i) = texts.iter().position(Vec::is_empty) {
        return Err(QzhouError::EmptyText { index: i });
    }
    let device = model.embed_tokens.parts[0].val().device();
    let chunks: Vec<Vec<&[u32]>> = texts
        .chunks(chunk)
        .map(|c| c.iter().map(Vec::as_slice).collect())
        .collect();
    if chunks.len() == 1 {
        let embeddings = embed_texts(model, &chunks[0], pad_id, pooling, &device);
        let value = loss(embeddings)?;
        let loss_value = scalar(&value)?;
        let grads = GradientsParams::from_grads(value.backward(), model);
        return Ok(StepOutput {
            loss: loss_value,
            grads,
        });
    }
    // 1. Embeddings without a graph.
    let frozen = model.valid();
    let cached: Vec<Tensor<B::InnerBackend, 2>> = chunks
        .iter()
        .map(|c| embed_texts(&frozen, c, pad_id, pooling, &device))
        .collect();
    // 2. Loss and its gradient with respect to the embeddings.
    let embeddings = Tensor::<B, 2>::from_inner(Tensor::cat(cached, 0)).require_grad();
    let value = loss(embeddings.clone())?;
    let loss_value = scalar(&value)?;
    let embedding_grad = embeddings
        .grad(&value.backward())
        .ok_or_else(|| QzhouError::Backend("the loss does not depend on the embeddings".into()))?;
    // 3. Re-embed each chunk with a graph; back-propagate its slice of the cached gradient.
    let mut accumulator = GradientsAccumulator::<QwenEncoder<B>>::new();
    let mut start = 0;
    for c in &chunks {
        let rows = embedding_grad.clone().narrow(0, start, c.len());
        start += c.len();
        let surrogate =
            (embed_texts(model, c, pad_id, pooling, &device) * Tensor::from_inner(rows)).sum();
        accumulator.accumulate(
            model,
            GradientsParams::from_grads(surrogate.backward(), model),
        );
    }
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
