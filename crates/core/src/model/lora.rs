//! LoRA on a whole encoder: which projections get adapters ([`LoraConfig`]), adding them
//! (`with_lora`), merging them back (`merge_lora`) and making every weight trainable again for a
//! full stage after a LoRA one (`all_trainable`). The adapter module itself is
//! [`LoraLinear`] (`lora_linear.rs`), which the projections hold; keeping the two apart keeps
//! the module graph one-way (lora_linear ← linear ← encoder ← lora).

use burn::module::Param;
use burn::prelude::*;

use super::encoder::QwenEncoder;
use super::linear::Projection;
use super::lora_linear::LoraLinear;
use crate::error::{QzhouError, Result};
/// Names of the seven projections of a decoder layer, in [`QwenEncoder::projections`] order.
pub const PROJECTION_NAMES: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// Where LoRA adapters go and how big they are (PEFT's `r`, `lora_alpha`, `target_modules`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank `r` of every adapter.
    pub rank: usize,
    /// `α`: the update is scaled by `α / r`.
    pub alpha: f64,
    /// Projection names to adapt (from [`PROJECTION_NAMES`]); default all seven, as
    /// Qwen3-Embedding-style recipes do.
    #[serde(default = "all_projections")]
    pub targets: Vec<String>,
}

fn all_projections() -> Vec<String> {
    PROJECTION_NAMES.iter().map(|s| s.to_string()).collect()
}

impl<B: Backend> QwenEncoder<B> {
    /// Freeze every weight and wrap the `config.targets` projections of every layer with a
    /// fresh adapter (the forward pass is unchanged until training moves `B`). Adapters draw
    /// `A` from the backend's random generator: seed it (`B::seed`) for a reproducible run.
    pub fn with_lora(self, config: &LoraConfig) -> Result<Self> {
        if config.targets.is_empty() {
            return Err(QzhouError::InvalidOption(
                "LoRA targets are empty: name at least one projection".into(),
            ));
        }
        for t in &config.targets {
            if !PROJECTION_NAMES.contains(&t.as_str()) {
                return Err(QzhouError::InvalidOption(format!(
                    "unknown LoRA target `{t}`; expected some of {}",
                    PROJECTION_NAMES.join(", ")
                )));
            }
        }
        self.no_grad().map_projections(|name, p| {
            if !config.targets.iter().any(|t| t == name) {
                return Ok(p);
            }
            match p {
                Projection::Dense(linear) => Ok(Projection::Lora(LoraLinear::new(
                    linear,
                    config.rank,
                    config.alpha,
                )?)),
                _ => Err(QzhouError::InvalidOption(format!(
                    "LoRA needs dense {name} weights (load the model unquantised and unsplit)"
                ))),
            }
        })
    }

    /// Fold every adapter into its base weight ([`LoraLinear::merge`]): plain dense
    /// projections again, for inference and export.
    pub fn merge_lora(self) -> Self {
        self.map_projections(|_, p| {
            Ok(match p {
                Projection::Lora(l) => Projection::Dense(l.merge()),
                other => other,
            })
        })
        .expect("merging cannot fail")
    }

    /// Every parameter requires gradients again (full fine-tuning, e.g. after
    /// [`QwenEncoder::merge_lora`] of a LoRA stage).
    pub fn all_trainable(self) -> Self {
        struct RequireGrad;
        impl<B: Backend> burn::module::ModuleMapper<B> for RequireGrad {
            fn map_float<const D: usize>(
                &mut self,
                param: Param<Tensor<B, D>>,
            ) -> Param<Tensor<B, D>> {
                param.map(|t| t.set_require_grad(true))
            }
        }
        self.map(&mut RequireGrad)
    }

    /// Whether any projection carries an adapter.
    pub fn has_lora(&self) -> bool {
        self.projections()
            .iter()
            .any(|p| matches!(p, Projection::Lora(_)))
    }
}
