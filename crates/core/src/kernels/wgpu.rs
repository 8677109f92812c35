//! The WGSL kernels of `shaders/` registered with burn-wgpu (WebGPU in browsers; Vulkan,
//! Metal, DX12 natively): each is a cubecl [`CubeTask`] whose compiled form is the WGSL
//! source itself, launched on the tensors' own compute client, so the kernels interleave with
//! Burn's generated ones on one queue and share its buffer pool.
//!
//! Burn ships the same plumbing (`SourceKernel`) behind its `template` feature; turning that
//! feature on recompiles all of cubecl for every build (dev, wasm, CUDA check), so the
//! twenty lines live here instead.

use std::sync::{PoisonError, RwLock};

use burn::backend::wgpu::{BoolElement, CubeBackend, CubeTensor, WgpuDevice, WgpuRuntime};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn_cubecl::cubecl::prelude::CubePrimitive;
use burn_cubecl::cubecl::prelude::{
    CompiledKernel, CubeCount, CubeDim, ExecutionMode, KernelId, KernelMetadata, StorageType,
};
use burn_cubecl::cubecl::server::{KernelArguments, MetadataBindingInfo};
use burn_cubecl::cubecl::{CompilationError, Compiler, CubeTask};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device;

use super::{KernelBackend, MatmulKernel, QuantizedMatrix, QuantizedRows};

mod autotune;

/// `shaders/row_tile.wgsl`: the 8-row tile the matmul kernels are built on (prepended).
const ROW_TILE: &str = include_str!("../../../../shaders/row_tile.wgsl");
/// `shaders/nibbles.wgsl`: 4- and 8-bit decoding shared by the quantised matmuls (prepended).
const NIBBLES: &str = include_str!("../../../../shaders/nibbles.wgsl");
/// `shaders/quantized_matmul.wgsl`.
const QUANTIZED_MATMUL: &str = include_str!("../../../../shaders/quantized_matmul.wgsl");
/// `shaders/q4k_matmul.wgsl`.
const Q4K_MATMUL: &str = include_str!("../../../../shaders/q4k_matmul.wgsl");
/// `shaders/quantized_gather.wgsl`.
const QUANTIZED_GATHER: &str = include_str!("../../../../shaders/quantized_gather.wgsl");
/// `shaders/q4k_gather.wgsl`.
const Q4K_GATHER: &str = include_str!("../../../../shaders/q4k_gather.wgsl");
/// `shaders/dense_matmul.wgsl`.
const DENSE_MATMUL: &str = include_str!("../../../../shaders/dense_matmul.wgsl");
/// `shaders/tiled_matmul.wgsl`: the tiled matmul, after one of the three weights files below.
const TILED_MATMUL: &str = include_str!("../../../../shaders/tiled_matmul.wgsl");
/// `shaders/dense_weights.wgsl`: f32 weights for the tiled matmul.
const DENSE_WEIGHTS: &str = include_str!("../../../../shaders/dense_weights.wgsl");
/// `shaders/block_weights.wgsl`: q8/q4 weights for the tiled matmul.
const BLOCK_WEIGHTS: &str = include_str!("../../../../shaders/block_weights.wgsl");
/// `shaders/q4k_weights.wgsl`: q4k weights for the tiled matmul.
const Q4K_WEIGHTS: &str = include_str!("../../../../shaders/q4k_weights.wgsl");
/// The shape of `shaders/tiled_matmul.wgsl`'s blocks (prepended to it as constants).
struct TiledShape {
    /// Invocations of a workgroup along columns.
    invocations_x: u32,
    /// Invocations along rows.
    invocations_y: u32,
    /// Output rows per invocation (a multiple of 4).
    rows: u32,
    /// Output column quads per invocation.
    column_quads: u32,
    /// The k step (a multiple of 4).
    depth: u32,
}

impl TiledShape {
    /// Output rows of one workgroup's block.
    const fn block_rows(&self) -> usize {
        (self.invocations_y * self.rows) as usize
    }

    /// Output columns of one workgroup's block.
    const fn block_columns(&self) -> usize {
        (self.invocations_x * self.column_quads * 4) as usize
    }
}

/// 64 × 128 blocks, 8 × 16 outputs per invocation, k in steps of 16: 12 KiB of workgroup
/// memory, under the 16 KiB every WebGPU device offers (steps of 32, 24 KiB, were 5 % faster on
/// lavapipe but need a device with more). Of the shapes tried on lavapipe with f32 weights the
/// fastest; 4 × 4 outputs per invocation in 16 × 16 workgroups ran at half the speed.
const TILED: TiledShape = TiledShape {
    invocations_x: 8,
    invocations_y: 8,
    rows: 8,
    column_quads: 4,
    depth: 16,
};
/// `shaders/mean_pool_l2.wgsl`.
const MEAN_POOL_L2: &str = include_str!("../../../../shaders/mean_pool_l2.wgsl");

/// The weights `shaders/tiled_matmul.wgsl` reads, with their compile-time parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TiledWeights {
    /// f32, `[k, n]` stored k-major or as the transposed view of `[n, k]`.
    Dense { k_major: bool },
    /// q8 / q4 blocks of 32.
    Blocks { bits: u32 },
    /// q4k super-blocks.
    Q4k,
}

/// Which hand-written kernel, with its compile-time parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Shader {
    /// Fused dequantise + matmul for `bits`-bit blocks.
    QuantizedMatmul { bits: u32 },
    /// Fused dequantise + matmul for q4k.
    Q4kMatmul,
    /// Row gather + dequantise from a `bits`-bit table.
    QuantizedGather { bits: u32 },
    /// Row gather + dequantise from a q4k table.
    Q4kGather,
    /// f32 matmul, the weight `[k, n]` stored k-major or as the transposed view of `[n, k]`.
    DenseMatmul { k_major: bool },
    /// Matmul tiled through workgroup memory, for any of the weights.
    TiledMatmul(TiledWeights),
    /// Masked mean pooling + optional L2 normalisation.
    MeanPoolL2,
}

impl Shader {
    fn source(self) -> String {
        match self {
            Self::QuantizedMatmul { bits } => {
                format!("const BITS: u32 = {bits}u;\n{NIBBLES}\n{ROW_TILE}\n{QUANTIZED_MATMUL}")
            }
            Self::Q4kMatmul => format!("{NIBBLES}\n{ROW_TILE}\n{Q4K_MATMUL}"),
            Self::QuantizedGather { bits } => {
                format!("const BITS: u32 = {bits}u;\n{QUANTIZED_GATHER}")
            }
            Self::Q4kGather => Q4K_GATHER.to_string(),
            Self::DenseMatmul { k_major } => {
                format!("const K_MAJOR: bool = {k_major};\n{ROW_TILE}\n{DENSE_MATMUL}")
            }
            Self::TiledMatmul(weights) => {
                let TiledShape {
                    invocations_x,
                    invocations_y,
                    rows,
                    column_quads,
                    depth,
                } = TILED;
                let weights = match weights {
                    TiledWeights::Dense { k_major } => {
                        format!("const K_MAJOR: bool = {k_major};\n{DENSE_WEIGHTS}")
                    }
                    TiledWeights::Blocks { bits } => {
                        format!("const BITS: u32 = {bits}u;\n{NIBBLES}\n{BLOCK_WEIGHTS}")
                    }
                    TiledWeights::Q4k => format!("{NIBBLES}\n{Q4K_WEIGHTS}"),
                };
                format!(
                    "const WG_X: u32 = {invocations_x}u;\nconst WG_Y: u32 = {invocations_y}u;\nconst RM: u32 = {rows}u;\nconst CN4: u32 = {column_quads}u;\nconst DEPTH: u32 = {depth}u;\n{weights}\n{TILED_MATMUL}"
                )
            }
            Self::MeanPoolL2 => MEAN_POOL_L2.to_string(),
        }
    }

    fn workgroup(self) -> CubeDim {
        match self {
            Self::QuantizedMatmul { .. }
            | Self::Q4kMatmul
            | Self::QuantizedGather { .. }
            | Self::Q4kGather
            | Self::DenseMatmul { .. } => CubeDim::new_1d(64),
            Self::MeanPoolL2 => CubeDim::new_1d(256),
            Self::TiledMatmul(_) => CubeDim::new_1d(TILED.invocations_x * TILED.invocations_y),
        }
    }
}

/// A WGSL source handed to the wgpu runtime as is (entry point `main`).
struct WgslTask(Shader);

impl<C: Compiler> CubeTask<C> for WgslTask {
    fn compile(
        &self,
        _compiler: &mut C,
        _options: &C::CompilationOptions,
        _mode: ExecutionMode,
        _address_type: StorageType,
    ) -> Result<CompiledKernel<C>, CompilationError> {
        Ok(CompiledKernel {
            entrypoint_name: "main".to_string(),
            debug_name: Some(match self.0 {
                Shader::QuantizedMatmul { .. } => "qzhou::quantized_matmul",
                Shader::Q4kMatmul => "qzhou::q4k_matmul",
                Shader::QuantizedGather { .. } => "qzhou::quantized_gather",
                Shader::Q4kGather => "qzhou::q4k_gather",
                Shader::DenseMatmul { .. } => "qzhou::dense_matmul",
                Shader::TiledMatmul(_) => "qzhou::tiled_matmul",
                Shader::MeanPoolL2 => "qzhou::mean_pool_l2",
            }),
            source: self.0.source(),
            // No intermediate representation: the runtime compiles the WGSL text and derives
            // the bind-group layout from it.
            repr: None,
            cube_dim: self.0.workgroup(),
            debug_info: None,
        })
    }
}

impl KernelMetadata for WgslTask {
    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info(self.0)
    }

    fn address_type(&self) -> StorageType {
        u32::as_type_native_unchecked().storage_type()
    }
}

/// Pack `u32` fields into the `u64` words of the info (uniform) buffer, little-endian, padded
/// to 16 bytes as WGSL uniform structs need.
fn info_words(fields: [u32; 4]) -> MetadataBindingInfo {
    let word = |lo: u32, hi: u32| lo as u64 | ((hi as u64) << 32);
    MetadataBindingInfo::custom(vec![word(fields[0], fields[1]), word(fields[2], fields[3])])
}

/// Run `shader` over `inputs` (bound in order) and a new f32 output of `out_shape` (bound
/// last before the info uniform), on the inputs' compute client.
fn launch<BT: BoolElement>(
    shader: Shader,
    inputs: &[&CubeTensor<WgpuRuntime>],
    out_shape: [usize; 2],
    info: [u32; 4],
    groups: CubeCount,
) -> Tensor<CubeBackend<WgpuRuntime, f32, i32, BT>, 2> {
    let client = inputs[0].client.clone();
    let out = empty_device::<WgpuRuntime, f32>(
        client.clone(),
        inputs[0].device.clone(),
        Shape::new(out_shape),
    );
    let buffers = inputs
        .iter()
        .map(|t| t.handle.clone().binding())
        .chain([out.handle.clone().binding()])
        .collect();
    let args = KernelArguments {
        buffers,
        info: info_words(info),
        tensor_maps: Vec::new(),
    };
    client.launch(Box::new(WgslTask(shader)), groups, args);
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

fn float_primitive<B: Backend, const D: usize>(x: Tensor<B, D>) -> B::FloatTensorPrimitive {
    x.into_primitive().tensor()
}

fn to_u32(v: usize, what: &str) -> u32 {
    u32::try_from(v).unwrap_or_else(|_| panic!("{what} {v} exceeds the kernel's u32 indexing"))
}

/// How a matmul kernel cuts the output among invocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatmulSchedule {
    /// `shaders/row_tile.wgsl`: 8 rows × 1 column per invocation, no workgroup memory.
    RowTile,
    /// `shaders/tiled_matmul.wgsl`: 64 × 128 blocks through workgroup memory, 8 × 16 outputs
    /// per invocation; `n` and `k` must be multiples of 4.
    Tiled,
}

impl MatmulSchedule {
    /// Workgroups along (columns, rows) for an `[m, n]` output; `None` where this schedule
    /// cannot take it: `n` not a multiple of 4 (tiled), or a grid past WebGPU's 65,535 per
    /// dimension.
    fn grid(self, m: usize, n: usize) -> Option<CubeCount> {
        let (block_n, block_m) = match self {
            Self::RowTile => (64, 8),
            Self::Tiled if n % 4 != 0 => return None,
            Self::Tiled => (TILED.block_columns(), TILED.block_rows()),
        };
        let (x, y) = (n.div_ceil(block_n), m.div_ceil(block_m));
        (x <= 65_535 && y <= 65_535).then(|| CubeCount::Static(x as u32, y as u32, 1))
    }

    /// The kernel of this schedule: `row_tile`, or the tiled one reading `weights`.
    fn shader(self, weights: TiledWeights, row_tile: Shader) -> Shader {
        match self {
            Self::RowTile => row_tile,
            Self::Tiled => Shader::TiledMatmul(weights),
        }
    }
}

/// How a dense `w` `[k, n]` lies in its buffer, as the WGSL kernels read it: `Some(true)`
/// contiguous `[k, n]` (k-major), `Some(false)` the transposed view of a contiguous `[n, k]`
/// (a loaded `Linear`'s weight), `None` any other strides.
fn dense_layout(w: &CubeTensor<WgpuRuntime>, k: usize, n: usize) -> Option<bool> {
    match w.meta.strides()[..] {
        [a, 1] if a == n => Some(true),
        [1, b] if b == k => Some(false),
        _ => None,
    }
}

/// `x` `[m, k]` times `w` `[k, n]` by `shaders/dense_matmul.wgsl` (row tile) or
/// `shaders/tiled_matmul.wgsl`, reading `w` where it lies: contiguous `[k, n]`, or the
/// transposed view of a contiguous `[n, k]` (how loaded `Linear` weights are held). `None`
/// (use another kernel or Burn's matmul) for any other layout, `k` not a multiple of 4, `n`
/// not a multiple of 4 (tiled), or a grid past WebGPU's 65,535 workgroups per dimension.
pub fn dense_matmul_kernel<BT: BoolElement>(
    x: Tensor<CubeBackend<WgpuRuntime, f32, i32, BT>, 2>,
    w: &Tensor<CubeBackend<WgpuRuntime, f32, i32, BT>, 2>,
    schedule: MatmulSchedule,
) -> Option<Tensor<CubeBackend<WgpuRuntime, f32, i32, BT>, 2>> {
    let [m, k] = x.dims();
    let [k2, n] = w.dims();
    assert_eq!(
        k, k2,
        "dense matmul: x has {k} columns, the weight {k2} rows"
    );
    if k % 4 != 0 || m == 0 || n == 0 {
        return None;
    }
    let groups = schedule.grid(m, n)?;
    let w: CubeTensor<WgpuRuntime> = float_primitive(w.clone());
    let k_major = dense_layout(&w, k, n)?;
    let x: CubeTensor<WgpuRuntime> = into_contiguous(float_primitive(x));
    let info = [
        to_u32(m, "rows"),
        to_u32(n, "columns"),
        to_u32(k, "depth"),
        0,
    ];
    let shader = schedule.shader(
        TiledWeights::Dense { k_major },
        Shader::DenseMatmul { k_major },
    );
    Some(launch(shader, &[&x, &w], [m, n], info, groups))
}

/// `x` `[m, k]` times a quantised weight `[n, k]` (as `x · Wᵀ`) by the fused dequantise +
/// matmul kernels: `shaders/quantized_matmul.wgsl` / `q4k_matmul.wgsl` (row tile) or
/// `shaders/tiled_matmul.wgsl` with the weights' decoding. `None` for `n` not a multiple of 4
/// (tiled) or a grid past WebGPU's 65,535 workgroups per dimension.
pub fn quantized_matmul_kernel<BT: BoolElement>(
    x: Tensor<CubeBackend<WgpuRuntime, f32, i32, BT>, 2>,
    weight: &QuantizedMatrix<CubeBackend<WgpuRuntime, f32, i32, BT>>,
    schedule: MatmulSchedule,
) -> Option<Tensor<CubeBackend<WgpuRuntime, f32, i32, BT>, 2>> {
    let [m, k] = x.dims();
    assert_eq!(
        k, weight.cols,
        "quantized matmul: x has {k} columns, the weight {}",
        weight.cols
    );
    let n = weight.rows;
    if m == 0 {
        return Some(Tensor::zeros([0, n], &x.device()));
    }
    let groups = schedule.grid(m, n)?;
    let x: CubeTensor<WgpuRuntime> = into_contiguous(float_primitive(x));
    let words: CubeTensor<WgpuRuntime> = into_contiguous(weight.words.clone().into_primitive());
    let params: CubeTensor<WgpuRuntime> = into_contiguous(weight.params.clone().into_primitive());
    let row_scale: CubeTensor<WgpuRuntime> =
        into_contiguous(float_primitive(weight.row_scale.clone()));
    let info = [
        to_u32(m, "rows"),
        to_u32(n, "columns"),
        to_u32(k, "depth"),
        0,
    ];
    let codes: CubeTensor<WgpuRuntime>;
    let mut inputs = vec![&x, &words, &params, &row_scale];
    let shader = if weight.q4k {
        codes = into_contiguous(weight.codes.clone().into_primitive());
        inputs.push(&codes);
        schedule.shader(TiledWeights::Q4k, Shader::Q4kMatmul)
    } else {
        let bits = weight.bits as u32;
        schedule.shader(
            TiledWeights::Blocks { bits },
            Shader::QuantizedMatmul { bits },
        )
    };
    Some(launch(shader, &inputs, [m, n], info, groups))
}

/// [`KernelBackend::use_matmul_kernel`]'s choice.
static MATMUL_KERNEL: RwLock<MatmulKernel> = RwLock::new(MatmulKernel::Autotune);

/// The matmul the projections run ([`KernelBackend::use_matmul_kernel`]).
fn matmul_kernel() -> MatmulKernel {
    // A plain Copy value: a writer that panicked cannot have left it half-written.
    *MATMUL_KERNEL.read().unwrap_or_else(PoisonError::into_inner)
}

/// The WGSL schedules to try, in order, before Burn's matmul: for a fixed [`MatmulKernel`]
/// (the tiled one falls back to the row tile for shapes it does not take), and for an input
/// [`MatmulKernel::Autotune`] does not hand to the tuner (taller than the row tile's grid: the
/// tiled kernel takes 8× taller ones, without the dequantised copy Burn's matmul needs).
fn fixed_schedules(kernel: MatmulKernel) -> &'static [MatmulSchedule] {
    match kernel {
        MatmulKernel::Tiled | MatmulKernel::Autotune => {
            &[MatmulSchedule::Tiled, MatmulSchedule::RowTile]
        }
        MatmulKernel::RowTile => &[MatmulSchedule::RowTile],
        MatmulKernel::Burn => &[],
    }
}

impl<BT: BoolElement> KernelBackend for CubeBackend<WgpuRuntime, f32, i32, BT> {
    fn dense_matmul(x: Tensor<Self, 2>, w: &Tensor<Self, 2>) -> Tensor<Self, 2> {
        let kernel = matmul_kernel();
        if kernel == MatmulKernel::Autotune {
            if let Some(y) = autotune::dense_matmul(x.clone(), w) {
                return y;
            }
        }
        for &schedule in fixed_schedules(kernel) {
            if let Some(y) = dense_matmul_kernel(x.clone(), w, schedule) {
                return y;
            }
        }
        x.matmul(w.clone())
    }

    fn use_matmul_kernel(kernel: MatmulKernel) {
        *MATMUL_KERNEL
            .write()
            .unwrap_or_else(PoisonError::into_inner) = kernel;
    }

    fn has_fused_quantized_matmul() -> bool {
        true
    }

    fn quantized_matmul(x: Tensor<Self, 2>, weight: &QuantizedMatrix<Self>) -> Tensor<Self, 2> {
        if x.dims()[0] == 0 {
            return Tensor::zeros([0, weight.rows], &x.device());
        }
        let kernel = matmul_kernel();
        if kernel == MatmulKernel::Autotune {
            if let Some(y) = autotune::quantized_matmul(x.clone(), weight) {
                return y;
            }
        }
        // Burn's matmul on the dequantised weight is also the way out for a shape no kernel
        // takes (a grid past WebGPU's limits).
        fixed_schedules(kernel)
            .iter()
            .find_map(|&schedule| quantized_matmul_kernel(x.clone(), weight, schedule))
            .unwrap_or_else(|| super::reference_quantized_matmul(x, weight))
    }

    fn has_quantized_gather() -> bool {
        true
    }

    fn quantized_gather(ids: Tensor<Self, 1, Int>, table: &QuantizedRows<Self>) -> Tensor<Self, 2> {
        let n = ids.dims()[0];
        let cols = table.cols;
        if n == 0 {
            return Tensor::zeros([0, cols], &ids.device());
        }
        let ids: CubeTensor<WgpuRuntime> = into_contiguous(ids.into_primitive());
        let words: CubeTensor<WgpuRuntime> = into_contiguous(table.words.clone().into_primitive());
        let params: CubeTensor<WgpuRuntime> =
            into_contiguous(table.params.clone().into_primitive());
        let row_scale: CubeTensor<WgpuRuntime> =
            into_contiguous(float_primitive(table.row_scale.clone()));
        let row_words = cols * table.bits / 32;
        // Tokens beyond the grid's height (WebGPU: 65 535) are strided over by the kernel.
        let groups = CubeCount::Static(row_words.div_ceil(64) as u32, n.min(65_535) as u32, 1);
        let info = [
            to_u32(n, "tokens"),
            to_u32(cols, "columns"),
            to_u32(table.start, "first row"),
            to_u32(table.rows, "rows"),
        ];
        if table.q4k {
            let codes: CubeTensor<WgpuRuntime> =
                into_contiguous(table.codes.clone().into_primitive());
            let inputs = [&ids, &words, &params, &row_scale, &codes];
            return launch(Shader::Q4kGather, &inputs, [n, cols], info, groups);
        }
        let shader = Shader::QuantizedGather {
            bits: table.bits as u32,
        };
        launch(
            shader,
            &[&ids, &words, &params, &row_scale],
            [n, cols],
            info,
            groups,
        )
    }

    fn mean_pool(
        hidden: Tensor<Self, 3>,
        mask: Tensor<Self, 2, Int>,
        normalize: bool,
    ) -> Tensor<Self, 2> {
        let [b, s, h] = hidden.dims();
        let hidden: CubeTensor<WgpuRuntime> = into_contiguous(float_primitive(hidden));
        let mask: CubeTensor<WgpuRuntime> = into_contiguous(mask.into_primitive());
        let info = [
            to_u32(b, "batch"),
            to_u32(s, "sequence"),
            to_u32(h, "dim"),
            normalize as u32,
        ];
        let groups = CubeCount::Static(b as u32, 1, 1);
        launch(Shader::MeanPoolL2, &[&hidden, &mask], [b, h], info, groups)
    }

    fn with_persistent_memory<T: Send>(
        device: &WgpuDevice,
        load: impl FnOnce() -> crate::error::Result<T> + Send,
    ) -> crate::error::Result<T> {
        let client = <WgpuRuntime as burn_cubecl::cubecl::Runtime>::client(device);
        client
            .memory_persistent_allocation((), |()| load())
            .map_err(|e| {
                crate::error::QzhouError::Backend(format!("wgpu persistent memory: {e}"))
            })?
    }

    fn max_buffer_bytes(device: &WgpuDevice) -> Option<usize> {
        let client = <WgpuRuntime as burn_cubecl::cubecl::Runtime>::client(device);
        usize::try_from(client.properties().memory.max_page_size).ok()
    }

    fn memory_reserved_bytes(device: &WgpuDevice) -> Option<u64> {
        let client = <WgpuRuntime as burn_cubecl::cubecl::Runtime>::client(device);
        client.memory_usage().ok().map(|u| u.bytes_reserved)
    }
}
