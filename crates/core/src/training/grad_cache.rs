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
use burn::tensor::FloatDType;

use crate::batching::pad_batch;
use crate::error::{QzhouError, Result};
use crate::kernels::KernelBackend;
use crate::model::QwenEncoder;
use crate::pooling::{pool, Pooling};
use crate::training::peers::{all_reduce_gradients, PeerGroup, Solo};

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
    peer_step(model, texts, pad_id, pooling, chunk, &Solo, loss)
}

/// [`grad_cache_step`] as one peer of a data-parallel group (`peers`, e.g. one per GPU and
/// node): every peer is called with the **same** global batch and its own replica of the
/// same weights. The batch is cut into GradCache chunks of `chunk` texts; chunk `c` is
/// embedded by peer `c mod peers.size()`.
///
/// 1. Each peer embeds its chunks without a graph into the rows they hold in a zero
///    `[texts, hidden]` matrix; one all-reduce (sum) gives every peer all embeddings, exactly
///    (each row is one peer's values plus zeros), so **every in-batch negative is seen by
///    every query** whichever peer embedded it.
/// 2. Every peer computes the loss and its gradient with respect to the embeddings (the same
///    values everywhere).
/// 3. Each peer re-embeds its chunks with a graph and back-propagates its rows of that
///    gradient, summing its chunks in chunk order.
/// 4. The parameter gradients are all-reduced as a **sum** ([`all_reduce_gradients`]): the
///    gradient of the global batch's loss, what one device would compute, on every peer —
///    so identical optimizer steps keep the replicas identical.
///
/// The result equals the one-device step up to float rounding (peers sum their chunks
/// separately before the all-reduce adds the partial sums). A peer with no chunk (more peers
/// than chunks) contributes zeros.
pub fn peer_step<B, P, F>(
    model: &QwenEncoder<B>,
    texts: &[Vec<u32>],
    pad_id: u32,
    pooling: Pooling,
    chunk: usize,
    peers: &P,
    loss: F,
) -> Result<StepOutput>
where
    B: AutodiffBackend + KernelBackend,
    B::InnerBackend: KernelBackend,
    P: PeerGroup<B::InnerBackend>,
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
    let (rank, size) = (peers.rank(), peers.size());
    if size == 0 || rank >= size {
        return Err(QzhouError::InvalidOption(format!(
            "peer {rank} of a group of {size}"
        )));
    }
    let device = model.embed_tokens.device();
    let chunks: Vec<Vec<&[u32]>> = texts
        .chunks(chunk)
        .map(|c| c.iter().map(Vec::as_slice).collect())
        .collect();
    if chunks.len() == 1 && size == 1 {
        let embeddings = embed_texts(model, &chunks[0], pad_id, pooling, &device);
        let value = loss(embeddings)?;
        let loss_value = scalar(&value)?;
        let grads = GradientsParams::from_grads(value.backward(), model);
        return Ok(StepOutput {
            loss: loss_value,
            grads,
        });
    }
    let starts: Vec<usize> = chunks
        .iter()
        .scan(0, |at, c| {
            let start = *at;
            *at += c.len();
            Some(start)
        })
        .collect();
    let mine: Vec<usize> = (rank..chunks.len()).step_by(size).collect();
    // 1. Embeddings without a graph.
    let frozen = model.valid();
    let embedded = mine
        .iter()
        .map(|&c| embed_texts(&frozen, &chunks[c], pad_id, pooling, &device));
    let all = if size == 1 {
        Tensor::cat(embedded.collect(), 0)
    } else {
        // Gathered in f32 whatever the compute dtype, so every peer sends the same type.
        let hidden = model.embed_tokens.hidden_size();
        let mut rows = Tensor::<B::InnerBackend, 2>::zeros([texts.len(), hidden], &device);
        for (&c, e) in mine.iter().zip(embedded) {
            let range = [starts[c]..starts[c] + chunks[c].len(), 0..hidden];
            rows = rows.slice_assign(range, e.cast(FloatDType::F32));
        }
        peers.all_reduce_sum(rows)?
    };
    // 2. Loss and its gradient with respect to the embeddings.
    let embeddings = Tensor::<B, 2>::from_inner(all).require_grad();
    let value = loss(embeddings.clone())?;
    let loss_value = scalar(&value)?;
    let embedding_grad = embeddings
        .grad(&value.backward())
        .ok_or_else(|| QzhouError::Backend("the loss does not depend on the embeddings".into()))?;
    // 3. This peer's chunks with a graph, each back-propagating its rows of the gradient;
    //    summed in chunk order, one chunk's graph alive at a time.
    let mut accumulator = GradientsAccumulator::<QwenEncoder<B>>::new();
    for &c in &mine {
        let rows = embedding_grad.clone().narrow(0, starts[c], chunks[c].len());
        let e = embed_texts(model, &chunks[c], pad_id, pooling, &device);
        let rows = Tensor::<B, 2>::from_inner(rows);
        let rows = if rows.dtype() == e.dtype() {
            rows
        } else {
            rows.cast(e.dtype())
        };
        let surrogate = (e * rows).sum();
        accumulator.accumulate(
            model,
            GradientsParams::from_grads(surrogate.backward(), model),
        );
    }
    let grads = accumulator.grads();
    // 4. The global gradient on every peer.
    let grads = if size == 1 {
        grads
    } else {
        all_reduce_gradients(model, grads, peers)?
    };
    Ok(StepOutput {
        loss: loss_value,
        grads,
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
