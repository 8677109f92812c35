//! Options passed from JavaScript as JSON (camelCase keys, every key optional).

use qzhou_core::{EmbedOptions, LoadOptions, Pooling, PromptStyle, QzhouError, Result, TextKind};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LoadJson {
    max_length: Option<usize>,
    batch_tokens: Option<usize>,
    max_batch: Option<usize>,
    max_buffer_bytes: Option<usize>,
    quantized_embedding: Option<bool>,
    dense_kernel: Option<bool>,
    tiled_kernel: Option<bool>,
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
/// default true; false dequantises it to f32 at load), `denseKernel` (f32 projections through
/// qzhou's WGSL matmul instead of Burn's; default false, see the package README),
/// `tiledKernel` (the matmul kernels' tiled schedule instead of their row tile; default false:
/// the row tile was the faster on SwiftShader, the only browser adapter measured).
pub fn parse_load_options(json: &str) -> Result<LoadOptions> {
    let j: LoadJson = parse(json, "load options")?;
    let d = LoadOptions::default();
    Ok(LoadOptions {
        max_length: j.max_length,
        batch_tokens: j.batch_tokens.unwrap_or(d.batch_tokens),
        max_batch: j.max_batch.unwrap_or(d.max_batch),
        max_buffer_bytes: j.max_buffer_bytes,
        quantized_embedding: j.quantized_embedding.unwrap_or(d.quantized_embedding),
        dense_kernel: j.dense_kernel,
        tiled_matmul: Some(j.tiled_kernel.unwrap_or(false)),
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
