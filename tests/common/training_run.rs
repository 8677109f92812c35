//! A short, fully determined training run on any autodiff backend: a random Qwen2 model a bit
//! bigger than the fixtures (3 layers, 64 wide, 4 query / 2 key-value heads, vocabulary 1,000),
//! fixed retrieval batches, InfoNCE, AdamW through [`PrecisionAdamW`] at a chosen precision.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use qzhou_core::losses::retrieval_infonce;
use qzhou_core::model::{DeviceStorage, QwenEncoder, RandomInit};
use qzhou_core::training::{grad_cache_step, Precision, PrecisionAdamW};
use qzhou_core::{AttentionMode, KernelBackend, Pooling, QwenConfig};

/// The run's model shape (random weights, σ = 0.02 as Qwen2's `initializer_range`).
pub fn config() -> QwenConfig {
    QwenConfig::from_json(
        br#"{"architectures": ["QZhouModel"], "model_type": "qwen2", "hidden_size": 64,
        "intermediate_size": 160, "num_hidden_layers": 3, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 512, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "vocab_size": 1000, "hidden_act": "silu",
        "attention_bias": true, "tie_word_embeddings": false, "use_sliding_window": false}"#,
    )
    .unwrap()
}

/// Batch `step`: 6 queries, then 6 × (positive + 2 negatives): 24 texts of 4–19 tokens (ragged,
/// so padding and masks are exercised), ids seeded by the step.
pub fn batch(step: usize) -> Vec<Vec<u32>> {
    (0..24u32)
        .map(|i| {
            let len = 4 + (i * 7 + step as u32 * 3) % 16;
            (0..len)
                .map(|j| 1 + (i * 131 + j * 17 + step as u32 * 71) % 998)
                .collect()
        })
        .collect()
}

fn loss<B: Backend>(e: Tensor<B, 2>) -> qzhou_core::Result<Tensor<B, 1>> {
    let d = e.dims()[1];
    let q = e.clone().narrow(0, 0, 6);
    let docs = e.narrow(0, 6, 18).reshape([6, 3, d]);
    retrieval_infonce(q, docs, 0.05)
}

/// The run's model at its initial weights (seed 7) on `device`, bidirectional.
fn initial_model<B: KernelBackend>(device: &B::Device) -> QwenEncoder<B> {
    let config = config();
    let init = RandomInit::new(&config, 7, 0.02).unwrap();
    QwenEncoder::<B>::load(
        &config,
        AttentionMode::Bidirectional,
        &init,
        device,
        &DeviceStorage::default(),
    )
    .unwrap()
}

/// What a run leaves: the loss of every step and every weight (f32; the masters under mixed
/// precision) before and after, flattened in module order.
pub struct RunResult {
    pub losses: Vec<f64>,
    pub initial: Vec<f32>,
    pub trained: Vec<f32>,
}

/// Train `steps` steps at `lr` and `precision` on `device`, GradCache chunks of `chunk` texts.
pub fn run<B>(
    device: &B::Device,
    steps: usize,
    lr: f64,
    precision: Precision,
    chunk: usize,
) -> RunResult
where
    B: AutodiffBackend + KernelBackend,
    B::InnerBackend: KernelBackend,
{
    let model = initial_model::<B>(device);
    let initial = flatten(&model);
    let mut optimizer = PrecisionAdamW::<QwenEncoder<B>, B>::new(&AdamWConfig::new(), precision);
    let mut model = optimizer.prepare(model);
    let mut losses = Vec::new();
    for step in 0..steps {
        let out = grad_cache_step(&model, &batch(step), 0, Pooling::Mean, chunk, loss).unwrap();
        losses.push(out.loss);
        model = optimizer.step(lr, model, out.grads);
    }
    RunResult {
        losses,
        initial,
        trained: flatten(&optimizer.weights(&model)),
    }
}

/// The gradients of the first `batches` batches' InfoNCE losses at the initial weights (no
/// optimizer step between them), GradCache chunks of `chunk` texts, concatenated and flattened
/// in module order (parameters without a gradient give zeros). Unlike a run, nothing here
/// feeds back, so last-bit differences between backends stay last-bit.
pub fn initial_gradients<B>(device: &B::Device, batches: usize, chunk: usize) -> Vec<f32>
where
    B: AutodiffBackend + KernelBackend,
    B::InnerBackend: KernelBackend,
{
    struct Collect<'a>(&'a burn::optim::GradientsParams, Vec<f32>);
    impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            match self.0.get::<B::InnerBackend, D>(p.id) {
                Some(g) => {
                    let data = g.into_data().convert::<f32>();
                    self.1.extend(data.into_vec::<f32>().unwrap());
                }
                None => self
                    .1
                    .extend(std::iter::repeat_n(0.0, p.shape().num_elements())),
            }
        }
    }
    let model = initial_model::<B>(device);
    let mut all = Vec::new();
    for step in 0..batches {
        let out = grad_cache_step(&model, &batch(step), 0, Pooling::Mean, chunk, loss).unwrap();
        let mut c = Collect(&out.grads, Vec::new());
        model.visit(&mut c);
        all.extend(c.1);
    }
    all
}

/// Every float parameter's values as f32, in module order.
pub fn flatten<B: Backend, M: Module<B>>(module: &M) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl<B: Backend> ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            let data = p.val().into_data().convert::<f32>();
            self.0.extend(data.into_vec::<f32>().unwrap());
        }
    }
    let mut c = Collect(Vec::new());
    module.visit(&mut c);
    c.0
}

/// `‖a − b‖₂`.
pub fn distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// `‖(a − base) − (b − base)‖ / ‖b − base‖`: how far update `a` is from reference update `b`.
pub fn relative_update_error(a: &[f32], b: &[f32], base: &[f32]) -> f64 {
    let reference: Vec<f32> = b.iter().zip(base).map(|(x, y)| x - y).collect();
    let norm = reference
        .iter()
        .map(|x| (*x as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    distance(a, b) / norm
}
