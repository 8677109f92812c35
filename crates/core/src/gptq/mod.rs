//! GPTQ for q4 packs (`qzhou export-web --calibration FILE`): calibration moments, the rounding
//! (into q4k's sub-blocks or q4's blocks, as the pack stores each projection), and the loop that
//! rounds every such projection of a model layer by layer.
//!
//! Measured on the real Qwen2.5-0.5B in QZhou form (README "Web packs",
//! benches/quant/gptq_real.sh, documents): with a q4k embedding table (5.24 bits/weight),
//! per-block q4 projections leave the worst of 91 multilingual sentences at 0.944 of f32 and 3
//! of 120 held-out STS-B sentences below 0.98; GPTQ with a varied calibration set of ~4,400
//! tokens, calibrated in the form the pack runs, cuts the mean error by 60 % (0.9904 → 0.9961;
//! STS-B 0.9913 → 0.9977, every sentence ≥ 0.980) and leaves two of the 91 below 0.98 (a run of
//! emoji, 0.953). Calibrating in another attention mode than the pack runs costs most of that
//! gain (causal calibration scored bidirectionally: 0.9920 / 0.9952). With q4k projections
//! (5.41 bits/weight, the default since 2026-12-03): 0.9967 and 0.9977 (worst held-out 0.985),
//! one of the 91 below 0.98 (the emoji run, 0.947). With the table's grids fitted min/max
//! (`weight_pack::Q4_MIN_MAX_GRIDS_WITH_GPTQ`, the default with GPTQ since 2026-12-04), every
//! sentence of both sets is ≥ 0.988 as a document and ≥ 0.991 as a query (means 0.9974 /
//! 0.9982 and 0.9983 / 0.9986).
//!
//! Native only: it needs the full-precision model and `O(n³)` factorisations.

mod calibrate;
mod moments;
mod round;

use std::collections::BTreeMap;

pub use calibrate::{calibrate, LayerInputs, PACKED_TOKENS};
pub use moments::InputMoments;
pub use round::gptq_q4;

use crate::error::{QzhouError, Result};
use crate::kernels::KernelBackend;
use crate::model::QwenEncoder;
use crate::quantization::{Quantization, RoundedQ4};
use crate::weights::TensorSource;

/// Calibration texts `qzhou export-web --calibration` adds to the user's: JSONL, one
/// `{"text": …}` per line — short English and Chinese sentences, other languages, code, markup,
/// numbers, emoji (written for this purpose; none is in the test sets). 71 texts, about 1,000
/// Qwen tokens: variety, not volume — too few alone (see `gptq_q4` on calibration size).
pub const BUILT_IN_CALIBRATION: &str = include_str!("calibration.jsonl");

/// `(block, projection)` of every weight GPTQ can round, in a layer's order.
pub const PROJECTIONS: [(&str, &str); 7] = [
    ("self_attn", "q_proj"),
    ("self_attn", "k_proj"),
    ("self_attn", "v_proj"),
    ("self_attn", "o_proj"),
    ("mlp", "gate_proj"),
    ("mlp", "up_proj"),
    ("mlp", "down_proj"),
];

/// The name in `names` of layer `layer`'s `block.projection` weight (with or without a
/// `model.` prefix).
fn weight_name(names: &[String], layer: usize, block: &str, projection: &str) -> Option<String> {
    let suffix = format!("layers.{layer}.{block}.{projection}.weight");
    names
        .iter()
        .find(|n| *n == &suffix || n.ends_with(&format!(".{suffix}")))
        .cloned()
}

/// GPTQ-round every projection weight of `source` for which `wanted(name, shape)` names a scheme
/// (q4 or q4k: what a q4 pack stores it as), with moments from running `sequences` (token ids, one text
/// each) through `encoder` (loaded from the same `source`). `progress(layer, layers)` is called
/// after each layer. Returns the rounded tensors by checkpoint name; about half a byte per
/// rounded weight is held.
pub fn gptq_projections<B: KernelBackend>(
    encoder: &QwenEncoder<B>,
    source: &dyn TensorSource,
    sequences: &[Vec<u32>],
    device: &B::Device,
    wanted: &dyn Fn(&str, &[usize]) -> Option<Quantization>,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<BTreeMap<String, RoundedQ4>> {
    let names = source.names();
    let layers = encoder.layers.len();
    let mut rounded = BTreeMap::new();
    calibrate(encoder, sequences, device, &mut |layer, mut inputs| {
        // q/k/v (and gate/up) read the same vectors: factorise each moment matrix once.
        let mut sums: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for (block, projection) in PROJECTIONS {
            let Some(name) = weight_name(&names, layer, block, projection) else {
                continue;
            };
            let Some(meta) = source.meta(&name) else {
                continue;
            };
            if meta.shape.len() != 2 {
                continue;
            }
            let Some(scheme) = wanted(&name, &meta.shape) else {
                continue;
            };
            let (values, shape) = source.read_f32(&name)?;
            let input = match projection {
                "q_proj" | "k_proj" | "v_proj" => "attention",
                "gate_proj" | "up_proj" => "mlp",
                other => other,
            };
            let moments = inputs
                .for_projection(projection)
                .expect("every listed projection has inputs");
            if moments.dim() != shape[1] {
                return Err(QzhouError::InvalidOption(format!(
                    "GPTQ: `{name}` reads {} values but its weight has {} columns",
                    moments.dim(),
                    shape[1]
                )));
            }
            let h = sums.entry(input).or_insert_with(|| moments.sum_xxt());
            let q = gptq_q4(&values, shape[0], shape[1], h, scheme)
                .map_err(|e| QzhouError::InvalidOption(format!("tensor `{name}`: {e}")))?;
            rounded.insert(name, q);
        }
        progress(layer + 1, layers);
        Ok(())
    })?;
    Ok(rounded)
}
