//! # qzhou-web
//!
//! wasm-bindgen bindings over `qzhou-core`: the same Burn model, tokenizer, prompts and pooling
//! as the native CLI, run in the browser on WebGPU (Burn's wgpu backend compiling to WGSL) or,
//! where `navigator.gpu` is missing (Node.js, older browsers), on Burn's pure-Rust CPU backend
//! (`Flex`) compiled to wasm.
//!
//! This crate is the low-level layer; the npm package's `index.js` wraps it with fetching,
//! progress, the Cache API and a transformers.js-like API. Everything returns a `Result`: a
//! panic inside an async wasm function would never settle the JavaScript promise.

mod files;
mod gpu;
mod options;

use burn::backend::Flex;
// burn-wgpu without fusion, whatever features a workspace build unifies (qzhou_core::backends).
use qzhou_core::backends::Wgpu as WebGpu;
use qzhou_core::{EmbedOptions, Embedder, TextTokenizer, Truncation};
use wasm_bindgen::prelude::*;

pub use files::ModelSource;
use options::{parse_embed_options, parse_load_options};

/// Install the panic hook (panics print to the console instead of a bare `unreachable`).
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

/// The package version.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").into()
}

fn js_err(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

/// The model on one of the two backends.
enum Model {
    WebGpu(Embedder<WebGpu>),
    Cpu(Embedder<Flex>),
}

/// A loaded embedding model (use it through the npm package's `Embedder`).
#[wasm_bindgen]
pub struct WasmEmbedder {
    /// `Some` until dropped.
    model: Option<Model>,
    info: String,
}

/// Freeing the embedder (`free()` / `dispose()` in JavaScript) gives its GPU buffers back: the
/// weights sit in exactly sized persistent buffers, which the allocator would otherwise keep
/// for a later tensor of the same size.
impl Drop for WasmEmbedder {
    fn drop(&mut self) {
        if let Some(Model::WebGpu(e)) = self.model.take() {
            let device = e.device().clone();
            drop(e);
            <WebGpu as burn::tensor::backend::Backend>::memory_cleanup(&device);
        }
    }
}

/// GPU memory the page's WebGPU device holds now (bytes reserved by Burn's allocator), or
/// `undefined` before a WebGPU model was loaded.
#[wasm_bindgen(js_name = gpuMemoryReservedBytes)]
pub fn gpu_memory_reserved_bytes() -> Option<f64> {
    let device = gpu::existing_device()?;
    <WebGpu as qzhou_core::KernelBackend>::memory_reserved_bytes(&device).map(|b| b as f64)
}

/// Load a model from fetched files onto `backend` (`"webgpu"` or `"cpu"`).
///
/// `source` holds the files by name; `manifest` names the weight pack's manifest
/// (`manifest-q8.json`, ...), or is empty for a plain `model.safetensors`. `options_json`:
/// see [`parse_load_options`], every key optional.
#[wasm_bindgen(js_name = loadEmbedder)]
pub async fn load_embedder(
    backend: String,
    source: ModelSource,
    manifest: String,
    options_json: String,
) -> Result<WasmEmbedder, JsError> {
    let mut options = parse_load_options(&options_json).map_err(js_err)?;
    let matmul_kernel = options.matmul_kernel.unwrap_or_default();
    let (files, quantization) = source.into_model_files(&manifest).map_err(js_err)?;
    let (model, backend_info) = match backend.as_str() {
        "webgpu" => {
            let (device, adapter) = gpu::device().await.map_err(js_err)?;
            options.max_buffer_bytes = options.max_buffer_bytes.or(buffer_limit(&adapter));
            let e = Embedder::<WebGpu>::from_files(files, &device, &options).map_err(js_err)?;
            (Model::WebGpu(e), adapter)
        }
        "cpu" => {
            let device = burn::backend::flex::FlexDevice;
            let e = Embedder::<Flex>::from_files(files, &device, &options).map_err(js_err)?;
            (
                Model::Cpu(e),
                serde_json::json!({"name": "burn-flex (wasm32)"}),
            )
        }
        other => {
            return Err(js_err(format!(
                "unknown backend `{other}` (expected `webgpu` or `cpu`)"
            )))
        }
    };
    let mut embedder = WasmEmbedder {
        model: Some(model),
        info: String::new(),
    };
    embedder.info = serde_json::json!({
        "backend": backend,
        "adapter": backend_info,
        "quantization": quantization,
        "dims": embedder.dims(),
        "pooling": format!("{:?}", embedder.with(|e| e.pooling(), |e| e.pooling())),
        "normalize": embedder.with(|e| e.normalize(), |e| e.normalize()),
        "attention": format!("{:?}", embedder.with(|e| e.attention(), |e| e.attention())),
        "maxLength": embedder.with(|e| e.tokenizer().max_length(), |e| e.tokenizer().max_length()),
        // The choice of matmul only applies where the backend has kernels of its own.
        "matmulKernel": (backend == "webgpu").then(|| matmul_kernel.to_string()),
        "deviceWeights": embedder.with(|e| e.model().storage_summary(), |e| e.model().storage_summary()),
        "version": version(),
    })
    .to_string();
    Ok(embedder)
}

/// The largest GPU buffer this device allows (the smaller of its storage-binding and buffer
/// limits): weights bigger than this are split by rows across several buffers.
fn buffer_limit(adapter: &serde_json::Value) -> Option<usize> {
    [
        &adapter["maxStorageBufferBindingSize"],
        &adapter["maxBufferSize"],
    ]
    .iter()
    .filter_map(|v| v.as_u64())
    .min()
    .and_then(|v| usize::try_from(v).ok())
}

impl WasmEmbedder {
    fn model(&self) -> &Model {
        self.model
            .as_ref()
            .expect("the model is only taken when the embedder is dropped")
    }

    fn with<T>(
        &self,
        gpu: impl FnOnce(&Embedder<WebGpu>) -> T,
        cpu: impl FnOnce(&Embedder<Flex>) -> T,
    ) -> T {
        match self.model() {
            Model::WebGpu(e) => gpu(e),
            Model::Cpu(e) => cpu(e),
        }
    }
}

#[wasm_bindgen]
impl WasmEmbedder {
    /// Embedding width.
    #[wasm_bindgen(getter)]
    pub fn dims(&self) -> usize {
        self.with(|e| e.dim(), |e| e.dim())
    }

    /// JSON: backend, adapter, quantization, dims, pooling, normalize, attention, maxLength.
    #[wasm_bindgen(js_name = infoJson)]
    pub fn info_json(&self) -> String {
        self.info.clone()
    }

    /// Embed `texts`; returns `texts.length × dims` values row-major. `options_json`:
    /// `{"kind": "query"|"document", "task", "instruction", "pooling", "normalize",
    /// "promptStyle", "promptName"}`, all optional.
    pub async fn embed(
        &self,
        texts: Vec<String>,
        options_json: String,
    ) -> Result<Vec<f32>, JsError> {
        let options: EmbedOptions = parse_embed_options(&options_json).map_err(js_err)?;
        let rows = match self.model() {
            Model::WebGpu(e) => e.embed_async(&texts, &options).await,
            Model::Cpu(e) => e.embed_async(&texts, &options).await,
        }
        .map_err(js_err)?;
        Ok(rows.concat())
    }

    /// The exact prefix put before each text for these options (debugging prompts).
    pub fn prefix(&self, options_json: String) -> Result<String, JsError> {
        let options = parse_embed_options(&options_json).map_err(js_err)?;
        self.with(|e| e.prefix(&options), |e| e.prefix(&options))
            .map_err(js_err)
    }
}

/// A tokenizer alone (HF `tokenizer.json`), the one the embedder uses.
#[wasm_bindgen]
pub struct WasmTokenizer {
    inner: TextTokenizer,
}

#[wasm_bindgen]
impl WasmTokenizer {
    /// Parse a `tokenizer.json`; texts longer than `max_length` tokens are truncated.
    #[wasm_bindgen(constructor)]
    pub fn new(json: &[u8], max_length: usize) -> Result<WasmTokenizer, JsError> {
        Ok(Self {
            inner: TextTokenizer::from_json(json, max_length, Truncation::Truncate)
                .map_err(js_err)?,
        })
    }

    /// Token ids of each text (special tokens as the tokenizer's post-processor adds them),
    /// flattened; `lengths` gives each text's count.
    pub fn encode(&self, texts: Vec<String>) -> Result<EncodedTexts, JsError> {
        let ids = self.inner.encode(&texts).map_err(js_err)?;
        Ok(EncodedTexts {
            lengths: ids.iter().map(|v| v.len() as u32).collect(),
            ids: ids.concat(),
        })
    }
}

/// Token ids of several texts, flattened.
#[wasm_bindgen(getter_with_clone)]
pub struct EncodedTexts {
    /// All ids, text after text.
    pub ids: Vec<u32>,
    /// Ids per text.
    pub lengths: Vec<u32>,
}
