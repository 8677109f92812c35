//! Backend extension: the two operations qzhou runs as hand-written kernels where a backend
//! has them (the WGSL sources in `shaders/`, on burn-wgpu) and as plain Burn ops elsewhere.
//!
//! * [`KernelBackend::quantized_matmul`] — `x · Wᵀ` with `W` kept block-quantised (q8/q4) on
//!   the device and dequantised inside the matmul, so a q4 model takes 5 bits per weight of
//!   GPU memory instead of 32.
//! * [`KernelBackend::mean_pool`] — masked mean pooling and L2 normalisation in one pass.
//! * [`KernelBackend::silu_mul`], [`KernelBackend::rope`] and [`KernelBackend::row_norms`] —
//!   SwiGLU gating, rotary embedding and row norms in one pass each, on the CPU backend
//!   (`flex.rs`), where Burn's elementwise ops
//!   are single-threaded scalar loops and broadcasts go through a strided index.
//!
//! Every backend implements the trait; plain burn-wgpu (not under Burn's fusion) and the CPU
//! backend override default methods, which are written with ordinary Burn tensor ops and are
//! the reference the kernels are tested against ([`reference_quantized_matmul`], [`reference_mean_pool`]).

use burn::prelude::*;
use burn::tensor::ElementConversion;

use crate::error::{QzhouError, Result};
use crate::pooling::{l2_normalize, pool, Pooling};
use crate::quantization::{PackedBlocks, Quantization, BLOCK_SIZE, Q4K_SUB_BLOCK, Q4K_SUPER_BLOCK};

mod flex;
mod half_params;
mod quantized_rows;
#[cfg(feature = "wgpu")]
mod wgpu;
#[cfg(feature = "wgpu")]
pub use wgpu::{dense_matmul_kernel, quantized_matmul_kernel, MatmulSchedule};

pub use quantized_rows::{reference_quantized_gather, QuantizedRows};

/// Which matmul computes a projection (`x · Wᵀ`, dense or quantised weights) on a backend
/// with kernels of its own (plain wgpu: the WGSL kernels of `shaders/`). Parsed from `auto`,
/// `burn`, `row-tile`, `tiled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MatmulKernel {
    /// The fastest of the row tile, the tiled kernel and, for f32 weights, Burn's matmul,
    /// measured on the device the first time each weight format and shape (rows rounded up to
    /// a power of two) is met: cubecl's autotune, the mechanism Burn's own matmul uses
    /// (`kernels/wgpu/autotune.rs` says why dequantise + Burn's matmul is not a candidate).
    /// Natively the measurement blocks once and is cached on disk with cubecl's autotune
    /// cache; in a browser it runs in the background while the row tile serves the calls that
    /// meet it.
    #[default]
    Autotune,
    /// Burn's matmul, on quantised weights after dequantising them on the device (a
    /// transient f32 copy of the weight per call): the reference.
    Burn,
    /// `shaders/row_tile.wgsl`: 8 rows × 1 column per invocation, no workgroup memory.
    RowTile,
    /// `shaders/tiled_matmul.wgsl`: 64 × 128 blocks through workgroup memory (12 KiB).
    Tiled,
}

impl std::str::FromStr for MatmulKernel {
    type Err = QzhouError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Autotune),
            "burn" => Ok(Self::Burn),
            "row-tile" => Ok(Self::RowTile),
            "tiled" => Ok(Self::Tiled),
            other => Err(QzhouError::InvalidOption(format!(
                "matmul kernel `{other}` (expected `auto`, `burn`, `row-tile` or `tiled`)"
            ))),
        }
    }
}

impl std::fmt::Display for MatmulKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Autotune => "auto",
            Self::Burn => "burn",
            Self::RowTile => "row-tile",
            Self::Tiled => "tiled",
        })
    }
}

/// A Burn backend with qzhou's fused operations.
pub trait KernelBackend: Backend {
    /// Whether [`KernelBackend::quantized_matmul`] is a fused kernel here. When it is not,
    /// loaders dequantise q8/q4 weights to dense `f32` (faster than dequantising each call).
    fn has_fused_quantized_matmul() -> bool {
        false
    }

    /// `x`: `[m, k]` times the transpose of the `[n, k]` block-quantised `weight`: `[m, n]`.
    fn quantized_matmul(x: Tensor<Self, 2>, weight: &QuantizedMatrix<Self>) -> Tensor<Self, 2> {
        reference_quantized_matmul(x, weight)
    }

    /// Whether [`KernelBackend::quantized_gather`] is a fused kernel here. When it is, loaders
    /// keep a q8/q4 token-embedding table quantised on the device.
    fn has_quantized_gather() -> bool {
        false
    }

    /// `ids` `[n]` (vocabulary indices) → `[n, cols]`: for each id inside `table`'s rows
    /// (`table.start <= id < table.start + table.rows`) that row dequantised, zeros for the
    /// others (a table split over several buffers sums its parts' lookups).
    fn quantized_gather(ids: Tensor<Self, 1, Int>, table: &QuantizedRows<Self>) -> Tensor<Self, 2> {
        reference_quantized_gather(ids, table)
    }

    /// `x` `[m, k]` times a dense weight `w` `[k, n]` (a `Linear`'s weight, any strides):
    /// `[m, n]`. Burn's matmul, unless the backend has its own kernels and
    /// [`KernelBackend::use_matmul_kernel`] chose one of them (or autotune found one faster).
    fn dense_matmul(x: Tensor<Self, 2>, w: &Tensor<Self, 2>) -> Tensor<Self, 2> {
        x.matmul(w.clone())
    }

    /// Which matmul runs [`KernelBackend::dense_matmul`] and
    /// [`KernelBackend::quantized_matmul`], for every model on the backend in this process:
    /// all of them compute the same products, so the choice is a speed trade-off per adapter
    /// and shape ([`MatmulKernel::Autotune`], the default, measures it). A no-op where the
    /// backend has no kernels of its own (everything but plain wgpu).
    fn use_matmul_kernel(kernel: MatmulKernel) {
        let _ = kernel;
    }

    /// Masked mean of `hidden` `[batch, seq, dim]` over the tokens where `mask` `[batch, seq]`
    /// is 1, L2-normalised when `normalize`: `[batch, dim]`.
    fn mean_pool(
        hidden: Tensor<Self, 3>,
        mask: Tensor<Self, 2, Int>,
        normalize: bool,
    ) -> Tensor<Self, 2> {
        reference_mean_pool(hidden, mask, normalize)
    }

    /// SwiGLU's gating, `silu(gate) · up` elementwise (`silu(x) = x · σ(x)`), same shape in and
    /// out (`[batch, seq, intermediate]` in the MLP).
    fn silu_mul<const D: usize>(gate: Tensor<Self, D>, up: Tensor<Self, D>) -> Tensor<Self, D> {
        reference_silu_mul(gate, up)
    }

    /// Rotary position embedding of `x` `[batch, seq, heads, head_dim]` by the `[seq, head_dim]`
    /// tables of [`crate::model::rope_tables`] (HF rotate-half layout); defaults to
    /// [`crate::model::apply_rope`].
    fn rope(x: Tensor<Self, 4>, cos: &Tensor<Self, 2>, sin: &Tensor<Self, 2>) -> Tensor<Self, 4> {
        crate::model::apply_rope(x, cos, sin)
    }

    /// L2 norm of each row of `x` `[rows, dim]`: `[rows]`.
    fn row_norms(x: Tensor<Self, 2>) -> Tensor<Self, 1> {
        reference_row_norms(x)
    }

    /// Run `load`, which creates long-lived tensors (model weights), with the device giving
    /// each its own exactly sized buffer where the backend can: cubecl's persistent memory on
    /// wgpu. Its default pools sub-slice large pages, which for a 7B q4 model held 5.30 GiB for
    /// 4.31 GiB of weights. Elsewhere `load` simply runs.
    fn with_persistent_memory<T: Send>(
        device: &Self::Device,
        load: impl FnOnce() -> Result<T> + Send,
    ) -> Result<T> {
        let _ = device;
        load()
    }

    /// Whether reading a small tensor back to the host is synchronous and costs nothing (host
    /// memory backends). The encoder then checks a batch for padding and runs attention
    /// without a mask when nothing is masked. GPU backends say no: the read would stall their
    /// queue, and WebGPU cannot block on one at all.
    fn cheap_host_reads() -> bool {
        false
    }

    /// The largest tensor (bytes) one device buffer may hold, when the backend has such a
    /// limit (wgpu: the adapter's `maxStorageBufferBindingSize`). Loaders split bigger weights.
    fn max_buffer_bytes(device: &Self::Device) -> Option<usize> {
        let _ = device;
        None
    }

    /// Device memory the backend's allocator holds on `device` (bytes), where it can tell
    /// (cubecl backends); `None` for host memory backends.
    fn memory_reserved_bytes(device: &Self::Device) -> Option<u64> {
        let _ = device;
        None
    }

    /// Total memory of `device` (bytes), where the backend can tell: CUDA (the driver's
    /// `cuDeviceTotalMem`). `None` for host backends (use the host's available memory) and for
    /// wgpu (WebGPU exposes buffer limits, not the device's memory).
    fn device_memory_bytes(device: &Self::Device) -> Option<u64> {
        let _ = device;
        None
    }
}

/// A `[rows, cols]` weight (HF `[out, in]`) stored block-quantised on the device, **k-major**:
/// the blocks of [`PackedBlocks`] re-laid so that word `w` of block `b` of row `r` sits at
/// `words[(b · words_per_block + w) · rows + r]` and its parameters are f16 value
/// `b · rows + r` (q8 scale) or `2 (b · rows + r) + {0, 1}` (q4 scale, min; q4k `d`, `dmin` of
/// super-block `b`) of `params`, two per word, times `row_scale[r]` (see `half_params.rs`);
/// q4k's code word `c` of super-block `b` sits at `codes[(b · 4 + c) · rows + r]`. Neighbouring
/// output columns read neighbouring words in the kernel, and decoding the words in order yields
/// `Wᵀ` `[cols, rows]` row-major. `words`, `params` and `codes` hold `u32` words bit-cast to the
/// backend's int type.
#[derive(Module, Debug)]
pub struct QuantizedMatrix<B: Backend> {
    /// Quantised values, one 32-bit word per 4 (q8) or 8 (q4, q4k) of them, k-major.
    pub words: Tensor<B, 1, Int>,
    /// Per-block scales (q8), scale/min pairs (q4) or per-super-block `d`/`dmin` pairs (q4k)
    /// as f16, two per word, k-major.
    pub params: Tensor<B, 1, Int>,
    /// q4k: sub-block scale/min codes, four bytes per word, k-major; one unused word for q8/q4.
    pub codes: Tensor<B, 1, Int>,
    /// The power of two each row's parameters are multiplied by, `[rows]`.
    pub row_scale: Tensor<B, 1>,
    /// Output features (`n`).
    pub rows: usize,
    /// Input features (`k`), a multiple of 32 (of 128 for q4k).
    pub cols: usize,
    /// Bits per value: 8 or 4.
    pub bits: usize,
    /// Whether the weight is q4k (16-value sub-blocks with coded parameters) rather than q8/q4.
    pub q4k: bool,
}

impl<B: Backend> QuantizedMatrix<B> {
    /// Upload `packed` holding a row-major `[rows, cols]` tensor (re-laid k-major on the host).
    pub fn from_packed(
        packed: &PackedBlocks,
        rows: usize,
        cols: usize,
        device: &B::Device,
    ) -> Result<Self> {
        let bits = block_bits(packed, rows, cols)?;
        let q4k = packed.scheme == Quantization::Q4K;
        let words = k_major(&packed.words, rows);
        let per_block = packed.params_per_block();
        let per_row = cols / packed.scheme.block_size() * per_block;
        // Row r's parameter j = (block b, slot p) goes to k-major position (b · rows + r) · per_block + p.
        let params = half_params::encode(&packed.params, rows, per_row, |r, j| {
            (j / per_block * rows + r) * per_block + j % per_block
        });
        let codes = if q4k {
            k_major(&packed.codes, rows)
        } else {
            vec![0]
        };
        let (n_words, n_params, n_codes) = (words.len(), params.words.len(), codes.len());
        Ok(Self {
            words: Tensor::from_data(TensorData::new(words, [n_words]), device),
            params: Tensor::from_data(TensorData::new(params.words, [n_params]), device),
            codes: Tensor::from_data(TensorData::new(codes, [n_codes]), device),
            row_scale: Tensor::from_data(TensorData::new(params.row_scale, [rows]), device),
            rows,
            cols,
            bits,
            q4k,
        })
    }

    /// Dequantise on the device with plain Burn ops: `Wᵀ`, `[cols, rows]`.
    pub fn dequantize_transposed(&self) -> Tensor<B, 2> {
        let (n, k) = (self.rows, self.cols);
        let per_word = 32 / self.bits;
        let words = self.words.clone().reshape([k / per_word, n]);
        if self.q4k {
            return self.dequantize_q4k_transposed(words);
        }
        // [word_rows, per_word, n] -> [k, n]: row index = word_row · per_word + j = k index.
        let q = unpack_words(words, self.bits, 1).reshape([k / BLOCK_SIZE, BLOCK_SIZE, n]);
        let blocks = k / BLOCK_SIZE;
        let per_block = params_per_block(self.bits);
        let params = half_params::decode(self.params.clone(), blocks * n * per_block)
            .reshape([blocks, n, per_block])
            * self.row_scale.clone().reshape([1, n, 1]);
        let w = if self.bits == 8 {
            q * params.reshape([blocks, 1, n])
        } else {
            let scale = params.clone().narrow(2, 0, 1).reshape([blocks, 1, n]);
            let min = params.narrow(2, 1, 1).reshape([blocks, 1, n]);
            q * scale + min
        };
        w.reshape([k, n])
    }

    /// [`Self::dequantize_transposed`] of a q4k weight whose k-major `words` are `[k / 8, n]`:
    /// `q · (d · sc) − dmin · mc` per sub-block, in the order of operations of the host decoder.
    fn dequantize_q4k_transposed(&self, words: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let (n, k) = (self.rows, self.cols);
        let (supers, subs) = (k / Q4K_SUPER_BLOCK, k / Q4K_SUB_BLOCK);
        let q = unpack_words(words, 4, 1).reshape([subs, Q4K_SUB_BLOCK, n]);
        // (d, dmin) per super-block, repeated over its 8 sub-blocks: [subs, 2, n].
        let units = (half_params::decode(self.params.clone(), supers * n * 2)
            .reshape([supers, n, 2])
            * self.row_scale.clone().reshape([1, n, 1]))
        .swap_dims(1, 2)
        .reshape([supers, 1, 2, n])
        .repeat_dim(1, Q4K_SUPER_BLOCK / Q4K_SUB_BLOCK)
        .reshape([subs, 2, n]);
        // Code word c of a super-block holds sub-blocks 2c, 2c + 1 as bytes sc, mc, sc, mc:
        // [supers · 4, 4, n] → [subs, 2, n].
        let codes = code_bytes(self.codes.clone().reshape([k / 32, n]), 1).reshape([subs, 2, n]);
        let scale = units.clone().narrow(1, 0, 1) * codes.clone().narrow(1, 0, 1);
        let min = (units.narrow(1, 1, 1) * codes.narrow(1, 1, 1)).neg();
        (q * scale + min).reshape([k, n])
    }
}

/// Row-major `[rows, per_row]` words re-laid k-major (word `i` of row `r` at `i · rows + r`),
/// bit-cast to `i32` for the backend's int tensors.
fn k_major(row_major: &[u32], rows: usize) -> Vec<i32> {
    let per_row = row_major.len() / rows;
    let mut out = vec![0i32; row_major.len()];
    for (r, row) in row_major.chunks_exact(per_row).enumerate() {
        for (i, &w) in row.iter().enumerate() {
            out[i * rows + r] = w as i32;
        }
    }
    out
}

/// Bits per value of `packed` (8 or 4), checked to hold exactly `rows × cols` values with
/// `cols` a positive multiple of the block size: what a device upload of it needs.
fn block_bits(packed: &PackedBlocks, rows: usize, cols: usize) -> Result<usize> {
    let bits = match packed.scheme {
        Quantization::Q8 => 8,
        Quantization::Q4 | Quantization::Q4K => 4,
        other => {
            return Err(QzhouError::InvalidOption(format!(
                "{other} is not a block scheme"
            )))
        }
    };
    let block = packed.scheme.block_size();
    if rows == 0 || cols == 0 || cols % block != 0 || packed.numel() != rows * cols {
        return Err(QzhouError::InvalidOption(format!(
            "{} blocks of {} values cannot form a [{rows}, {cols}] matrix (cols must be a \
             positive multiple of {block})",
            packed.scheme,
            packed.numel()
        )));
    }
    Ok(bits)
}

/// Block parameters per block of `bits`-bit values: 1 (q8 scale) or 2 (q4 scale, min).
fn params_per_block(bits: usize) -> usize {
    if bits == 8 {
        1
    } else {
        2
    }
}

/// The values of `bits`-bit words `[a, c]` (4 per q8 word, signed; 8 per q4 word, low nibble
/// first) as floats, value `j` of each word stacked at `dim` of the result: `[a, per_word, c]`
/// (`dim` 1) or `[a, c, per_word]` (`dim` 2). q8 sign-extends with `(b ^ 128) - 128`, which
/// holds whatever the backend's integer width.
fn unpack_words<B: Backend>(words: Tensor<B, 2, Int>, bits: usize, dim: usize) -> Tensor<B, 3> {
    let mask = (1i64 << bits) - 1;
    let values: Vec<Tensor<B, 2, Int>> = (0..32 / bits)
        .map(|j| {
            let v = words
                .clone()
                .bitwise_right_shift_scalar(((bits * j) as i64).elem())
                .bitwise_and_scalar(mask.elem());
            if bits == 8 {
                v.bitwise_xor_scalar(128i64.elem()).sub_scalar(128)
            } else {
                v
            }
        })
        .collect();
    Tensor::stack::<3>(values, dim).float()
}

/// The four unsigned bytes of q4k code words `[a, c]` (low byte first: `sc, mc` of one
/// sub-block, then of the next) as floats, byte `j` of each word stacked at `dim`: `[a, 4, c]`
/// (`dim` 1) or `[a, c, 4]` (`dim` 2).
fn code_bytes<B: Backend>(code_words: Tensor<B, 2, Int>, dim: usize) -> Tensor<B, 3> {
    let bytes: Vec<Tensor<B, 2, Int>> = (0..4)
        .map(|j| {
            code_words
                .clone()
                .bitwise_right_shift_scalar(((8 * j) as i64).elem())
                .bitwise_and_scalar(255i64.elem())
        })
        .collect();
    Tensor::stack::<3>(bytes, dim).float()
}

/// [`KernelBackend::quantized_matmul`] with plain Burn ops: dequantise, then matmul.
pub fn reference_quantized_matmul<B: Backend>(
    x: Tensor<B, 2>,
    weight: &QuantizedMatrix<B>,
) -> Tensor<B, 2> {
    x.matmul(weight.dequantize_transposed())
}

/// `silu(gate) · up` with Burn ops: [`KernelBackend::silu_mul`]'s default and reference.
pub fn reference_silu_mul<B: Backend, const D: usize>(
    gate: Tensor<B, D>,
    up: Tensor<B, D>,
) -> Tensor<B, D> {
    burn::tensor::activation::silu(gate) * up
}

/// Row L2 norms `[rows]` of `x` `[rows, dim]` with Burn ops: [`KernelBackend::row_norms`]'s
/// default and reference.
pub fn reference_row_norms<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 1> {
    let rows = x.dims()[0];
    x.square().sum_dim(1).sqrt().reshape([rows])
}

/// [`KernelBackend::mean_pool`] with plain Burn ops.
pub fn reference_mean_pool<B: Backend>(
    hidden: Tensor<B, 3>,
    mask: Tensor<B, 2, Int>,
    normalize: bool,
) -> Tensor<B, 2> {
    let pooled = pool(hidden, mask, Pooling::Mean);
    if normalize {
        l2_normalize(pooled)
    } else {
        pooled
    }
}

#[cfg(feature = "autodiff")]
impl<B: KernelBackend, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy>
    KernelBackend for burn::backend::Autodiff<B, C>
{
    fn cheap_host_reads() -> bool {
        B::cheap_host_reads()
    }

    fn memory_reserved_bytes(device: &Self::Device) -> Option<u64> {
        B::memory_reserved_bytes(device)
    }

    fn device_memory_bytes(device: &Self::Device) -> Option<u64> {
        B::device_memory_bytes(device)
    }
}

#[cfg(feature = "cuda")]
impl<F: burn_cubecl::FloatElement, I: burn_cubecl::IntElement> KernelBackend
    for burn_cubecl::CubeBackend<burn_cubecl::cubecl::cuda::CudaRuntime, F, I, u8>
{
    fn memory_reserved_bytes(device: &Self::Device) -> Option<u64> {
        use burn_cubecl::cubecl::Runtime;
        let client = burn_cubecl::cubecl::cuda::CudaRuntime::client(device);
        client.memory_usage().ok().map(|u| u.bytes_reserved)
    }

    fn device_memory_bytes(device: &Self::Device) -> Option<u64> {
        use burn_cubecl::cubecl::Runtime;
        // cubecl-cuda 0.10 sets the largest allocation (`max_page_size`) to a quarter of
        // `cuDeviceTotalMem` and exposes no other handle on it (runtime.rs).
        let client = burn_cubecl::cubecl::cuda::CudaRuntime::client(device);
        Some(client.properties().memory.max_page_size.saturating_mul(4))
    }
}

/// Fused backends (Burn's `Fusion` over CUDA or wgpu) get the plain ops, which fusion compiles
/// into its own kernels.
#[cfg(feature = "fusion")]
impl<B: burn_fusion::FusionBackend + KernelBackend> KernelBackend for burn_fusion::Fusion<B> {
    fn memory_reserved_bytes(device: &Self::Device) -> Option<u64> {
        B::memory_reserved_bytes(device)
    }

    fn device_memory_bytes(device: &Self::Device) -> Option<u64> {
        B::device_memory_bytes(device)
    }
}
