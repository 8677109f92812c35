//! Block quantisation of weights for web weight packs (`qzhou export-web`).
//!
//! Every 2-D weight is cut along its last (input) dimension into blocks of [`BLOCK_SIZE`]
//! contiguous values, each with its own scale:
//!
//! * **q8** — symmetric: `scale = max|x| / 127`, `q = round(x / scale)` in `[-127, 127]`,
//!   one `i8` per value; `x ≈ q · scale`. 8.5 bits per weight with the `f16` scale.
//! * **q4** — asymmetric: `x ≈ min + q · scale`, `q = round((x − min) / scale)` in `[0, 15]`,
//!   two values per byte (low nibble first). 5 bits per weight with the `f16` scale and `f16`
//!   min. The offset uses all 16 levels on skewed blocks, which symmetric 4-bit (GGML Q4_0)
//!   wastes; `scale` and `min` are the least-squares grid of a small search (see
//!   `q4_block_grid`), not simply `(max − min) / 15` and `min`.
//! * **q4k** — q4 with finer blocks whose parameters are themselves quantised (llama.cpp's
//!   k-quant idea): a super-block of [`Q4K_SUPER_BLOCK`] = 128 values holds 8 sub-blocks of
//!   [`Q4K_SUB_BLOCK`] = 16, sub-block `j` decoding as `x ≈ q · (d · sc_j) − dmin · mc_j` with
//!   `q` in `[0, 15]`, 8-bit codes `sc_j, mc_j` and one `f16` pair `(d, dmin)` per super-block:
//!   5.25 bits per weight. Half the block of q4 for a quarter of a bit more: on the real
//!   Qwen2.5-0.5B, the token-embedding table in q4k instead of q4 takes the worst sentence's
//!   cosine to f32 from 0.90 to 0.97 (benches/quant). Needs a last dimension that is a multiple
//!   of 128 ([`Quantization::for_shape`] falls back to q4 otherwise). The embedding gather and
//!   the fused matmul have q4k kernels (`shaders/q4k_gather.wgsl`, `shaders/q4k_matmul.wgsl`).
//! * **f16** — IEEE half, no blocks. **f32** — unchanged.
//!
//! q4 and q4k choose each block's grid one of two ways ([`GridFit`]): the least squared error
//! (the default, for matmul weights), or the block's smallest and largest values on the grid's
//! ends (for a table whose rows are gathered and summed, like the token embeddings: see
//! [`GridFit::MinMax`]).
//!
//! Why 32: it is the block of GGML's Q8_0/Q4_1 and the smallest common group size of
//! GPTQ/AWQ, small enough that one outlier spoils only 32 values, and every Qwen2/Qwen3
//! hidden, head and MLP width is a multiple of it; a block is 8 (q8) or 4 (q4) `u32` words,
//! so a WGSL kernel reads whole words. Tensors whose last dimension is not a multiple of 32
//! (and 1-D tensors: norms, biases) are stored as `f32`.

use half::f16;

use crate::error::{QzhouError, Result};

/// Values per quantisation block along the last dimension (q8, q4).
pub const BLOCK_SIZE: usize = 32;
/// Values per q4k super-block: one `f16` pair `(d, dmin)`.
pub const Q4K_SUPER_BLOCK: usize = 128;
/// Values per q4k sub-block: one 8-bit scale code and one 8-bit min code.
pub const Q4K_SUB_BLOCK: usize = 16;
/// Sub-blocks per q4k super-block.
pub(crate) const Q4K_SUBS: usize = Q4K_SUPER_BLOCK / Q4K_SUB_BLOCK;

/// Storage scheme of a weight pack (and of each tensor in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quantization {
    /// 32-bit float, unchanged.
    F32,
    /// IEEE half.
    F16,
    /// 8-bit symmetric blocks.
    Q8,
    /// 4-bit asymmetric blocks.
    Q4,
    /// 4-bit asymmetric 16-value sub-blocks with 8-bit scale and min codes under an `f16` pair
    /// per 128 values. A tensor format (q4 packs store the embedding table in it), not a pack
    /// scheme: not in [`Quantization::ALL`].
    Q4K,
}

impl Quantization {
    /// All schemes, in the order `export-web` writes them.
    pub const ALL: [Quantization; 4] = [Self::F32, Self::F16, Self::Q8, Self::Q4];

    /// The name used in manifests, file names and APIs: `f32`, `f16`, `q8`, `q4`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Q8 => "q8",
            Self::Q4 => "q4",
            Self::Q4K => "q4k",
        }
    }

    /// Whether values are stored in blocks with scales (q8, q4, q4k).
    pub fn is_block(self) -> bool {
        matches!(self, Self::Q8 | Self::Q4 | Self::Q4K)
    }

    /// Values per block, the unit a tensor's last dimension must be a multiple of: 32 (q8,
    /// q4), 128 (q4k's super-block), 1 (f32, f16).
    pub fn block_size(self) -> usize {
        match self {
            Self::Q8 | Self::Q4 => BLOCK_SIZE,
            Self::Q4K => Q4K_SUPER_BLOCK,
            Self::F32 | Self::F16 => 1,
        }
    }

    /// Bytes `numel` values take (data + scales + mins), in u128 so no count overflows.
    fn stored_bytes_wide(self, numel: usize) -> u128 {
        let n = numel as u128;
        let blocks = n / self.block_size() as u128;
        match self {
            Self::F32 => n * 4,
            Self::F16 => n * 2,
            Self::Q8 => n + blocks * 2,
            Self::Q4 => n / 2 + blocks * 4,
            // Nibbles, a scale and a min code per sub-block, (d, dmin) per super-block.
            Self::Q4K => n / 2 + n / Q4K_SUB_BLOCK as u128 * 2 + blocks * 4,
        }
    }

    /// Bytes one tensor of `numel` values takes in this scheme (data + scales + mins).
    pub fn stored_bytes(self, numel: usize) -> usize {
        self.stored_bytes_wide(numel) as usize
    }

    /// [`Self::stored_bytes`] without overflow: `None` when the size does not fit in a `u64`
    /// (a hostile manifest's shape), or when blocks do not divide `numel`.
    pub fn checked_stored_bytes(self, numel: usize) -> Option<u64> {
        if numel % self.block_size() != 0 {
            return None;
        }
        u64::try_from(self.stored_bytes_wide(numel)).ok()
    }

    /// The scheme a tensor of `shape` is actually stored in when the pack asks for `self`:
    /// blocks need a 2-D tensor whose last dimension is a multiple of [`BLOCK_SIZE`].
    /// q4k falls back to q4 where only 32-blocks fit.
    pub fn for_shape(self, shape: &[usize]) -> Self {
        match self {
            Self::Q4K if shape.len() < 2 || shape[shape.len() - 1] % Q4K_SUPER_BLOCK != 0 => {
                Self::Q4.for_shape(shape)
            }
            Self::Q8 | Self::Q4 if shape.len() < 2 || shape[shape.len() - 1] % BLOCK_SIZE != 0 => {
                Self::F32
            }
            Self::F16 if shape.len() < 2 => Self::F32,
            other => other,
        }
    }
}

impl std::fmt::Display for Quantization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Quantization {
    type Err = QzhouError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" => Ok(Self::F32),
            "f16" | "fp16" => Ok(Self::F16),
            "q8" | "int8" => Ok(Self::Q8),
            "q4" | "int4" => Ok(Self::Q4),
            "q4k" => Ok(Self::Q4K),
            other => Err(QzhouError::InvalidOption(format!(
                "unsupported quantization `{other}` (expected one of f32, f16, q8, q4, q4k)"
            ))),
        }
    }
}

/// How a q4 or q4k block's grid `min + q · scale` is chosen (q8 and the unblocked schemes have
/// one way only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GridFit {
    /// The least squared error among a small search of grids (`q4_block_grid`): the smallest
    /// error per value. Its grids mostly stop short of a block's extremes, which then round
    /// towards the middle: each block's largest magnitudes are pulled towards zero.
    #[default]
    LeastSquares,
    /// The block's smallest and largest values (with zero for q4k, whose codes are unsigned)
    /// at the grid's two ends: the extremes keep their size, at about a fifth more error per
    /// value. On the real Qwen2.5-0.5B's token-embedding table in q4k, least squares rounds each
    /// sub-block's largest magnitude towards zero by 0.20 of the rms error on average (min/max:
    /// 0.00); a token's row reaches a short text's mean-pooled embedding almost whole, and with
    /// GPTQ projections min/max takes the worst of 91 multilingual sentences from 0.947 to
    /// 0.988 cosine to f32 (documents; queries 0.961 → 0.991) at the same 5.41 bits per weight
    /// (`weight_pack::Q4_MIN_MAX_GRIDS_WITH_GPTQ`).
    MinMax,
}

/// Encode `values` (row-major, length a multiple of [`BLOCK_SIZE`] for q8/q4) into the
/// little-endian byte layout of `scheme`: q8 = `i8` data then `f16` scales; q4 = packed
/// nibbles then `f16` scales then `f16` mins; q4k = packed nibbles, then one `u8` scale code per
/// sub-block, then one `u8` min code per sub-block, then `f16` `d` per super-block, then `f16`
/// `dmin` per super-block; f16/f32 = the values.
pub fn quantize(values: &[f32], scheme: Quantization) -> Result<Vec<u8>> {
    quantize_fitted(values, scheme, GridFit::LeastSquares)
}

/// [`quantize`] with q4 and q4k grids chosen by `fit`.
pub fn quantize_fitted(values: &[f32], scheme: Quantization, fit: GridFit) -> Result<Vec<u8>> {
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(QzhouError::InvalidOption(format!(
            "cannot quantize a non-finite value ({}) at index {i}",
            values[i]
        )));
    }
    let block = scheme.block_size();
    if values.len() % block != 0 {
        return Err(QzhouError::InvalidOption(format!(
            "{scheme} needs a multiple of {block} values, got {}",
            values.len()
        )));
    }
    let mut out = Vec::with_capacity(scheme.stored_bytes(values.len()));
    match scheme {
        Quantization::F32 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        Quantization::F16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
        Quantization::Q8 => {
            let mut scales = Vec::with_capacity(values.len() / BLOCK_SIZE * 2);
            for block in values.chunks_exact(BLOCK_SIZE) {
                let absmax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                // Round the scale to f16 first so encoding uses the scale decoding will see.
                let scale = f16::from_f32(absmax / 127.0);
                let s = scale.to_f32();
                let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
                out.extend(
                    block
                        .iter()
                        .map(|v| (v * inv).round().clamp(-127.0, 127.0) as i8 as u8),
                );
                scales.extend_from_slice(&scale.to_le_bytes());
            }
            out.extend_from_slice(&scales);
        }
        Quantization::Q4 => {
            let blocks = values.len() / BLOCK_SIZE;
            let mut scales = Vec::with_capacity(blocks * 2);
            let mut mins = Vec::with_capacity(blocks * 2);
            for block in values.chunks_exact(BLOCK_SIZE) {
                let (scale, min) = q4_block_grid(block, fit);
                let (m, s) = (min.to_f32(), scale.to_f32());
                let q = |v: f32| q4_level(v, m, s) as u8;
                out.extend(block.chunks_exact(2).map(|p| q(p[0]) | (q(p[1]) << 4)));
                scales.extend_from_slice(&scale.to_le_bytes());
                mins.extend_from_slice(&min.to_le_bytes());
            }
            out.extend_from_slice(&scales);
            out.extend_from_slice(&mins);
        }
        Quantization::Q4K => quantize_q4k(values, fit, &mut out),
    }
    Ok(out)
}

/// q4k's encoding of `values` (a multiple of [`Q4K_SUPER_BLOCK`]) appended to `out`. Per
/// super-block: each 16-value sub-block gets its grid by `fit` (see [`Q4kSuperGrid::fit`]); the
/// levels are then rounded on the coded grids, so they fit what decoding sees.
fn quantize_q4k(values: &[f32], fit: GridFit, out: &mut Vec<u8>) {
    let supers = values.len() / Q4K_SUPER_BLOCK;
    let subs = values.len() / Q4K_SUB_BLOCK;
    let (mut scale_codes, mut min_codes) = (Vec::with_capacity(subs), Vec::with_capacity(subs));
    let (mut ds, mut dmins) = (
        Vec::with_capacity(supers * 2),
        Vec::with_capacity(supers * 2),
    );
    for block in values.chunks_exact(Q4K_SUPER_BLOCK) {
        let grid = Q4kSuperGrid::fit(block, fit);
        for (j, sub) in block.chunks_exact(Q4K_SUB_BLOCK).enumerate() {
            let (s, m) = grid.sub_grid(j);
            let q = |v: f32| q4_level(v, m, s) as u8;
            out.extend(sub.chunks_exact(2).map(|p| q(p[0]) | (q(p[1]) << 4)));
            scale_codes.push(grid.scale_codes[j]);
            min_codes.push(grid.min_codes[j]);
        }
        ds.extend_from_slice(&grid.d.to_le_bytes());
        dmins.extend_from_slice(&grid.dmin.to_le_bytes());
    }
    out.extend_from_slice(&scale_codes);
    out.extend_from_slice(&min_codes);
    out.extend_from_slice(&ds);
    out.extend_from_slice(&dmins);
}

/// The parameters of one q4k super-block: `f16` units `(d, dmin)` and each sub-block's 8-bit
/// scale and min codes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Q4kSuperGrid {
    pub d: f16,
    pub dmin: f16,
    pub scale_codes: [u8; Q4K_SUBS],
    pub min_codes: [u8; Q4K_SUBS],
}

impl Q4kSuperGrid {
    /// The grid of a [`Q4K_SUPER_BLOCK`]-value `block`: each 16-value sub-block gets the grid
    /// `(scale_j, min_j)` that `fit` chooses (the min capped at 0, as codes are unsigned);
    /// `d = max scale_j / 255` and `dmin = max(−min_j) / 255` are rounded to f16 and the codes
    /// are the nearest multiples.
    pub fn fit(block: &[f32], fit: GridFit) -> Self {
        Self::fitted(block, 1.0, fit)
    }

    /// [`Self::fit`] by least squares with `d` and `dmin` `headroom` (≥ 1) times larger, so
    /// that sub-blocks re-fitted later ([`Self::refit_sub`]) to values that have grown can
    /// still be coded.
    pub fn fit_with_headroom(block: &[f32], headroom: f32) -> Self {
        Self::fitted(block, headroom, GridFit::LeastSquares)
    }

    fn fitted(block: &[f32], headroom: f32, fit: GridFit) -> Self {
        let mut grids = [(0f32, 0f32); Q4K_SUBS];
        for (grid, sub) in grids.iter_mut().zip(block.chunks_exact(Q4K_SUB_BLOCK)) {
            *grid = q4k_sub_grid(sub, fit);
        }
        let unit = |largest: f32| f16::from_f32(largest * headroom / 255.0);
        let d = unit(grids.iter().fold(0f32, |m, g| m.max(g.0)));
        let dmin = unit(grids.iter().fold(0f32, |m, g| m.max(-g.1)));
        let mut fitted = Self {
            d,
            dmin,
            scale_codes: [0; Q4K_SUBS],
            min_codes: [0; Q4K_SUBS],
        };
        for (j, &(scale, min)) in grids.iter().enumerate() {
            fitted.code(j, scale, min);
        }
        fitted
    }

    /// Re-fit sub-block `j` to `sub` (its 16 values) under this super-block's `(d, dmin)`:
    /// the codes nearest q4's least-squares grid of `sub`, clamped to `0..=255` (GPTQ, which
    /// moves values after `d` and `dmin` were chosen).
    pub fn refit_sub(&mut self, j: usize, sub: &[f32]) {
        let (scale, min) = q4k_sub_grid(sub, GridFit::LeastSquares);
        self.code(j, scale, min);
    }

    /// Sub-block `j`'s decoded grid `(scale, min)`.
    pub fn sub_grid(&self, j: usize) -> (f32, f32) {
        q4k_grid(
            self.d.to_f32(),
            self.dmin.to_f32(),
            self.scale_codes[j],
            self.min_codes[j],
        )
    }

    fn code(&mut self, j: usize, scale: f32, min: f32) {
        let code = |v: f32, unit: f16| {
            let u = unit.to_f32();
            if u > 0.0 {
                (v / u).round().clamp(0.0, 255.0) as u8
            } else {
                0
            }
        };
        self.scale_codes[j] = code(scale, self.d);
        self.min_codes[j] = code(-min, self.dmin);
    }
}

/// The grid `fit` chooses for one q4k sub-block, as `(scale ≥ 0, min ≤ 0)`: q4's least-squares
/// grid with its min capped at 0, or `min(lo, 0)` to `hi` in 15 steps.
fn q4k_sub_grid(sub: &[f32], fit: GridFit) -> (f32, f32) {
    match fit {
        GridFit::LeastSquares => {
            let (scale, min) = q4_block_grid(sub, fit);
            (scale.to_f32().max(0.0), min.to_f32().min(0.0))
        }
        GridFit::MinMax => {
            let lo = sub.iter().copied().fold(0f32, f32::min);
            let hi = sub.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            (((hi - lo) / 15.0).max(0.0), lo)
        }
    }
}

/// The `(scale, min)` of a q4k sub-block with codes `sc`, `mc` under `(d, dmin)`: the grid
/// `min + q · scale` every decoder (host and WGSL) uses.
pub(crate) fn q4k_grid(d: f32, dmin: f32, sc: u8, mc: u8) -> (f32, f32) {
    (d * sc as f32, -(dmin * mc as f32))
}

/// The q4 level of `v` on the grid `min + q · scale`.
pub(crate) fn q4_level(v: f32, min: f32, scale: f32) -> f32 {
    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    ((v - min) * inv).round().clamp(0.0, 15.0)
}

/// Squared error of `block` on the grid `min + q · scale` (both as stored, f16).
fn q4_error(block: &[f32], min: f16, scale: f16) -> f64 {
    let (m, s) = (min.to_f32(), scale.to_f32());
    block
        .iter()
        .map(|&v| {
            let d = (m + q4_level(v, m, s) * s - v) as f64;
            d * d
        })
        .sum()
}

/// Candidate inverse scales tried around `15 / (max − min)` by [`q4_block_grid`].
const Q4_SEARCH_STEPS: usize = 20;

/// The f16 `(scale, min)` of one q4 block. [`GridFit::MinMax`]: the min/max grid. Least
/// squares: the grid with the least squared error among the min/max grid (round to nearest,
/// the packs' q4 before) and, for [`Q4_SEARCH_STEPS`] + 1 inverse scales in
/// `(15 ± 1) / (max − min)` from `min(lo, 0)`, the least-squares refit of `x ≈ min + q · scale`
/// to the levels that scale rounds to (llama.cpp's `make_qkx2_quants` idea). Never worse than min/max; on the real Qwen2.5-0.5B it takes the worst embedding's
/// cosine to f32 from 0.924 to 0.966 at the same 5 bits per weight (benches/quant).
pub(crate) fn q4_block_grid(block: &[f32], fit: GridFit) -> (f16, f16) {
    let lo = block.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let min = f16::from_f32(lo);
    let scale = f16::from_f32((hi - min.to_f32()).max(0.0) / 15.0);
    if fit == GridFit::MinMax {
        return (scale, min);
    }
    let mut best = (q4_error(block, min, scale), scale, min);
    let from = lo.min(0.0) as f64;
    let span = hi as f64 - from;
    if span <= 0.0 || best.0 == 0.0 {
        return (best.1, best.2);
    }
    let n = block.len() as f64;
    let sum_x: f64 = block.iter().map(|&v| v as f64).sum();
    for i in 0..=Q4_SEARCH_STEPS {
        let iscale = (15.0 + (2.0 * i as f64 / Q4_SEARCH_STEPS as f64 - 1.0)) / span;
        let (mut sum_q, mut sum_qq, mut sum_qx) = (0.0, 0.0, 0.0);
        for &v in block {
            let q = ((v as f64 - from) * iscale).round().clamp(0.0, 15.0);
            sum_q += q;
            sum_qq += q * q;
            sum_qx += q * v as f64;
        }
        let det = n * sum_qq - sum_q * sum_q;
        if det <= 0.0 {
            continue;
        }
        let s = (n * sum_qx - sum_q * sum_x) / det;
        let m = (sum_qq * sum_x - sum_q * sum_qx) / det;
        let (scale, min) = (f16::from_f64(s), f16::from_f64(m));
        if !(scale.to_f32() > 0.0) || !min.is_finite() || !scale.is_finite() {
            continue;
        }
        let err = q4_error(block, min, scale);
        if err < best.0 {
            best = (err, scale, min);
        }
    }
    (best.1, best.2)
}

/// The power-of-two exponent `e` a pack part stores its block parameters under
/// (`quantize_scaled`): stored f16 scales and mins are the true ones times `2^−e`, chosen so the
/// largest lands near 1024. Without it, blocks of small weights get f16 **subnormal** scales
/// (below 6.1e-5, i.e. block max |x| < 0.0078 for q8), with as little as a few bits of
/// precision: on the real Qwen2.5-0.5B up to 15 % of a tensor's blocks, which cost q8 0.001 of
/// cosine on some sentences. Powers of two scale exactly, so this changes nothing else.
pub fn scale_exponent(values: &[f32]) -> i32 {
    let absmax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    if !(absmax > 0.0) || !absmax.is_finite() {
        return 0;
    }
    (absmax.log2().floor() as i32 - 10).clamp(-MAX_SCALE_EXPONENT, MAX_SCALE_EXPONENT)
}

/// Largest |exponent| [`scale_exponent`] returns and a pack may declare.
pub const MAX_SCALE_EXPONENT: i32 = 64;

fn pow2(e: i32) -> f32 {
    2f32.powi(e)
}

/// [`quantize`] with block parameters stored as the true ones times `2^−exponent` (see
/// [`scale_exponent`]); f32/f16 data must use exponent 0.
pub fn quantize_scaled(values: &[f32], scheme: Quantization, exponent: i32) -> Result<Vec<u8>> {
    quantize_scaled_fitted(values, scheme, exponent, GridFit::LeastSquares)
}

/// [`quantize_scaled`] with q4 and q4k grids chosen by `fit`.
pub fn quantize_scaled_fitted(
    values: &[f32],
    scheme: Quantization,
    exponent: i32,
    fit: GridFit,
) -> Result<Vec<u8>> {
    if exponent == 0 {
        return quantize_fitted(values, scheme, fit);
    }
    if !scheme.is_block() {
        return Err(QzhouError::InvalidOption(format!(
            "{scheme} data has no block scales to scale by 2^{exponent}"
        )));
    }
    let factor = pow2(-exponent);
    let scaled: Vec<f32> = values.iter().map(|v| v * factor).collect();
    quantize_fitted(&scaled, scheme, fit)
}

/// [`dequantize`] of data written by [`quantize_scaled`] with `exponent`.
pub fn dequantize_scaled(
    bytes: &[u8],
    numel: usize,
    scheme: Quantization,
    exponent: i32,
) -> Result<Vec<f32>> {
    let mut out = dequantize(bytes, numel, scheme)?;
    if exponent != 0 {
        let factor = pow2(exponent);
        out.iter_mut().for_each(|v| *v *= factor);
    }
    Ok(out)
}

/// A q4 or q4k tensor whose levels and grids were chosen elsewhere (GPTQ, `gptq.rs`) rather
/// than by [`quantize`]'s per-block rounding: `[rows, cols]` levels in `0..=15` on the grids of
/// [`RoundedGrids`], times `2^exponent`. [`crate::weight_pack::write_pack`] stores it as it is,
/// in any row ranges its parts need.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundedQ4 {
    /// Rows (output features).
    pub rows: usize,
    /// Columns (input features), a multiple of the scheme's block.
    pub cols: usize,
    /// The power of two the stored parameters are scaled by (see [`scale_exponent`]).
    pub exponent: i32,
    /// Row-major levels, two per byte, low nibble first (`rows · cols / 2` bytes).
    pub nibbles: Vec<u8>,
    /// The grids the levels sit on.
    pub grids: RoundedGrids,
}

/// The block parameters of a [`RoundedQ4`], row-major, in stored (`2^−exponent`) units.
#[derive(Debug, Clone, PartialEq)]
pub enum RoundedGrids {
    /// q4: one `(scale, min)` pair per block of [`BLOCK_SIZE`].
    Q4 { scales: Vec<f16>, mins: Vec<f16> },
    /// q4k: one scale and one min code per sub-block of [`Q4K_SUB_BLOCK`], one `(d, dmin)` pair
    /// per super-block of [`Q4K_SUPER_BLOCK`].
    Q4K {
        scale_codes: Vec<u8>,
        min_codes: Vec<u8>,
        d: Vec<f16>,
        dmin: Vec<f16>,
    },
}

impl RoundedQ4 {
    /// `Q4` or `Q4K`.
    pub fn scheme(&self) -> Quantization {
        match self.grids {
            RoundedGrids::Q4 { .. } => Quantization::Q4,
            RoundedGrids::Q4K { .. } => Quantization::Q4K,
        }
    }

    /// Rows `start..end` in [`quantize`]'s byte layout of [`Self::scheme`] (q4: nibbles, scales,
    /// mins; q4k: nibbles, scale codes, min codes, `d`, `dmin`), to be read back with
    /// [`dequantize_scaled`] and [`Self::exponent`].
    pub fn part_bytes(&self, start: usize, end: usize) -> Vec<u8> {
        let halves = |v: &[f16], per_row: usize| -> Vec<u8> {
            v[start * per_row..end * per_row]
                .iter()
                .flat_map(|h| h.to_le_bytes())
                .collect()
        };
        let bytes_per_row = self.cols / 2;
        let mut out = Vec::with_capacity(self.scheme().stored_bytes((end - start) * self.cols));
        out.extend_from_slice(&self.nibbles[start * bytes_per_row..end * bytes_per_row]);
        match &self.grids {
            RoundedGrids::Q4 { scales, mins } => {
                let blocks = self.cols / BLOCK_SIZE;
                out.extend(halves(scales, blocks));
                out.extend(halves(mins, blocks));
            }
            RoundedGrids::Q4K {
                scale_codes,
                min_codes,
                d,
                dmin,
            } => {
                let (subs, supers) = (self.cols / Q4K_SUB_BLOCK, self.cols / Q4K_SUPER_BLOCK);
                out.extend_from_slice(&scale_codes[start * subs..end * subs]);
                out.extend_from_slice(&min_codes[start * subs..end * subs]);
                out.extend(halves(d, supers));
                out.extend(halves(dmin, supers));
            }
        }
        out
    }

    /// The values as stored, `[rows, cols]` row-major, in true units.
    pub fn to_f32(&self) -> Vec<f32> {
        dequantize_scaled(
            &self.part_bytes(0, self.rows),
            self.rows * self.cols,
            self.scheme(),
            self.exponent,
        )
        .expect("a RoundedQ4's own bytes decode")
    }
}

/// Block-quantised values laid out for a GPU kernel: what a fused dequantise-matmul or a
/// table gather reads.
///
/// For a row-major `[rows, cols]` tensor (`cols` a multiple of the scheme's block):
/// * `words`: the quantised values as little-endian `u32` words, row-major — q8: four `i8` per
///   word (value `j` in bits `8j..8j+8`), 8 words per block; q4/q4k: eight nibbles per word
///   (value `j` in bits `4j..4j+4`, the low-nibble-first byte order of [`quantize`]), 4 words
///   per 32 values.
/// * `params`: per block, in block order — q8: `scale`; q4: `scale, min` interleaved; q4k:
///   `d, dmin` interleaved per 128-value super-block. Widened from the stored `f16`, so
///   decoding reproduces [`dequantize`] exactly.
/// * `codes` (q4k only, else empty): per super-block 4 words, word `k` holding sub-blocks
///   `2k` and `2k + 1` as bytes `sc, mc, sc, mc` (low byte first); sub-block `j` decodes as
///   `q · (d · sc_j) − dmin · mc_j`.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedBlocks {
    /// `Q8`, `Q4` or `Q4K`.
    pub scheme: Quantization,
    /// Quantised values, 32-bit words.
    pub words: Vec<u32>,
    /// Scales (q8), interleaved scale/min pairs (q4) or `d`/`dmin` pairs (q4k), one entry
    /// (pair) per block.
    pub params: Vec<f32>,
    /// q4k's sub-block scale and min codes, four bytes per word (empty for q8/q4).
    pub codes: Vec<u32>,
}

impl PackedBlocks {
    /// An empty buffer for `scheme` (q8, q4 or q4k only).
    pub fn new(scheme: Quantization) -> Result<Self> {
        match scheme {
            Quantization::Q8 | Quantization::Q4 | Quantization::Q4K => Ok(Self {
                scheme,
                words: Vec::new(),
                params: Vec::new(),
                codes: Vec::new(),
            }),
            other => Err(QzhouError::InvalidOption(format!(
                "{other} is not a block scheme (expected q8, q4 or q4k)"
            ))),
        }
    }

    /// Make room for `numel` more values, exactly (no doubling: a pack's tensors are read at
    /// their stored size).
    pub fn reserve(&mut self, numel: usize) {
        let blocks = numel / self.scheme.block_size();
        self.words.reserve_exact(blocks * self.words_per_block());
        self.params.reserve_exact(blocks * self.params_per_block());
        self.codes.reserve_exact(blocks * self.codes_per_block());
    }

    /// Append `numel` values stored by [`quantize`] (e.g. one row-split part of a pack tensor).
    pub fn extend_from_stored(&mut self, bytes: &[u8], numel: usize) -> Result<()> {
        let scheme = self.scheme;
        let expected = scheme.stored_bytes(numel);
        if bytes.len() != expected || numel % scheme.block_size() != 0 {
            return Err(QzhouError::InvalidOption(format!(
                "{scheme} data for {numel} values must be {expected} bytes, got {}",
                bytes.len()
            )));
        }
        let blocks = numel / scheme.block_size();
        let data_bytes = match scheme {
            Quantization::Q8 => numel,
            _ => numel / 2,
        };
        let (data, rest) = bytes.split_at(data_bytes);
        let word = |c: &[u8]| u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        let half_at = |b: &[u8], i: usize| f16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32();
        match scheme {
            Quantization::Q8 => {
                non_finite_half(rest, "scale")?;
                self.params.extend((0..blocks).map(|b| half_at(rest, b)));
            }
            Quantization::Q4 => {
                non_finite_half(rest, "scale or min")?;
                let (scales, mins) = rest.split_at(blocks * 2);
                for b in 0..blocks {
                    self.params.push(half_at(scales, b));
                    self.params.push(half_at(mins, b));
                }
            }
            _ => {
                let subs = numel / Q4K_SUB_BLOCK;
                let (scale_codes, rest) = rest.split_at(subs);
                let (min_codes, halves) = rest.split_at(subs);
                non_finite_half(halves, "super-block d or dmin")?;
                let (ds, dmins) = halves.split_at(blocks * 2);
                for b in 0..blocks {
                    self.params.push(half_at(ds, b));
                    self.params.push(half_at(dmins, b));
                }
                let interleaved: Vec<u8> = scale_codes
                    .iter()
                    .zip(min_codes)
                    .flat_map(|(&sc, &mc)| [sc, mc])
                    .collect();
                self.codes.extend(interleaved.chunks_exact(4).map(word));
            }
        }
        self.words.extend(data.chunks_exact(4).map(word));
        Ok(())
    }

    /// [`PackedBlocks::extend_from_stored`] of data written by [`quantize_scaled`] with
    /// `exponent`: the widened parameters are multiplied back, so kernels see true values.
    pub fn extend_from_stored_scaled(
        &mut self,
        bytes: &[u8],
        numel: usize,
        exponent: i32,
    ) -> Result<()> {
        let from = self.params.len();
        self.extend_from_stored(bytes, numel)?;
        if exponent != 0 {
            let factor = pow2(exponent);
            self.params[from..].iter_mut().for_each(|p| *p *= factor);
        }
        Ok(())
    }

    /// Words per block: 8 (q8), 4 (q4), 16 (q4k's 128 values).
    pub fn words_per_block(&self) -> usize {
        match self.scheme {
            Quantization::Q8 => 8,
            Quantization::Q4K => 16,
            _ => 4,
        }
    }

    /// Rows `start..end` of the `[rows, cols]` matrix these blocks hold (`cols` a multiple of
    /// the scheme's block).
    pub fn slice_rows(&self, start: usize, end: usize, cols: usize) -> PackedBlocks {
        let blocks_per_row = cols / self.scheme.block_size();
        let words = blocks_per_row * self.words_per_block();
        let params = blocks_per_row * self.params_per_block();
        let codes = blocks_per_row * self.codes_per_block();
        PackedBlocks {
            scheme: self.scheme,
            words: self.words[start * words..end * words].to_vec(),
            params: self.params[start * params..end * params].to_vec(),
            codes: self.codes[start * codes..end * codes].to_vec(),
        }
    }

    /// Params per block: 1 (q8 scale) or 2 (q4 scale and min, q4k d and dmin).
    pub fn params_per_block(&self) -> usize {
        match self.scheme {
            Quantization::Q8 => 1,
            _ => 2,
        }
    }

    /// Code words per block: 4 (q4k: 8 sub-blocks × 2 bytes), else 0.
    pub fn codes_per_block(&self) -> usize {
        match self.scheme {
            Quantization::Q4K => 4,
            _ => 0,
        }
    }

    /// Number of values held.
    pub fn numel(&self) -> usize {
        self.words.len() / self.words_per_block() * self.scheme.block_size()
    }

    /// Decode to `f32` on the host (the reference the GPU kernels are tested against).
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.numel());
        for (b, block) in self.words.chunks_exact(self.words_per_block()).enumerate() {
            for (i, &w) in block.iter().enumerate() {
                match self.scheme {
                    Quantization::Q8 => {
                        let s = self.params[b];
                        out.extend(w.to_le_bytes().iter().map(|&q| q as i8 as f32 * s));
                    }
                    Quantization::Q4K => {
                        // Word i of the super-block: values 8i..8i+8, sub-block i / 2.
                        let sub = i / 2;
                        let code = self.codes[b * 4 + sub / 2].to_le_bytes();
                        let (sc, mc) = (code[2 * (sub % 2)], code[2 * (sub % 2) + 1]);
                        let (d, dmin) = (self.params[2 * b], self.params[2 * b + 1]);
                        let (s, m) = q4k_grid(d, dmin, sc, mc);
                        out.extend((0..8).map(|j| m + ((w >> (4 * j)) & 0xf) as f32 * s));
                    }
                    _ => {
                        let (s, m) = (self.params[2 * b], self.params[2 * b + 1]);
                        out.extend((0..8).map(|j| m + ((w >> (4 * j)) & 0xf) as f32 * s));
                    }
                }
            }
        }
        out
    }
}

/// An error naming the first non-finite `f16` in `bytes` (little-endian halves).
fn non_finite_half(bytes: &[u8], what: &str) -> Result<()> {
    match bytes
        .chunks_exact(2)
        .position(|c| !f16::from_le_bytes([c[0], c[1]]).is_finite())
    {
        Some(i) => Err(QzhouError::InvalidOption(format!(
            "stored {what} {i} is not finite"
        ))),
        None => Ok(()),
    }
}

/// Decode `numel` values stored by [`quantize`] in `scheme`. `bytes` must be exactly
/// [`Quantization::stored_bytes`] long.
pub fn dequantize(bytes: &[u8], numel: usize, scheme: Quantization) -> Result<Vec<f32>> {
    let expected = scheme.stored_bytes(numel);
    if bytes.len() != expected || numel % scheme.block_size() != 0 {
        return Err(QzhouError::InvalidOption(format!(
            "{scheme} data for {numel} values must be {expected} bytes, got {}",
            bytes.len()
        )));
    }
    // Stored weights come from files anyone can write: a NaN or infinite value (or block scale)
    // would turn every embedding into NaN without an error, so it is refused here.
    match scheme {
        Quantization::F32 => {
            if let Some(i) = bytes
                .chunks_exact(4)
                .position(|c| !f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite())
            {
                return Err(QzhouError::InvalidOption(format!(
                    "value {i} is not finite"
                )));
            }
        }
        Quantization::F16 => non_finite_half(bytes, "value")?,
        Quantization::Q8 => non_finite_half(&bytes[numel..], "block scale")?,
        Quantization::Q4 => non_finite_half(&bytes[numel / 2..], "block scale or min")?,
        Quantization::Q4K => non_finite_half(
            &bytes[numel / 2 + numel / Q4K_SUB_BLOCK * 2..],
            "super-block d or dmin",
        )?,
    }
    let half_at = |b: &[u8], i: usize| f16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32();
    Ok(match scheme {
        Quantization::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Quantization::F16 => (0..numel).map(|i| half_at(bytes, i)).collect(),
        Quantization::Q8 => {
            let (data, scales) = bytes.split_at(numel);
            data.iter()
                .enumerate()
                .map(|(i, &q)| q as i8 as f32 * half_at(scales, i / BLOCK_SIZE))
                .collect()
        }
        Quantization::Q4 => {
            let blocks = numel / BLOCK_SIZE;
            let (data, rest) = bytes.split_at(numel / 2);
            let (scales, mins) = rest.split_at(blocks * 2);
            let mut out = Vec::with_capacity(numel);
            for (i, &pair) in data.iter().enumerate() {
                let b = 2 * i / BLOCK_SIZE;
                let (s, m) = (half_at(scales, b), half_at(mins, b));
                out.push(m + (pair & 0x0f) as f32 * s);
                out.push(m + (pair >> 4) as f32 * s);
            }
            out
        }
        Quantization::Q4K => {
            let subs = numel / Q4K_SUB_BLOCK;
            let (data, rest) = bytes.split_at(numel / 2);
            let (scale_codes, rest) = rest.split_at(subs);
            let (min_codes, rest) = rest.split_at(subs);
            let (ds, dmins) = rest.split_at(numel / Q4K_SUPER_BLOCK * 2);
            let mut out = Vec::with_capacity(numel);
            for (j, sub) in data.chunks_exact(Q4K_SUB_BLOCK / 2).enumerate() {
                let b = j / Q4K_SUBS;
                let (s, m) = q4k_grid(
                    half_at(ds, b),
                    half_at(dmins, b),
                    scale_codes[j],
                    min_codes[j],
                );
                for &pair in sub {
                    out.push(m + (pair & 0x0f) as f32 * s);
                    out.push(m + (pair >> 4) as f32 * s);
                }
            }
            out
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_non_finite_values_and_scales_are_refused() {
        let block: Vec<f32> = (0..32).map(|i| i as f32 / 31.0 - 0.5).collect();
        for scheme in Quantization::ALL {
            let mut bytes = quantize(&block, scheme).unwrap();
            // The last f16/f32 of each layout is a value (f32/f16) or a block scale/min.
            let n = bytes.len();
            match scheme {
                Quantization::F32 => bytes[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes()),
                _ => bytes[n - 2..].copy_from_slice(&f16::INFINITY.to_le_bytes()),
            }
            let e = dequantize(&bytes, 32, scheme).unwrap_err().to_string();
            assert!(e.contains("not finite"), "{scheme}: {e}");
            if scheme.is_block() {
                let e = PackedBlocks::new(scheme)
                    .unwrap()
                    .extend_from_stored(&bytes, 32)
                    .unwrap_err()
                    .to_string();
                assert!(e.contains("not finite"), "{scheme}: {e}");
            }
        }
        assert_eq!(Quantization::F32.checked_stored_bytes(usize::MAX), None);
        assert_eq!(Quantization::Q4.checked_stored_bytes(33), None);
        assert_eq!(Quantization::Q4.checked_stored_bytes(64), Some(40));
    }

    /// Deterministic values spread like trained weights (a few outliers included).
    fn weights(n: usize) -> Vec<f32> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        (0..n)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let u = (state >> 11) as f32 / (1u64 << 53) as f32 - 0.5;
                if i % 97 == 0 {
                    u * 0.8
                } else {
                    u * 0.08
                }
            })
            .collect()
    }

    #[test]
    fn f32_and_f16_round_trip() {
        let v = weights(64);
        assert_eq!(
            dequantize(
                &quantize(&v, Quantization::F32).unwrap(),
                64,
                Quantization::F32
            )
            .unwrap(),
            v
        );
        let h = dequantize(
            &quantize(&v, Quantization::F16).unwrap(),
            64,
            Quantization::F16,
        )
        .unwrap();
        for (a, b) in v.iter().zip(&h) {
            assert_eq!(*b, f16::from_f32(*a).to_f32());
        }
    }

    /// Error bound from the scheme: q8 rounds to nearest, |x − x̂| ≤ scale/2 per value (plus
    /// f16 rounding of the scale, below 1e-3 relative), so max|x|/254 per block; q4's searched
    /// grid minimises the squared error instead and stays within (max − min)/7.5.
    #[test]
    fn block_error_is_within_half_a_step() {
        let v = weights(BLOCK_SIZE * 40);
        for scheme in [Quantization::Q8, Quantization::Q4] {
            let bytes = quantize(&v, scheme).unwrap();
            assert_eq!(bytes.len(), scheme.stored_bytes(v.len()));
            let d = dequantize(&bytes, v.len(), scheme).unwrap();
            for (block, dq) in v.chunks(BLOCK_SIZE).zip(d.chunks(BLOCK_SIZE)) {
                let lo = block.iter().copied().fold(f32::INFINITY, f32::min);
                let hi = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let absmax = lo.abs().max(hi.abs());
                let step = match scheme {
                    Quantization::Q8 => absmax / 127.0,
                    // The searched grid trades the largest error for a smaller squared error:
                    // within a whole min/max step (twice the min/max grid's bound).
                    _ => 2.0 * (hi - lo) / 15.0,
                };
                for (a, b) in block.iter().zip(dq) {
                    assert!(
                        (a - b).abs() <= step * 0.5 * 1.01 + 1e-6,
                        "{scheme}: {a} vs {b}"
                    );
                }
            }
        }
    }

    /// The q4 search is never worse than the min/max grid on any block (it is one of the
    /// candidates), and clearly better on weight-like (bell-shaped) blocks.
    #[test]
    fn q4_search_beats_the_min_max_grid() {
        // A deterministic bell-shaped sample: sums of three uniforms, with an outlier per block.
        let mut state = 12345u64;
        let mut uniform = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let v: Vec<f32> = (0..BLOCK_SIZE * 256)
            .map(|i| {
                let x = (uniform() + uniform() + uniform()) * 0.02;
                if i % BLOCK_SIZE == 7 {
                    x * 4.0
                } else {
                    x
                }
            })
            .collect();
        let d = dequantize(
            &quantize(&v, Quantization::Q4).unwrap(),
            v.len(),
            Quantization::Q4,
        )
        .unwrap();
        let (mut searched, mut minmax) = (0.0, 0.0);
        for (block, dq) in v.chunks(BLOCK_SIZE).zip(d.chunks(BLOCK_SIZE)) {
            let err: f64 = block
                .iter()
                .zip(dq)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum();
            let lo = f16::from_f32(block.iter().copied().fold(f32::INFINITY, f32::min));
            let hi = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let scale = f16::from_f32((hi - lo.to_f32()) / 15.0);
            let plain = q4_error(block, lo, scale);
            assert!(err <= plain * (1.0 + 1e-9), "{err} > {plain}");
            searched += err;
            minmax += plain;
        }
        assert!(
            searched < 0.9 * minmax,
            "searched {searched} vs min/max {minmax}"
        );
    }

    /// Small weights: with f16 scales a q8 block of max |x| 1e-4 has a subnormal scale (7.9e-7,
    /// f16 step 6e-8 there: 8 % off) and misses q8's own bound; the scale exponent restores it.
    #[test]
    fn scale_exponents_keep_small_blocks_at_full_precision() {
        let v: Vec<f32> = (0..BLOCK_SIZE * 8)
            .map(|i| ((i * 37 % 101) as f32 / 100.0 - 0.5) * 2e-4)
            .collect();
        let e = scale_exponent(&v);
        assert_eq!(e, -24, "max |x| ≈ 1e-4 = 2^-13.3 → 2^(-14-10)");
        for scheme in [Quantization::Q8, Quantization::Q4] {
            let worst = |bytes: &[u8], exponent: i32| {
                let d = dequantize_scaled(bytes, v.len(), scheme, exponent).unwrap();
                let mut packed = PackedBlocks::new(scheme).unwrap();
                packed
                    .extend_from_stored_scaled(bytes, v.len(), exponent)
                    .unwrap();
                assert_eq!(packed.to_f32(), d, "{scheme}: packed = dequantised");
                v.iter()
                    .zip(&d)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max)
            };
            let plain = worst(&quantize(&v, scheme).unwrap(), 0);
            let scaled = worst(&quantize_scaled(&v, scheme, e).unwrap(), e);
            let absmax = v.iter().fold(0f32, |m, x| m.max(x.abs()));
            let bound = match scheme {
                Quantization::Q8 => absmax / 127.0 * 0.5 * 1.01,
                _ => 2.0 * 2.0 * absmax / 15.0,
            };
            assert!(scaled <= bound, "{scheme}: {scaled} > {bound}");
            assert!(scaled < plain, "{scheme}: scaled {scaled} vs plain {plain}");
        }
        assert_eq!(scale_exponent(&[0.0; 32]), 0);
        assert_eq!(scale_exponent(&[1.0; 32]), -10);
        assert!(quantize_scaled(&v, Quantization::F16, 3).is_err());
    }

    #[test]
    fn packed_blocks_decode_like_dequantize_across_parts() {
        let values = weights(4 * BLOCK_SIZE * 3);
        for scheme in [Quantization::Q8, Quantization::Q4] {
            let mut packed = PackedBlocks::new(scheme).unwrap();
            // Two "parts" of 8 and 4 blocks, as a row-split pack tensor stores them.
            let (a, b) = values.split_at(8 * BLOCK_SIZE);
            for part in [a, b] {
                let bytes = quantize(part, scheme).unwrap();
                packed.extend_from_stored(&bytes, part.len()).unwrap();
            }
            let mut expected = dequantize(&quantize(a, scheme).unwrap(), a.len(), scheme).unwrap();
            expected.extend(dequantize(&quantize(b, scheme).unwrap(), b.len(), scheme).unwrap());
            assert_eq!(packed.numel(), values.len());
            assert_eq!(packed.to_f32(), expected, "{scheme}");
            let per_block = if scheme == Quantization::Q8 { 1 } else { 2 };
            assert_eq!(packed.params.len(), 12 * per_block);
        }
        assert!(PackedBlocks::new(Quantization::F16).is_err());
        let mut q8 = PackedBlocks::new(Quantization::Q8).unwrap();
        let err = q8.extend_from_stored(&[0u8; 10], BLOCK_SIZE).unwrap_err();
        assert!(err.to_string().contains("34 bytes"), "{err}");
    }

    #[test]
    fn known_q8_and_q4_bytes() {
        // q8: absmax 127 → scale 1.0 exactly; values are their own codes.
        let mut v = vec![0f32; BLOCK_SIZE];
        v[0] = 127.0;
        v[1] = -3.0;
        v[2] = 2.4; // rounds to 2
        let b = quantize(&v, Quantization::Q8).unwrap();
        assert_eq!(&b[..3], &[127u8, (-3i8) as u8, 2]);
        assert_eq!(&b[BLOCK_SIZE..], &f16::from_f32(1.0).to_le_bytes());
        // q4: min 0, max 15 → scale 1; values 0..15 pack low nibble first.
        let v: Vec<f32> = (0..BLOCK_SIZE).map(|i| (i % 16) as f32).collect();
        let b = quantize(&v, Quantization::Q4).unwrap();
        assert_eq!(b[0], 0x10);
        assert_eq!(b[7], 0xfe);
        assert_eq!(dequantize(&b, BLOCK_SIZE, Quantization::Q4).unwrap(), v);
    }

    #[test]
    fn constant_and_zero_blocks_decode_exactly() {
        for scheme in [Quantization::Q8, Quantization::Q4] {
            let zeros = vec![0f32; BLOCK_SIZE];
            let d = dequantize(&quantize(&zeros, scheme).unwrap(), BLOCK_SIZE, scheme).unwrap();
            assert_eq!(d, zeros);
        }
        let c = vec![0.5f32; BLOCK_SIZE];
        let d = dequantize(
            &quantize(&c, Quantization::Q4).unwrap(),
            BLOCK_SIZE,
            Quantization::Q4,
        )
        .unwrap();
        assert_eq!(d, c);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(quantize(&[1.0; 31], Quantization::Q8)
            .unwrap_err()
            .to_string()
            .contains("multiple of 32"));
        let mut v = vec![0.0; 32];
        v[5] = f32::NAN;
        assert!(quantize(&v, Quantization::Q4)
            .unwrap_err()
            .to_string()
            .contains("index 5"));
        assert!(dequantize(&[0u8; 10], 32, Quantization::Q8)
            .unwrap_err()
            .to_string()
            .contains("34 bytes"));
        assert!("q3"
            .parse::<Quantization>()
            .unwrap_err()
            .to_string()
            .contains("q3"));
        assert_eq!(Quantization::Q4.for_shape(&[64, 48]), Quantization::F32);
        assert_eq!(Quantization::Q4.for_shape(&[64]), Quantization::F32);
        assert_eq!(Quantization::Q8.for_shape(&[8, 64]), Quantization::Q8);
    }

    /// A table with columns that are usually their block's largest or smallest value (as some
    /// of Qwen's token-embedding columns are): least squares pulls such a value towards the
    /// middle in most rows, min/max grids do not. Per column, the mean signed error over the
    /// rows against the rms error of the whole table; measured for least squares −0.29 / −0.22
    /// (q4 / q4k) in the high column and +0.09 / +0.08 in the low one, for min/max within
    /// ±0.03, at 11 / 15 % more rms error.
    #[test]
    fn min_max_grids_keep_block_extremes_that_least_squares_pulls_in() {
        let (rows, cols) = (2048, 128);
        let mut v = weights(rows * cols);
        for row in v.chunks_mut(cols) {
            row[5] += 0.05; // usually the largest of its block
            row[20] -= 0.05; // usually the smallest
        }
        for scheme in [Quantization::Q4, Quantization::Q4K] {
            let bias = |fit: GridFit| {
                let d = dequantize(&quantize_fitted(&v, scheme, fit).unwrap(), v.len(), scheme)
                    .unwrap();
                let err: Vec<f64> = d.iter().zip(&v).map(|(a, b)| (a - b) as f64).collect();
                let rms = (err.iter().map(|e| e * e).sum::<f64>() / err.len() as f64).sqrt();
                let column_mean =
                    |c: usize| err.iter().skip(c).step_by(cols).sum::<f64>() / rows as f64 / rms;
                (column_mean(5), column_mean(20), rms)
            };
            let (ls_high, ls_low, ls_rms) = bias(GridFit::LeastSquares);
            let (mm_high, mm_low, mm_rms) = bias(GridFit::MinMax);
            assert!(
                ls_high < -0.15 && ls_low > 0.04,
                "{scheme} least squares: {ls_high} {ls_low}"
            );
            assert!(
                mm_high.abs() < 0.05 && mm_low.abs() < 0.05,
                "{scheme} min/max: {mm_high} {mm_low}"
            );
            assert!(
                mm_rms > ls_rms && mm_rms < 1.5 * ls_rms,
                "{mm_rms} vs {ls_rms}"
            );
        }
        // On the grid's ends: a min/max block's largest and smallest values decode within the
        // coding error (q4: f16 rounding; q4k: the 8-bit codes, at most 7.5 d + dmin / 2).
        let d = dequantize(
            &quantize_fitted(&v, Quantization::Q4, GridFit::MinMax).unwrap(),
            v.len(),
            Quantization::Q4,
        )
        .unwrap();
        for (block, dq) in v.chunks(BLOCK_SIZE).zip(d.chunks(BLOCK_SIZE)) {
            let hi = (0..BLOCK_SIZE)
                .max_by(|&a, &b| block[a].total_cmp(&block[b]))
                .unwrap();
            let lo = (0..BLOCK_SIZE)
                .min_by(|&a, &b| block[a].total_cmp(&block[b]))
                .unwrap();
            let step = (block[hi] - block[lo]) / 15.0;
            for i in [hi, lo] {
                assert!(
                    (dq[i] - block[i]).abs() <= 0.01 * step,
                    "{} vs {}",
                    dq[i],
                    block[i]
                );
            }
        }
    }

    /// q4k's layout and its error bound. Per sub-block the searched grid is within a whole
    /// min/max step (`(hi − lo)/15`, as q4's); coding its scale to a multiple of `d` moves the
    /// scale by at most `d/2` (so a level of at most 15 moves by `7.5 d`) and the min by at
    /// most `dmin/2`; f16 rounding of the grid adds under 0.1 % of it. And 16-value sub-blocks
    /// fit bell-shaped weights with one outlier per 32 better than q4's 32-value blocks.
    #[test]
    fn q4k_stays_within_its_coded_grid_and_beats_q4() {
        let v = weights(Q4K_SUPER_BLOCK * 64);
        let bytes = quantize(&v, Quantization::Q4K).unwrap();
        assert_eq!(bytes.len(), v.len() * 21 / 32, "5.25 bits per weight");
        assert_eq!(bytes.len(), Quantization::Q4K.stored_bytes(v.len()));
        let d = dequantize(&bytes, v.len(), Quantization::Q4K).unwrap();
        let subs = v.len() / Q4K_SUB_BLOCK;
        let halves = &bytes[v.len() / 2 + 2 * subs..];
        let half = |i: usize| f16::from_le_bytes([halves[2 * i], halves[2 * i + 1]]).to_f32();
        let supers = v.len() / Q4K_SUPER_BLOCK;
        for (j, (sub, dq)) in v
            .chunks(Q4K_SUB_BLOCK)
            .zip(d.chunks(Q4K_SUB_BLOCK))
            .enumerate()
        {
            let (unit, unit_min) = (half(j / Q4K_SUBS), half(supers + j / Q4K_SUBS));
            let lo = sub.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = sub.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let bound = (hi - lo) / 15.0 * 1.001 + 7.5 * unit + 0.5 * unit_min + 1e-6;
            for (a, b) in sub.iter().zip(dq) {
                assert!(
                    (a - b).abs() <= bound,
                    "sub-block {j}: {a} vs {b} (bound {bound})"
                );
            }
        }
        // The device layout decodes to the same values, with and without a scale exponent.
        let mut packed = PackedBlocks::new(Quantization::Q4K).unwrap();
        packed.extend_from_stored(&bytes, v.len()).unwrap();
        assert_eq!(packed.to_f32(), d);
        assert_eq!(packed.codes.len(), subs / 2);
        let e = scale_exponent(&v);
        let scaled = quantize_scaled(&v, Quantization::Q4K, e).unwrap();
        let mut packed = PackedBlocks::new(Quantization::Q4K).unwrap();
        packed
            .extend_from_stored_scaled(&scaled, v.len(), e)
            .unwrap();
        assert_eq!(
            packed.to_f32(),
            dequantize_scaled(&scaled, v.len(), Quantization::Q4K, e).unwrap()
        );
        let half_rows = packed.slice_rows(2, 4, 2 * Q4K_SUPER_BLOCK);
        assert_eq!(
            half_rows.to_f32(),
            packed.to_f32()[4 * Q4K_SUPER_BLOCK..8 * Q4K_SUPER_BLOCK]
        );
        // Squared error against q4 on the same values.
        let q4 = dequantize(
            &quantize(&v, Quantization::Q4).unwrap(),
            v.len(),
            Quantization::Q4,
        )
        .unwrap();
        let sq =
            |d: &[f32]| -> f64 { v.iter().zip(d).map(|(a, b)| ((a - b) as f64).powi(2)).sum() };
        assert!(sq(&d) < 0.8 * sq(&q4), "q4k {} vs q4 {}", sq(&d), sq(&q4));
        // Only whole super-blocks; a row of 32 falls back to q4.
        assert!(quantize(&v[..96], Quantization::Q4K).is_err());
        assert_eq!(Quantization::Q4K.checked_stored_bytes(96), None);
        assert_eq!(Quantization::Q4K.checked_stored_bytes(128), Some(84));
        assert_eq!(Quantization::Q4K.for_shape(&[4, 96]), Quantization::Q4);
        assert_eq!(Quantization::Q4K.for_shape(&[4, 384]), Quantization::Q4K);
        assert_eq!("q4k".parse::<Quantization>().unwrap(), Quantization::Q4K);
    }

    /// Any bytes of q4k's length decode to finite values or to an error naming the non-finite
    /// super-block parameter: codes and nibbles have no invalid values.
    #[test]
    fn arbitrary_q4k_bytes_decode_or_fail_cleanly() {
        let n = 2 * Q4K_SUPER_BLOCK;
        let len = Quantization::Q4K.stored_bytes(n);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for case in 0..2_000 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            match dequantize(&bytes, n, Quantization::Q4K) {
                Ok(values) => assert!(values.iter().all(|v| v.is_finite()), "case {case}"),
                Err(e) => assert!(e.to_string().contains("not finite"), "case {case}: {e}"),
            }
            let mut packed = PackedBlocks::new(Quantization::Q4K).unwrap();
            if packed.extend_from_stored(&bytes, n).is_ok() {
                assert_eq!(
                    packed.to_f32(),
                    dequantize(&bytes, n, Quantization::Q4K).unwrap()
                );
            }
            assert!(dequantize(&bytes[1..], n, Quantization::Q4K).is_err());
        }
    }
}
