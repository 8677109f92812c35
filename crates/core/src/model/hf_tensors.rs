//! The encoder's weights back out under Hugging Face names and layouts — the inverse of
//! [`QwenEncoder::load`], for writing checkpoints that `transformers` reads.

use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;

use super::embedding::TokenEmbedding;
use super::encoder::QwenEncoder;
use super::linear::Projection;
use super::lora::PROJECTION_NAMES;
use crate::error::{QzhouError, Result};

/// One weight in HF layout: `name` without the `model.` prefix (as `Qwen2Model` saves it),
/// `shape` row-major (`[out, in]` for projections), `values` in f32.
#[derive(Debug, Clone, PartialEq)]
pub struct HfTensor {
    /// HF parameter name, e.g. `layers.0.self_attn.q_proj.weight`.
    pub name: String,
    /// Row-major shape.
    pub shape: Vec<usize>,
    /// The values.
    pub values: Vec<f32>,
}

impl<B: Backend> QwenEncoder<B> {
    /// Hand every weight to `sink` in HF naming and layout, one tensor at a time (so a large
    /// model is never copied to the host whole). LoRA adapters are merged into their base
    /// weight and split weights are joined; block-quantised weights are refused (export from
    /// the full-precision model).
    pub fn for_each_hf_tensor(&self, mut sink: impl FnMut(HfTensor) -> Result<()>) -> Result<()> {
        let table: Vec<Tensor<B, 2>> = match &self.embed_tokens {
            TokenEmbedding::Dense(parts) => parts.iter().map(Param::val).collect(),
            TokenEmbedding::Quantized(_) => {
                return Err(QzhouError::InvalidOption(
                    "the token embedding is block-quantised on the device; export from the \
                     full-precision model"
                        .into(),
                ))
            }
        };
        sink(host("embed_tokens.weight", Tensor::cat(table, 0))?)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let p = format!("layers.{i}.");
            sink(host(
                &format!("{p}input_layernorm.weight"),
                layer.input_layernorm.gamma.val(),
            )?)?;
            sink(host(
                &format!("{p}post_attention_layernorm.weight"),
                layer.post_attention_layernorm.gamma.val(),
            )?)?;
            let a = &layer.self_attn;
            let m = &layer.mlp;
            let projections = [
                &a.q_proj,
                &a.k_proj,
                &a.v_proj,
                &a.o_proj,
                &m.gate_proj,
                &m.up_proj,
                &m.down_proj,
            ];
            for (k, (name, projection)) in PROJECTION_NAMES.iter().zip(projections).enumerate() {
                // q, k, v, o belong to the attention block, the rest to the MLP.
                let group = if k < 4 { "self_attn" } else { "mlp" };
                let (weight, bias) = dense_weight(projection, name)?;
                sink(host(
                    &format!("{p}{group}.{name}.weight"),
                    weight.transpose(),
                )?)?;
                if let Some(bias) = bias {
                    sink(host(&format!("{p}{group}.{name}.bias"), bias)?)?;
                }
            }
            for (name, norm) in [("q_norm", &a.q_norm), ("k_norm", &a.k_norm)] {
                if let Some(norm) = norm {
                    sink(host(
                        &format!("{p}self_attn.{name}.weight"),
                        norm.gamma.val(),
                    )?)?;
                }
            }
        }
        sink(host("norm.weight", self.norm.gamma.val())?)
    }
}

/// The `[in, out]` weight and bias of a projection as one dense matrix.
fn dense_weight<B: Backend>(
    projection: &Projection<B>,
    name: &str,
) -> Result<(Tensor<B, 2>, Option<Tensor<B, 1>>)> {
    let of = |l: &Linear<B>| (l.weight.val(), l.bias.as_ref().map(Param::val));
    Ok(match projection {
        Projection::Dense(l) => of(l),
        Projection::Lora(l) => of(&l.merge()),
        Projection::Split(s) => {
            let weights = s.parts.iter().map(|l| l.weight.val()).collect();
            let biases: Option<Vec<Tensor<B, 1>>> = s
                .parts
                .iter()
                .map(|l| l.bias.as_ref().map(Param::val))
                .collect();
            (Tensor::cat(weights, 1), biases.map(|b| Tensor::cat(b, 0)))
        }
        Projection::Quantized(_) => {
            return Err(QzhouError::InvalidOption(format!(
                "{name} is block-quantised on the device; export from a full-precision load"
            )))
        }
    })
}

fn host<B: Backend, const D: usize>(name: &str, tensor: Tensor<B, D>) -> Result<HfTensor> {
    let shape = tensor.dims().to_vec();
    let values = tensor
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| QzhouError::Backend(format!("{name}: {e:?}")))?;
    Ok(HfTensor {
        name: name.to_string(),
        shape,
        values,
    })
}
