//! Web weight packs: the weights of a model folder in one quantisation scheme, cut into
//! files a browser fetches and caches one by one, described by a small JSON manifest.
//!
//! Layout written by `qzhou export-web` next to the folder's `config.json`/`tokenizer.json`:
//!
//! ```text
//! manifest-q8.json            PackManifest (format, scheme, files with sha256, tensors)
//! weights-q8-000.bin ...      tensors' bytes, back to back, never straddling two files
//! ```
//!
//! A tensor whose stored size exceeds `max_part_bytes` (default 128 MiB, WebGPU's default
//! `maxStorageBufferBindingSize`) is split by rows into parts, each quantised on its own;
//! blocks run along the last dimension, so a row split never cuts a block. `lm_head.*` and
//! rotary buffers are left out (an embedding model never uses them).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{QzhouError, Result};
use crate::quantization::{
    dequantize_scaled, quantize_scaled_fitted, scale_exponent, GridFit, PackedBlocks, Quantization,
    RoundedQ4, BLOCK_SIZE, MAX_SCALE_EXPONENT,
};
use crate::weights::{ByteSource, MemorySource, StoredDtype, TensorMeta, TensorSource};

/// Value of [`PackManifest::format`].
pub const PACK_FORMAT: &str = "qzhou-weight-pack";
/// Manifest version this crate writes. Version 2 added [`PackPart::scale_exp`] (a version-1
/// reader would ignore it and decode wrong scales, so it must refuse these packs); version 3
/// added the `q4k` tensor dtype (q4 packs' embedding tables; a version-2 reader refuses the
/// pack by its version instead of by an unknown dtype). Versions 1 and 2 are still read.
pub const PACK_VERSION: u32 = 3;
/// Default largest part of one tensor (bytes): WebGPU's default max storage binding.
pub const DEFAULT_MAX_PART_BYTES: usize = 128 << 20;
/// Default largest weight file (bytes): small enough to fetch, cache and retry one by one.
pub const DEFAULT_MAX_FILE_BYTES: usize = 64 << 20;

/// The manifest's name for a scheme: `manifest-q8.json`.
pub fn manifest_name(scheme: Quantization) -> String {
    format!("manifest-{scheme}.json")
}

/// The `index`-th weight file's name for a scheme: `weights-q8-000.bin`.
pub fn weight_file_name(scheme: Quantization, index: usize) -> String {
    format!("weights-{scheme}-{index:03}.bin")
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hexadecimal of `digest`.
fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// `manifest-*.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackManifest {
    /// Always [`PACK_FORMAT`].
    pub format: String,
    /// [`PACK_VERSION`] (or 1, read as packs without scale exponents).
    pub version: u32,
    /// The scheme asked for (tensors that cannot use it are `f32`, see [`PackTensor::dtype`]).
    pub quantization: String,
    /// Values per q8/q4 block (32; q4k's 128-value super-blocks are fixed by its dtype).
    pub block_size: usize,
    /// Weight files in order.
    pub files: Vec<PackFile>,
    /// Every tensor with where its parts live.
    pub tensors: Vec<PackTensor>,
    /// Other files of the model folder (config, tokenizer, sentence-transformers) with
    /// checksums, so a loader can verify them too.
    #[serde(default)]
    pub assets: Vec<PackFile>,
}

/// One file and its checksum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackFile {
    /// File name, relative to the manifest.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Lowercase hex SHA-256.
    pub sha256: String,
}

/// One tensor of the pack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackTensor {
    /// Name as in the source checkpoint.
    pub name: String,
    /// Shape in the checkpoint's layout (HF `[out, in]` for Linear weights).
    pub shape: Vec<usize>,
    /// Storage scheme of this tensor: `f32`, `f16`, `q8`, `q4` or `q4k`.
    pub dtype: String,
    /// Row ranges in order; their rows add up to `shape[0]` (1 part for 1-D tensors).
    pub parts: Vec<PackPart>,
}

/// A run of whole rows of a tensor, stored contiguously in one file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackPart {
    /// Index into [`PackManifest::files`].
    pub file: usize,
    /// Byte offset in that file.
    pub offset: u64,
    /// Byte length.
    pub bytes: u64,
    /// Rows (first-dimension entries) in this part.
    pub rows: usize,
    /// q8/q4: block scales and mins are stored times `2^−scale_exp` (keeps small ones out of
    /// f16's subnormal range; [`crate::quantization::scale_exponent`]). Absent means 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub scale_exp: i32,
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}

/// Sizes used by [`write_pack`].
#[derive(Debug, Clone, Copy)]
pub struct PackLimits {
    /// Largest part of one tensor in bytes.
    pub max_part_bytes: usize,
    /// Largest weight file in bytes (a single part larger than this gets a file of its own).
    pub max_file_bytes: usize,
}

impl Default for PackLimits {
    fn default() -> Self {
        Self {
            max_part_bytes: DEFAULT_MAX_PART_BYTES,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
        }
    }
}

/// Tensors a q4 pack keeps at q8 unless told otherwise (substrings of tensor names): the
/// attention key, value and output projections. Measured on the real Qwen2.5-0.5B
/// (benches/quant/q4_schemes.py, q4 in one tensor class at a time), q4 in `v_proj` and
/// `o_proj` alone costs more embedding accuracy than the whole MLP, and `k_proj` as much as
/// the embedding table, while the three hold ~7% of a layer's weights (≈ +0.2 bits per
/// weight on average).
pub const DEFAULT_Q4_KEEP_Q8: &[&str] = &[
    "self_attn.k_proj.",
    "self_attn.v_proj.",
    "self_attn.o_proj.",
];

/// Tensors a q4 pack stores as q4k (16-value sub-blocks, [`crate::quantization`]) unless told
/// otherwise: the token-embedding table and every projection (`*_proj`; those named in
/// [`DEFAULT_Q4_KEEP_Q8`] stay q8). A token's embedding row enters the residual stream unmixed,
/// so its rounding error reaches short texts' mean-pooled embeddings almost whole: on the real
/// Qwen2.5-0.5B (per-block q4 projections, k/v/o at q8; documents) the table in q4k instead of
/// q4 takes the worst of 91 multilingual sentences from 0.861 to 0.944 cosine to f32 and the
/// held-out STS sentences below 0.98 from 15 of 120 to 3, for +0.06 bits per weight on average.
/// The projections in q4k too (+0.17 bits, 5.41 in all) take the per-block figures from
/// 0.944 / 0.9904 (worst / mean, 91 sentences) and 0.952 / 0.9913 (120 STS) to 0.944 / 0.9931
/// and 0.980 / 0.9949, and with GPTQ from 0.953 / 0.9961 and 0.980 / 0.9977 to 0.947 / 0.9967
/// and 0.985 / 0.9977 (benches/quant/gptq_real.sh; query-form figures in the README). The
/// gather and the fused matmul read q4k on the device. A tensor whose last dimension is not a
/// multiple of 128 falls back to q4 (every Qwen2.5 hidden and MLP width is one).
pub const DEFAULT_Q4_AS_Q4K: &[&str] = &["embed_tokens.", "_proj."];

/// Tensors whose q4/q4k grids `qzhou export-web --calibration` fits by [`GridFit::MinMax`]
/// unless told otherwise: the token-embedding table. Least squares pulls each block's largest
/// magnitude towards zero (on the real Qwen2.5-0.5B's q4k table, by 0.20 of the rms error on
/// average; min/max: 0.00), and a token's row enters a short text's mean-pooled embedding
/// almost whole. Measured on the real 0.5B with GPTQ projections (5.41 bits per weight, same
/// size; 91 multilingual sentences, documents / queries): worst sentence 0.947 / 0.961 →
/// 0.988 / 0.991 cosine to f32, every one of them and of 120 held-out STS-B sentences ≥ 0.98
/// (README "Web packs"). Not the default without GPTQ: with per-block projections the same
/// table lifted queries (worst 0.954 → 0.991) but lowered short Chinese documents (worst
/// held-out 0.980 → 0.928), and min/max projections too were worse still. Matmul weights keep
/// least squares.
pub const Q4_MIN_MAX_GRIDS_WITH_GPTQ: &[&str] = &["embed_tokens."];

/// How [`write_pack`] cuts and stores tensors.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// Part and file sizes.
    pub limits: PackLimits,
    /// In a q4 pack, tensors whose name contains any of these are stored as q8 (mixed
    /// precision, as llama.cpp's Q4_K_M keeps some tensors at Q6_K). Empty: every block tensor q4.
    pub q4_keep_q8: Vec<String>,
    /// In a q4 pack, tensors whose name contains any of these (and not one of `q4_keep_q8`) are
    /// stored as q4k where their last dimension is a multiple of 128 (q4 elsewhere).
    pub q4_as_q4k: Vec<String>,
    /// In a q4 pack, tensors whose name contains any of these have their q4/q4k grids fitted
    /// by [`GridFit::MinMax`] (least squares elsewhere; GPTQ-rounded tensors keep GPTQ's).
    /// Empty by default; see [`Q4_MIN_MAX_GRIDS_WITH_GPTQ`].
    pub q4_min_max_grids: Vec<String>,
    /// Tensors already rounded to q4 or q4k (GPTQ, [`crate::gptq`]), by checkpoint name: stored
    /// as they are wherever the pack stores that tensor in that scheme, instead of rounding it
    /// block by block.
    pub q4_rounded: BTreeMap<String, RoundedQ4>,
}

impl Default for PackOptions {
    fn default() -> Self {
        Self {
            limits: PackLimits::default(),
            q4_keep_q8: DEFAULT_Q4_KEEP_Q8.iter().map(|s| s.to_string()).collect(),
            q4_as_q4k: DEFAULT_Q4_AS_Q4K.iter().map(|s| s.to_string()).collect(),
            q4_min_max_grids: Vec::new(),
            q4_rounded: BTreeMap::new(),
        }
    }
}

impl PackOptions {
    /// The scheme tensor `name` of `shape` is stored in when the pack is `scheme`.
    pub fn scheme_for(&self, scheme: Quantization, name: &str, shape: &[usize]) -> Quantization {
        let wanted = if scheme != Quantization::Q4 {
            scheme
        } else if names_any(name, &self.q4_keep_q8) {
            Quantization::Q8
        } else if names_any(name, &self.q4_as_q4k) {
            Quantization::Q4K
        } else {
            scheme
        };
        wanted.for_shape(shape)
    }

    /// How tensor `name`'s q4/q4k grids are fitted when [`write_pack`] rounds it block by block.
    pub fn grid_fit_for(&self, name: &str) -> GridFit {
        if names_any(name, &self.q4_min_max_grids) {
            GridFit::MinMax
        } else {
            GridFit::LeastSquares
        }
    }
}

/// Whether `name` contains one of the non-empty `parts`.
fn names_any(name: &str, parts: &[String]) -> bool {
    parts
        .iter()
        .any(|k| !k.is_empty() && name.contains(k.as_str()))
}

/// First-dimension length of `shape`, the unit parts are cut in (1 for a scalar).
fn rows_of(shape: &[usize]) -> usize {
    shape.first().copied().unwrap_or(1).max(1)
}

impl PackTensor {
    /// Values `part` holds: its rows, or the whole tensor when it is 1-D (one part).
    fn part_numel(&self, part: &PackPart) -> usize {
        self.checked_part_numel(part)
            .expect("a validated manifest's part sizes fit in usize")
    }

    /// [`Self::part_numel`] without overflow (`None` for a hostile shape or row count).
    fn checked_part_numel(&self, part: &PackPart) -> Option<usize> {
        match self.shape.as_slice() {
            [] => Some(1),
            [n] => Some(*n),
            [_, rest @ ..] => rest.iter().try_fold(part.rows, |a, d| a.checked_mul(*d)),
        }
    }
}

/// Whether a checkpoint tensor belongs in an embedding model's pack.
fn packed(name: &str) -> bool {
    !name.starts_with("lm_head.") && !name.ends_with("rotary_emb.inv_freq")
}

/// Quantise every tensor of `source` into `scheme`, handing each finished weight file to
/// `write_file(name, bytes)` as soon as it is full (so only one file is held in memory), and
/// return the manifest (without assets). Tensors are read one at a time.
pub fn write_pack(
    source: &dyn TensorSource,
    scheme: Quantization,
    options: &PackOptions,
    write_file: &mut dyn FnMut(&str, &[u8]) -> Result<()>,
) -> Result<PackManifest> {
    let limits = options.limits;
    if limits.max_part_bytes == 0 || limits.max_file_bytes == 0 {
        return Err(QzhouError::InvalidOption(
            "pack part and file limits must be positive".into(),
        ));
    }
    let mut files: Vec<PackFile> = Vec::new();
    let mut tensors = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    let mut flush = |current: &mut Vec<u8>, files: &mut Vec<PackFile>| -> Result<()> {
        if current.is_empty() {
            return Ok(());
        }
        let name = weight_file_name(scheme, files.len());
        write_file(&name, current)?;
        files.push(PackFile {
            name,
            bytes: current.len() as u64,
            sha256: sha256_hex(current),
        });
        current.clear();
        Ok(())
    };
    for name in source.names().into_iter().filter(|n| packed(n)) {
        let (values, shape) = source.read_f32(&name)?;
        let dtype = options.scheme_for(scheme, &name, &shape);
        let rows = rows_of(&shape);
        let row_len = values.len() / rows;
        let row_bytes = dtype.stored_bytes(row_len).max(1);
        let rows_per_part = (limits.max_part_bytes / row_bytes).max(1);
        let chunk_len = if shape.len() < 2 {
            values.len()
        } else {
            rows_per_part * row_len
        };
        let rounded = match options.q4_rounded.get(&name) {
            Some(r) if dtype == r.scheme() => {
                if shape != [r.rows, r.cols] {
                    return Err(QzhouError::InvalidOption(format!(
                        "tensor `{name}` is {shape:?} but was rounded as [{}, {}]",
                        r.rows, r.cols
                    )));
                }
                Some(r)
            }
            _ => None,
        };
        let mut parts = Vec::new();
        for (index, chunk) in values.chunks(chunk_len.max(1)).enumerate() {
            let (scale_exp, bytes) = match rounded {
                Some(r) => {
                    let start = index * rows_per_part;
                    let end = start + chunk.len() / row_len;
                    (r.exponent, r.part_bytes(start, end))
                }
                None => {
                    let scale_exp = if dtype.is_block() {
                        scale_exponent(chunk)
                    } else {
                        0
                    };
                    let fit = options.grid_fit_for(&name);
                    let bytes = quantize_scaled_fitted(chunk, dtype, scale_exp, fit)
                        .map_err(|e| QzhouError::InvalidOption(format!("tensor `{name}`: {e}")))?;
                    (scale_exp, bytes)
                }
            };
            if !current.is_empty() && current.len() + bytes.len() > limits.max_file_bytes {
                flush(&mut current, &mut files)?;
            }
            parts.push(PackPart {
                file: files.len(),
                offset: current.len() as u64,
                bytes: bytes.len() as u64,
                rows: if shape.len() < 2 {
                    rows
                } else {
                    chunk.len() / row_len
                },
                scale_exp,
            });
            current.extend_from_slice(&bytes);
        }
        tensors.push(PackTensor {
            name,
            shape,
            dtype: dtype.as_str().into(),
            parts,
        });
    }
    flush(&mut current, &mut files)?;
    Ok(PackManifest {
        format: PACK_FORMAT.into(),
        version: PACK_VERSION,
        quantization: scheme.as_str().into(),
        block_size: BLOCK_SIZE,
        files,
        tensors,
        assets: Vec::new(),
    })
}

impl PackManifest {
    /// Parse and check a manifest: format, version, block size, every part inside its file,
    /// rows adding up to each tensor's first dimension, byte counts matching the dtype.
    ///
    /// A manifest may come from any URL: every count is checked against the bytes its files
    /// declare before anything is sized from it (see [`PackManifest::validate`]).
    pub fn from_json(bytes: &[u8], label: &str) -> Result<Self> {
        let m: PackManifest = serde_json::from_slice(bytes)
            .map_err(|e| QzhouError::Pack(format!("{label}: not a pack manifest: {e}")))?;
        m.validate(label)?;
        Ok(m)
    }

    /// The checks of [`PackManifest::from_json`] on a manifest built in memory: format,
    /// version, block size, unique file and tensor names, shapes of one or two positive
    /// dimensions that the dtype can store, every part inside its file, part rows adding up to
    /// the first dimension, byte counts matching the dtype (all without overflow).
    pub fn validate(&self, label: &str) -> Result<()> {
        let m = self;
        let bad = |m: String| QzhouError::Pack(format!("{label}: {m}"));
        if m.format != PACK_FORMAT {
            return Err(bad(format!(
                "format is `{}`, expected `{PACK_FORMAT}`",
                m.format
            )));
        }
        if !(1..=PACK_VERSION).contains(&m.version) {
            return Err(bad(format!(
                "version {} is not supported (this build reads versions 1 to {PACK_VERSION})",
                m.version
            )));
        }
        if m.block_size != BLOCK_SIZE {
            return Err(bad(format!(
                "block size {} (expected {BLOCK_SIZE})",
                m.block_size
            )));
        }
        m.quantization
            .parse::<Quantization>()
            .map_err(|e| bad(e.to_string()))?;
        let mut names = std::collections::HashSet::new();
        for f in &m.files {
            if !names.insert(f.name.as_str()) {
                return Err(bad(format!("weight file `{}` is listed twice", f.name)));
            }
        }
        let mut names = std::collections::HashSet::new();
        for t in &m.tensors {
            if !names.insert(t.name.as_str()) {
                return Err(bad(format!("tensor `{}` is listed twice", t.name)));
            }
            let dtype: Quantization = t
                .dtype
                .parse()
                .map_err(|e| bad(format!("tensor `{}`: {e}", t.name)))?;
            // Every model tensor is a vector or a matrix; counts are checked before any
            // arithmetic on them, so an absurd shape is an error, not an overflow.
            if t.shape.is_empty() || t.shape.len() > 2 || t.shape.contains(&0) {
                return Err(bad(format!(
                    "tensor `{}` has shape {:?} (expected 1 or 2 positive dimensions)",
                    t.name, t.shape
                )));
            }
            if dtype.for_shape(&t.shape) != dtype {
                return Err(bad(format!(
                    "tensor `{}` of shape {:?} cannot be stored as {} (blocks of {} along the \
                     last dimension of a matrix)",
                    t.name,
                    t.shape,
                    t.dtype,
                    dtype.block_size()
                )));
            }
            let row_len = if t.shape.len() == 2 { t.shape[1] } else { 1 };
            let rows = rows_of(&t.shape);
            if t.parts.is_empty() || (t.shape.len() == 1 && t.parts.len() != 1) {
                return Err(bad(format!(
                    "tensor `{}` has {} parts (a vector has exactly one, a matrix at least one)",
                    t.name,
                    t.parts.len()
                )));
            }
            let mut seen: usize = 0;
            for p in &t.parts {
                let f = m.files.get(p.file).ok_or_else(|| {
                    bad(format!(
                        "tensor `{}` points at file #{} which is not listed",
                        t.name, p.file
                    ))
                })?;
                if p.offset
                    .checked_add(p.bytes)
                    .is_none_or(|end| end > f.bytes)
                {
                    return Err(bad(format!(
                        "tensor `{}` reads bytes {}..{} of {} which has {}",
                        t.name,
                        p.offset,
                        p.offset.saturating_add(p.bytes),
                        f.name,
                        f.bytes
                    )));
                }
                if p.scale_exp.abs() > MAX_SCALE_EXPONENT
                    || ((!dtype.is_block() || m.version == 1) && p.scale_exp != 0)
                {
                    return Err(bad(format!(
                        "tensor `{}`: scale exponent {} (a {} part allows {})",
                        t.name,
                        p.scale_exp,
                        t.dtype,
                        if dtype.is_block() {
                            "-64..=64"
                        } else {
                            "only 0"
                        }
                    )));
                }
                seen = match seen.checked_add(p.rows) {
                    Some(s) if s <= rows && p.rows > 0 => s,
                    _ => {
                        return Err(bad(format!(
                            "tensor `{}`: a part of {} rows does not fit its {rows} rows",
                            t.name, p.rows
                        )))
                    }
                };
                // rows ≤ shape[0] here, so the product is bounded by the declared shape; it is
                // compared with bytes that exist (the part lies inside its file) before anything
                // of that size is allocated.
                let expected = t
                    .checked_part_numel(p)
                    .and_then(|n| dtype.checked_stored_bytes(n));
                if expected != Some(p.bytes) {
                    return Err(bad(format!(
                        "tensor `{}`: a {} part of {} rows × {row_len} values cannot be {} bytes",
                        t.name, t.dtype, p.rows, p.bytes
                    )));
                }
            }
            if seen != rows {
                return Err(bad(format!(
                    "tensor `{}`: parts hold {seen} rows, shape says {rows}",
                    t.name
                )));
            }
        }
        Ok(())
    }

    /// The manifest as pretty JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("manifest serialises")
    }

    /// Average stored bits per value over the pack's matrices (what the scheme and any mixed
    /// q8 tensors cost; vectors such as norms are always f32 and left out).
    pub fn bits_per_weight(&self) -> f64 {
        let (mut bits, mut values) = (0f64, 0f64);
        for t in self.tensors.iter().filter(|t| t.shape.len() == 2) {
            let n = t.shape.iter().product::<usize>() as f64;
            bits += t.parts.iter().map(|p| p.bytes as f64 * 8.0).sum::<f64>();
            values += n;
        }
        if values == 0.0 {
            0.0
        } else {
            bits / values
        }
    }

    /// Total bytes of the weight files.
    pub fn weight_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

/// Check that `bytes` is the listed file: size first (a truncated download), then SHA-256.
pub fn verify_file(file: &PackFile, bytes: &[u8]) -> Result<()> {
    check_size(file, bytes.len() as u64)?;
    check_digest(file, Sha256::digest(bytes).as_slice())
}

fn check_size(file: &PackFile, len: u64) -> Result<()> {
    if len != file.bytes {
        return Err(QzhouError::Pack(format!(
            "{} is {len} bytes, the manifest says {} (truncated or wrong file)",
            file.name, file.bytes
        )));
    }
    Ok(())
}

fn check_digest(file: &PackFile, digest: &[u8]) -> Result<()> {
    let got = hex(digest);
    if got != file.sha256 {
        return Err(QzhouError::Pack(format!(
            "{} fails its checksum: sha256 {got}, the manifest says {}",
            file.name, file.sha256
        )));
    }
    Ok(())
}

/// Bytes hashed per read by [`verify_source`].
const HASH_CHUNK: usize = 8 << 20;

/// [`verify_file`] for bytes held elsewhere (a file on disk, a JavaScript buffer): the size,
/// then SHA-256 over reads of at most 8 MiB.
pub fn verify_source(file: &PackFile, source: &dyn ByteSource) -> Result<()> {
    check_size(file, source.len())?;
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; HASH_CHUNK.min(file.bytes as usize)];
    let mut offset = 0u64;
    while offset < file.bytes {
        let n = HASH_CHUNK.min((file.bytes - offset) as usize);
        source
            .read_exact_at(offset, &mut chunk[..n])
            .map_err(|e| QzhouError::Pack(format!("{}: {e}", file.name)))?;
        hasher.update(&chunk[..n]);
        offset += n as u64;
    }
    check_digest(file, hasher.finalize().as_slice())
}

/// A pack over its weight files, wherever their bytes are: in memory (fetched, cached), on
/// disk, or in JavaScript buffers beside a wasm32 module (whose own memory cannot exceed
/// 4 GiB, less than a 7B model's q4 pack). Tensors are read one part at a time, so the
/// files are never copied whole.
pub struct WeightPack {
    manifest: PackManifest,
    files: Vec<Box<dyn ByteSource>>,
}

impl WeightPack {
    /// Pair a manifest with its weight files in memory (in manifest order), validating the
    /// manifest and verifying each file's size and checksum.
    pub fn new(manifest: PackManifest, files: Vec<Arc<[u8]>>) -> Result<Self> {
        let sources = files
            .into_iter()
            .enumerate()
            .map(|(i, bytes)| {
                let name = manifest
                    .files
                    .get(i)
                    .map_or_else(|| format!("weight file {i}"), |f| f.name.clone());
                Box::new(MemorySource::new(name, bytes)) as Box<dyn ByteSource>
            })
            .collect();
        Self::from_sources(manifest, sources)
    }

    /// Pair a manifest with its weight files as byte sources (in manifest order), validating
    /// the manifest and verifying each file's size and checksum (read in chunks).
    pub fn from_sources(manifest: PackManifest, files: Vec<Box<dyn ByteSource>>) -> Result<Self> {
        manifest.validate("manifest")?;
        if files.len() != manifest.files.len() {
            return Err(QzhouError::Pack(format!(
                "the manifest lists {} weight files, {} were given",
                manifest.files.len(),
                files.len()
            )));
        }
        for (f, source) in manifest.files.iter().zip(&files) {
            verify_source(f, source.as_ref())?;
        }
        Ok(Self { manifest, files })
    }

    /// The stored bytes of one part of `tensor` (validated to lie inside its verified file).
    fn part_bytes(&self, tensor: &str, p: &PackPart) -> Result<Vec<u8>> {
        let mut bytes = vec![0u8; p.bytes as usize];
        self.files[p.file]
            .read_exact_at(p.offset, &mut bytes)
            .map_err(|e| QzhouError::Pack(format!("tensor `{tensor}`: {e}")))?;
        Ok(bytes)
    }

    /// The manifest.
    pub fn manifest(&self) -> &PackManifest {
        &self.manifest
    }

    fn tensor(&self, name: &str) -> Option<&PackTensor> {
        self.manifest.tensors.iter().find(|t| t.name == name)
    }
}

impl TensorSource for WeightPack {
    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .manifest
            .tensors
            .iter()
            .map(|t| t.name.clone())
            .collect();
        v.sort();
        v
    }

    fn meta(&self, name: &str) -> Option<TensorMeta> {
        let t = self.tensor(name)?;
        let dtype = match t.dtype.parse::<Quantization>() {
            Ok(Quantization::F32) => Ok(StoredDtype::F32),
            Ok(Quantization::F16) => Ok(StoredDtype::F16),
            Ok(Quantization::Q8) => Ok(StoredDtype::Q8),
            Ok(Quantization::Q4) => Ok(StoredDtype::Q4),
            Ok(Quantization::Q4K) => Ok(StoredDtype::Q4K),
            Err(_) => Err(t.dtype.clone()),
        };
        Some(TensorMeta {
            shape: t.shape.clone(),
            dtype,
        })
    }

    fn read_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let t = self
            .tensor(name)
            .ok_or_else(|| QzhouError::Pack(format!("no tensor `{name}` in the pack")))?;
        let dtype: Quantization = t.dtype.parse()?;
        let mut out = Vec::with_capacity(t.shape.iter().product());
        for p in &t.parts {
            let bytes = self.part_bytes(name, p)?;
            out.extend(
                dequantize_scaled(&bytes, t.part_numel(p), dtype, p.scale_exp)
                    .map_err(|e| QzhouError::Pack(format!("tensor `{name}`: {e}")))?,
            );
        }
        Ok((out, t.shape.clone()))
    }

    fn read_packed(&self, name: &str) -> Result<Option<(PackedBlocks, Vec<usize>)>> {
        let t = self
            .tensor(name)
            .ok_or_else(|| QzhouError::Pack(format!("no tensor `{name}` in the pack")))?;
        let scheme: Quantization = t.dtype.parse()?;
        if !scheme.is_block() {
            return Ok(None);
        }
        let mut packed = PackedBlocks::new(scheme)?;
        packed.reserve(t.shape.iter().product());
        for p in &t.parts {
            let bytes = self.part_bytes(name, p)?;
            packed
                .extend_from_stored_scaled(&bytes, t.part_numel(p), p.scale_exp)
                .map_err(|e| QzhouError::Pack(format!("tensor `{name}`: {e}")))?;
        }
        Ok(Some((packed, t.shape.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantization::quantize_scaled;
    use crate::weights::Checkpoint;
    use safetensors::tensor::TensorView;
    use safetensors::Dtype;

    fn checkpoint() -> (Checkpoint, Vec<f32>) {
        let big: Vec<f32> = (0..64 * 32)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 100.0)
            .collect();
        let norm = vec![1.0f32, 0.5, 0.25];
        let head = vec![0.0f32; 64];
        let b = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let (bb, nb, hb) = (b(&big), b(&norm), b(&head));
        let views = vec![
            (
                "embed.weight".to_string(),
                TensorView::new(Dtype::F32, vec![64, 32], &bb).unwrap(),
            ),
            (
                "norm.weight".to_string(),
                TensorView::new(Dtype::F32, vec![3], &nb).unwrap(),
            ),
            (
                "lm_head.weight".to_string(),
                TensorView::new(Dtype::F32, vec![2, 32], &hb).unwrap(),
            ),
        ];
        let bytes = safetensors::serialize(views, None).unwrap();
        (Checkpoint::from_bytes("m.safetensors", bytes).unwrap(), big)
    }

    fn pack(scheme: Quantization, limits: PackLimits) -> (PackManifest, Vec<Arc<[u8]>>) {
        let (ck, _) = checkpoint();
        let mut files: Vec<Arc<[u8]>> = Vec::new();
        let options = PackOptions {
            limits,
            q4_keep_q8: vec![],
            q4_as_q4k: vec![],
            q4_min_max_grids: vec![],
            q4_rounded: BTreeMap::new(),
        };
        let m = write_pack(&ck, scheme, &options, &mut |_, b| {
            files.push(b.into());
            Ok(())
        })
        .unwrap();
        (m, files)
    }

    #[test]
    fn round_trips_each_scheme_and_splits_rows() {
        let (_, big) = checkpoint();
        // 64 rows × 32 q8 values = 34 bytes a row; parts of ≤ 340 bytes → 10 rows each.
        let limits = PackLimits {
            max_part_bytes: 340,
            max_file_bytes: 700,
        };
        for scheme in Quantization::ALL {
            let (m, files) = pack(scheme, limits);
            let m = PackManifest::from_json(&m.to_json(), "manifest").unwrap();
            assert!(m.tensors.iter().all(|t| t.name != "lm_head.weight"));
            let p = WeightPack::new(m.clone(), files).unwrap();
            let (v, shape) = p.read_f32("embed.weight").unwrap();
            assert_eq!(shape, vec![64, 32]);
            let e = if scheme.is_block() {
                scale_exponent(&big)
            } else {
                0
            };
            let expect = dequantize_scaled(
                &quantize_scaled(&big, scheme, e).unwrap(),
                big.len(),
                scheme,
                e,
            )
            .unwrap();
            assert_eq!(v, expect, "{scheme}");
            assert_eq!(p.read_f32("norm.weight").unwrap().0, vec![1.0, 0.5, 0.25]);
            assert_eq!(p.meta("norm.weight").unwrap().dtype, Ok(StoredDtype::F32));
            let t = m.tensors.iter().find(|t| t.name == "embed.weight").unwrap();
            assert!(
                t.parts.iter().all(|p| p.bytes <= 340 || p.rows == 1),
                "{scheme}"
            );
            assert!(m.files.iter().all(|f| f.bytes <= 700), "{scheme}");
            assert_eq!(t.parts.iter().map(|p| p.rows).sum::<usize>(), 64);
        }
        let (m, _) = pack(Quantization::Q8, limits);
        assert_eq!(m.tensors[0].parts.len(), 7); // ceil(64 / 10)
    }

    #[test]
    fn truncated_or_corrupt_files_are_refused() {
        let (m, files) = pack(Quantization::Q4, PackLimits::default());
        let mut short = files[0].to_vec();
        short.pop();
        let e = WeightPack::new(m.clone(), vec![short.into()])
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("weights-q4-000.bin") && e.contains("truncated"),
            "{e}"
        );
        let mut flipped = files[0].to_vec();
        flipped[3] ^= 1;
        let e = WeightPack::new(m.clone(), vec![flipped.into()])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("checksum"), "{e}");
        let e = WeightPack::new(m, vec![]).err().unwrap().to_string();
        assert!(e.contains("lists 1 weight files, 0 were given"), "{e}");
    }

    #[test]
    fn malformed_manifests_are_refused() {
        let (m, _) = pack(Quantization::Q8, PackLimits::default());
        let e = PackManifest::from_json(b"{", "manifest-q8.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("manifest-q8.json: not a pack manifest"), "{e}");
        let mut bad = m.clone();
        bad.tensors[0].parts[0].bytes += 1;
        let e = PackManifest::from_json(&bad.to_json(), "m")
            .unwrap_err()
            .to_string();
        assert!(e.contains("embed.weight"), "{e}");
        let mut bad = m.clone();
        bad.version = 9;
        assert!(PackManifest::from_json(&bad.to_json(), "m")
            .unwrap_err()
            .to_string()
            .contains("version 9"));
        // Counts that would overflow or allocate what the files do not hold.
        for (shape, want) in [
            (vec![usize::MAX, 32 << 20], "rows"),
            (vec![64, 0], "positive dimensions"),
            (vec![2, 2, 2], "positive dimensions"),
            (vec![64, 33], "cannot be stored as q8"),
        ] {
            let mut bad = m.clone();
            bad.tensors[0].shape = shape.clone();
            let e = PackManifest::from_json(&bad.to_json(), "m")
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{shape:?}: {e}");
        }
        let mut bad = m.clone();
        bad.tensors[0].parts[0].rows = usize::MAX;
        let e = PackManifest::from_json(&bad.to_json(), "m")
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not fit"), "{e}");
        let mut bad = m.clone();
        let t = bad.tensors[0].clone();
        bad.tensors.push(t);
        let e = PackManifest::from_json(&bad.to_json(), "m")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`embed.weight` is listed twice"), "{e}");
        // Scale exponents: only on q8/q4 parts, bounded, and not in version-1 packs.
        let mut bad = m.clone();
        bad.tensors[0].parts[0].scale_exp = 65;
        let e = PackManifest::from_json(&bad.to_json(), "m")
            .unwrap_err()
            .to_string();
        assert!(e.contains("scale exponent 65"), "{e}");
        let mut old = m.clone();
        old.version = 1;
        old.tensors[0].parts[0].scale_exp = 0;
        assert!(PackManifest::from_json(&old.to_json(), "m").is_ok());
        old.tensors[0].parts[0].scale_exp = -3;
        assert!(PackManifest::from_json(&old.to_json(), "m").is_err());
        // Built in memory and handed over without from_json: validated all the same.
        let mut bad = m.clone();
        bad.tensors[0].parts[0].offset = u64::MAX;
        assert!(WeightPack::new(bad, vec![]).is_err());
        let mut bad = m;
        bad.tensors[0].dtype = "q3".into();
        assert!(PackManifest::from_json(&bad.to_json(), "m")
            .unwrap_err()
            .to_string()
            .contains("q3"));
    }

    /// With [`Q4_MIN_MAX_GRIDS_WITH_GPTQ`] a q4 pack fits the token-embedding table's grids by
    /// min/max and a projection's by least squares (same values, different bytes); by default
    /// both by least squares.
    #[test]
    fn q4_packs_fit_the_table_by_min_max_and_projections_by_least_squares() {
        let values: Vec<f32> = (0..16 * 256)
            .map(|i| {
                ((i * 7919 % 1009) as f32 - 504.0) / 5000.0 + if i % 256 == 3 { 0.05 } else { 0.0 }
            })
            .collect();
        let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
        let names = [
            "model.embed_tokens.weight",
            "model.layers.0.mlp.gate_proj.weight",
        ];
        let views: Vec<_> = names
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    TensorView::new(Dtype::F32, vec![16, 256], &bytes).unwrap(),
                )
            })
            .collect();
        let ck = Checkpoint::from_bytes(
            "m.safetensors",
            safetensors::serialize(views, None).unwrap(),
        )
        .unwrap();
        let e = scale_exponent(&values);
        let expect = |fit| quantize_scaled_fitted(&values, Quantization::Q4K, e, fit).unwrap();
        let (least_squares, min_max) = (expect(GridFit::LeastSquares), expect(GridFit::MinMax));
        assert_ne!(least_squares, min_max);
        let stored = |options: &PackOptions| {
            let mut files: Vec<Arc<[u8]>> = Vec::new();
            let m = write_pack(&ck, Quantization::Q4, options, &mut |_, b| {
                files.push(b.into());
                Ok(())
            })
            .unwrap();
            let pack = WeightPack::new(m.clone(), files).unwrap();
            names.map(|n| {
                let t = m.tensors.iter().find(|t| t.name == n).unwrap();
                assert_eq!((t.dtype.as_str(), t.parts.len()), ("q4k", 1));
                pack.part_bytes(n, &t.parts[0]).unwrap()
            })
        };
        let with_gptq = PackOptions {
            q4_min_max_grids: Q4_MIN_MAX_GRIDS_WITH_GPTQ
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ..PackOptions::default()
        };
        assert!(stored(&with_gptq) == [min_max, least_squares.clone()]);
        assert!(stored(&PackOptions::default()) == [least_squares.clone(), least_squares]);
    }

    #[test]
    fn q4_packs_keep_k_v_o_at_q8_and_the_table_and_other_projections_at_q4k() {
        let o = PackOptions::default();
        let q4 = Quantization::Q4;
        for (name, want) in [
            ("layers.3.self_attn.v_proj.weight", Quantization::Q8),
            ("model.layers.0.self_attn.o_proj.weight", Quantization::Q8),
            ("layers.3.self_attn.k_proj.weight", Quantization::Q8),
            ("layers.3.self_attn.q_proj.weight", Quantization::Q4K),
            ("layers.3.mlp.gate_proj.weight", Quantization::Q4K),
            ("layers.3.mlp.down_proj.weight", Quantization::Q4K),
            ("model.embed_tokens.weight", Quantization::Q4K),
        ] {
            assert_eq!(o.scheme_for(q4, name, &[64, 896]), want, "{name}");
        }
        // q4k needs rows of whole 128-value super-blocks: q4 where only 32-blocks fit.
        for name in ["embed_tokens.weight", "layers.3.mlp.down_proj.weight"] {
            assert_eq!(
                o.scheme_for(q4, name, &[64, 704]),
                Quantization::Q4,
                "{name}"
            );
        }
        assert_eq!(
            o.scheme_for(q4, "embed_tokens.weight", &[64, 32]),
            Quantization::Q4
        );
        assert_eq!(
            o.scheme_for(q4, "embed_tokens.weight", &[64, 33]),
            Quantization::F32
        );
        assert_eq!(
            o.scheme_for(Quantization::Q8, "embed_tokens.weight", &[64, 896]),
            Quantization::Q8
        );
        // Vectors stay f32; other schemes are untouched; an empty list is plain q4.
        assert_eq!(
            o.scheme_for(q4, "layers.3.self_attn.v_proj.bias", &[64]),
            Quantization::F32
        );
        assert_eq!(
            o.scheme_for(
                Quantization::F16,
                "layers.3.self_attn.v_proj.weight",
                &[64, 32]
            ),
            Quantization::F16
        );
        let plain = PackOptions {
            q4_keep_q8: vec![],
            q4_as_q4k: vec![],
            q4_rounded: BTreeMap::new(),
            ..PackOptions::default()
        };
        for name in ["layers.3.self_attn.v_proj.weight", "embed_tokens.weight"] {
            assert_eq!(plain.scheme_for(q4, name, &[64, 256]), Quantization::Q4);
        }
        // bits per weight: q4 is 5, q8 8.5 (f16 scales, and mins for q4).
        let (m, _) = pack(Quantization::Q4, PackLimits::default());
        assert!(
            (m.bits_per_weight() - 5.0).abs() < 1e-9,
            "{}",
            m.bits_per_weight()
        );
        let (m, _) = pack(Quantization::Q8, PackLimits::default());
        assert!((m.bits_per_weight() - 8.5).abs() < 1e-9);
    }

    #[test]
    fn sha256_matches_the_standard_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
