//! Pooling of final hidden states into one vector per text, and L2 normalisation.

use burn::prelude::*;
use burn::tensor::FloatDType;

use crate::error::{QzhouError, Result};

/// How token states become a text embedding. Inputs are right-padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over every real token, instruction tokens included (QZhou).
    Mean,
    /// The last real token (Qwen3-Embedding, gte-Qwen2).
    LastToken,
    /// The first token.
    FirstToken,
}

impl std::fmt::Display for Pooling {
    /// The name [`str::parse`] reads back: `mean`, `last-token`, `first-token`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pooling::Mean => "mean",
            Pooling::LastToken => "last-token",
            Pooling::FirstToken => "first-token",
        })
    }
}

impl std::str::FromStr for Pooling {
    type Err = QzhouError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "mean" => Ok(Self::Mean),
            "last" | "last-token" | "lasttoken" | "eos" => Ok(Self::LastToken),
            "first" | "first-token" | "cls" => Ok(Self::FirstToken),
            other => Err(QzhouError::InvalidOption(format!(
                "pooling `{other}` (expected mean, last-token or first-token)"
            ))),
        }
    }
}

/// Pool `hidden` `[batch, seq, hidden]` under `attention_mask` `[batch, seq]` (1 = real token,
/// right padding) into `[batch, hidden]`, in **f32** whatever the dtype of `hidden` (a bf16
/// model's mean is summed in f32, and embeddings always leave the model as f32).
pub fn pool<B: Backend>(
    hidden: Tensor<B, 3>,
    attention_mask: Tensor<B, 2, Int>,
    pooling: Pooling,
) -> Tensor<B, 2> {
    let [b, s, h] = hidden.dims();
    let hidden = hidden.cast(FloatDType::F32);
    match pooling {
        Pooling::Mean => {
            let mask = attention_mask.float().cast(FloatDType::F32);
            let counts = mask.clone().sum_dim(1); // [b, 1]
            let summed = (hidden * mask.reshape([b, s, 1]))
                .sum_dim(1)
                .reshape([b, h]);
            summed / counts
        }
        Pooling::LastToken => {
            let last = attention_mask
                .sum_dim(1)
                .sub_scalar(1)
                .reshape([b, 1, 1])
                .repeat_dim(2, h);
            hidden.gather(1, last).reshape([b, h])
        }
        Pooling::FirstToken => hidden.narrow(1, 0, 1).reshape([b, h]),
    }
}

/// Divide each row of `[batch, dim]` by its L2 norm (floored at 1e-12, as `F.normalize`).
pub fn l2_normalize<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}
