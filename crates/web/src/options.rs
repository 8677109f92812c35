//! Options passed from JavaScript as JSON (camelCase keys, every key optional).

use qzhou_core::{
    EmbedOptions, LoadOptions, MatmulKernel, Pooling, PromptStyle, QzhouError, Result, TextKind,
};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LoadJson {
    max_length: Option<usize>,
    batch_tokens: Option<usize>,
    max_batch: Option<usize>,
    max_buffer_bytes: Option<usize>,
    quantized_embedding: Option<bool>,
    matmul_kernel: Option<String>,
    /// Replaced by `matmulKernel`; kept only to say so.
    dense_kernel: Option<serde_json::Value>,
    /// Replaced by `matmulKernel`; kept only to say so.
    tiled_kernel: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EmbedJson {
    kind: Option<String>,
    task: Option<String>,
    instruction: Option<String>,
    pooling: Option<String>,
    normalize: Option<bool>,
    prompt_style: Option<String>,
    prompt_name: Option<String>,
}

fn parse<T: for<'de> Deserialize<'de> + Default>(json: &str, what: &str) -> Result<T> {
    if json.trim().is_empty() {
        return Ok(T::default());
    }
    serde_json::from_str(json).map_err(|e| QzhouError::InvalidOption(format!("{what}: {e}")))
}

/// Load options: `maxLength`, `batchTokens`, `maxBatch`, `maxBufferBytes` (split weights
/// into GPU buffers of at most this size; default: the device's binding limit),
/// `quantizedEmbedding` (keep a q8/q4 pack's token-embedding table quantised on the GPU;
/// default true; false dequantises it to f32 at load), `matmulKernel` (`auto`: the fastest
/// of Burn's matmul and qzhou's WGSL kernels, measured per shape on this GPU, the default;
/// `burn`, `row-tile` or `tiled` to fix one, see the package README).
pub fn parse_load_options(json: &str) -> Result<LoadOptions> {
    let j: LoadJson = parse(json, "load options")?;
    for (old, given) in [
        ("denseKernel", j.dense_kernel.is_some()),
        ("tiledKernel", j.tiled_kernel.is_some()),
    ] {
        if given {
            return Err(QzhouError::InvalidOption(format!(
                "load options: `{old}` was replaced by `matmulKernel`: 'auto' (the default: \
                 the fastest kernel for each shape, measured on this GPU), 'burn', 'row-tile' \
                 or 'tiled'"
            )));
        }
    }
    let d = LoadOptions::default();
    Ok(LoadOptions {
        max_length: j.max_length,
        batch_tokens: j.batch_tokens.unwrap_or(d.batch_tokens),
        max_batch: j.max_batch.unwrap_or(d.max_batch),
        max_buffer_bytes: j.max_buffer_bytes,
        quantized_embedding: j.quantized_embedding.unwrap_or(d.quantized_embedding),
        matmul_kernel: Some(
            j.matmul_kernel
                .as_deref()
                .map(str::parse::<MatmulKernel>)
                .transpose()?
                .unwrap_or_default(),
        ),
        ..d
    })
}

/// Embed options: `kind` (`query`|`document`), `task`, `instruction`, `pooling`
/// (`mean`|`last`|`cls`), `normalize`, `promptStyle` (`space`|`no-space`), `promptName` (a
/// named prompt of the model folder, or `query`/`document`/`passage`; wins over the others).
pub fn parse_embed_options(json: &str) -> Result<EmbedOptions> {
    let j: EmbedJson = parse(json, "embed options")?;
    let kind = match j.kind.as_deref() {
        None | Some("query") => TextKind::Query,
        Some("document") | Some("passage") => TextKind::Document,
        Some(other) => {
            return Err(QzhouError::InvalidOption(format!(
                "kind `{other}` (expected `query` or `document`)"
            )))
        }
    };
    Ok(EmbedOptions {
        kind,
        task: j.task,
        instruction: j.instruction,
        prompt_style: match j.prompt_style {
            Some(s) => s.parse::<PromptStyle>()?,
            None => PromptStyle::default(),
        },
        pooling: j.pooling.map(|p| p.parse::<Pooling>()).transpose()?,
        normalize: j.normalize,
        prompt_name: j.prompt_name,
    })
}
