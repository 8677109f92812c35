//! `--task`, `--instruction` and `--prompt-style`: the prompt flags of `embed` and `serve`.

use anyhow::Result;
use clap::Args;
use qzhou_core::{EmbedOptions, PromptStyle, TextKind};

/// The prompt flags, flattened into the commands that embed texts they are given.
#[derive(Args, Debug, Clone)]
pub struct PromptArgs {
    /// mteb task whose QZhou instruction to use (e.g. FiQA2018, STSBenchmark, T2Retrieval).
    #[arg(long, conflicts_with = "instruction")]
    pub task: Option<String>,
    /// Explicit instruction for queries.
    #[arg(long)]
    pub instruction: Option<String>,
    /// Query template: `space` = "Query: {text}" (QZhou evaluation), `no-space` = "Query:{text}".
    #[arg(long, default_value = "space", value_parser = ["space", "no-space"])]
    pub prompt_style: String,
}

impl PromptArgs {
    /// Embed options for texts of `kind` with these flags.
    pub fn options(&self, kind: TextKind) -> Result<EmbedOptions> {
        Ok(EmbedOptions {
            kind,
            task: self.task.clone(),
            instruction: self.instruction.clone(),
            prompt_style: self.prompt_style.parse::<PromptStyle>()?,
            ..EmbedOptions::default()
        })
    }
}
