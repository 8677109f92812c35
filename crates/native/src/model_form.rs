//! `--attention` and `--pooling`: run a model folder in another form than its files say (a
//! stock Qwen2 folder as QZhou: bidirectional + mean), for every command that embeds.

use anyhow::Result;
use clap::Args;
use qzhou_core::{AttentionMode, Pooling};

/// The override flags, flattened into `embed`, `serve`, `eval` and `mine`.
#[derive(Args, Debug, Clone, Default)]
pub struct FormOverrides {
    /// Attention override: bidirectional or causal (default: from the model).
    #[arg(long, value_parser = ["bidirectional", "causal"])]
    pub attention: Option<String>,
    /// Pooling override: mean, last-token or first-token (default: from the model).
    #[arg(long, value_parser = ["mean", "last-token", "first-token"])]
    pub pooling: Option<String>,
}

impl FormOverrides {
    /// The attention mode asked for, if any.
    pub fn attention(&self) -> Result<Option<AttentionMode>> {
        Ok(self
            .attention
            .as_deref()
            .map(str::parse::<AttentionMode>)
            .transpose()?)
    }

    /// The pooling asked for, if any.
    pub fn pooling(&self) -> Result<Option<Pooling>> {
        Ok(self
            .pooling
            .as_deref()
            .map(str::parse::<Pooling>)
            .transpose()?)
    }
}
