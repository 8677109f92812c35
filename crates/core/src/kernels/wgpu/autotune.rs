//! [`MatmulKernel::Autotune`](crate::MatmulKernel::Autotune): the projections' matmul chosen
//! per adapter and shape by measuring the candidates, with cubecl's autotune (the
//! [`LocalTuner`] Burn's own matmul uses): the first call with a new key benchmarks every
//! candidate that takes it (3 warm-up and 10 timed runs each, on the device's own clock) and
//! keeps the fastest for the key. Natively the benchmark blocks that call once and the result
//! goes to cubecl's autotune cache on disk; on wasm the measurement is resolved on the event
//! loop while the calls that meet the key meanwhile run the first candidate that takes them:
//! the row tile, the fastest measured in Chromium on SwiftShader for every format (f32 5× Burn's
//! matmul there), then the tiled kernel, then (f32) Burn's matmul.
//!
//! Candidates, by index (the order matters only for that fallback):
//! * quantised weights: the row-tile kernel, the tiled kernel. Not Burn's matmul after
//!   dequantising on the device: the device clock sees only its kernels' run time, not the
//!   host-side work of its ~20 small ops per call, which on the adapters measured (lavapipe,
//!   SwiftShader: the "GPU" shares the CPU) is most of its cost — chosen by the measurement,
//!   it made q8 embedding 2.7× slower than the row tile in Chromium, and it needs a transient
//!   f32 copy of the weight. It stays available as [`MatmulKernel::Burn`](crate::MatmulKernel::Burn).
//! * f32 weights: the row-tile kernel, the tiled kernel, Burn's matmul (which takes any layout).

use std::fmt;
use std::sync::Arc;

use burn::backend::wgpu::{BoolElement, CubeBackend, CubeTensor, WgpuRuntime};
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn_cubecl::cubecl::tune::{AutotuneKey, LocalTuner, Tunable, TunableSet};
use burn_cubecl::CubeTuneId;
use serde::{Deserialize, Serialize};

use super::{
    dense_layout, dense_matmul_kernel, float_primitive, quantized_matmul_kernel, MatmulSchedule,
};
use crate::kernels::QuantizedMatrix;

type Wgpu<BT> = CubeBackend<WgpuRuntime, f32, i32, BT>;

/// Rows a benchmark multiplies at most: longer inputs are measured on their first
/// `TUNE_ROWS` rows and share one key. 256 rows are four of the tiled kernel's 64-row
/// blocks, enough to rank the schedules, and keep the one-time measurement short on a
/// software rasteriser (SwiftShader: about 0.8 GFLOP/s).
pub(super) const TUNE_ROWS: usize = 256;

/// How a projection's weight is stored: what decides which kernels take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
enum WeightFormat {
    /// f32 `[k, n]`, contiguous.
    DenseKMajor,
    /// f32, the transposed view of a contiguous `[n, k]` (a loaded `Linear`'s weight).
    DenseTransposed,
    /// f32 with any other strides (only Burn's matmul takes it).
    DenseStrided,
    /// q8 blocks of 32.
    Q8,
    /// q4 blocks of 32.
    Q4,
    /// q4k super-blocks.
    Q4k,
}

/// What one autotune result holds for: the weight's format, the depth and columns exactly, the
/// rows rounded up to a power of two and capped at [`TUNE_ROWS`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(super) struct MatmulKey {
    format: WeightFormat,
    rows: usize,
    depth: usize,
    columns: usize,
}

impl MatmulKey {
    fn new(format: WeightFormat, m: usize, k: usize, n: usize) -> Self {
        Self {
            format,
            rows: m.next_power_of_two().min(TUNE_ROWS),
            depth: k,
            columns: n,
        }
    }
}

impl fmt::Display for MatmulKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} [{}, {}] x [{}, {}]",
            self.format, self.rows, self.depth, self.depth, self.columns
        )
    }
}

impl AutotuneKey for MatmulKey {}

/// Whether an `[m, ·]` input can be handed to the tuner: `m > 0`, and small enough for every
/// kernel a key of [`TUNE_ROWS`] rows may have chosen (the row tile's grid: 8 rows per
/// workgroup, 65,535 workgroups), since a chosen candidate that declines at run time would be
/// a panic inside cubecl. Larger inputs take the fixed order instead.
fn tunable_rows(m: usize) -> bool {
    m > 0 && m.div_ceil(8) <= 65_535
}

/// At most [`TUNE_ROWS`] rows of `x`: what a benchmark multiplies.
fn tune_rows<BT: BoolElement>(x: &Tensor<Wgpu<BT>, 2>) -> Tensor<Wgpu<BT>, 2> {
    let m = x.dims()[0];
    if m > TUNE_ROWS {
        x.clone().narrow(0, 0, TUNE_ROWS)
    } else {
        x.clone()
    }
}

/// Run `tunables` on `inputs` (whose first tensor is `x`) with `tuner`, for the device `x`
/// lives on: the fastest candidate for the inputs' key, measured first if the key is new.
fn run_tuned<BT: BoolElement, I: Clone + Send + Sync + 'static>(
    tuner: &LocalTuner<MatmulKey, CubeTuneId>,
    tunables: Arc<TunableSet<MatmulKey, I, CubeTensor<WgpuRuntime>>>,
    x: &Tensor<Wgpu<BT>, 2>,
    inputs: I,
) -> Tensor<Wgpu<BT>, 2> {
    let primitive: CubeTensor<WgpuRuntime> = float_primitive(x.clone());
    let id = CubeTuneId::new::<WgpuRuntime>(&primitive.client, &primitive.device);
    let out = tuner.execute(&id, &primitive.client, tunables, inputs);
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// The storage of a dense `w` `[k, n]` ([`dense_layout`]).
fn dense_format<BT: BoolElement>(w: &Tensor<Wgpu<BT>, 2>) -> WeightFormat {
    let [k, n] = w.dims();
    match dense_layout(&float_primitive(w.clone()), k, n) {
        Some(true) => WeightFormat::DenseKMajor,
        Some(false) => WeightFormat::DenseTransposed,
        None => WeightFormat::DenseStrided,
    }
}

/// `x` `[m, k]` times the dense `w` `[k, n]` by the fastest candidate for its key; `None` where
/// the input is not handed to the tuner ([`tunable_rows`]).
pub(super) fn dense_matmul<BT: BoolElement>(
    x: Tensor<Wgpu<BT>, 2>,
    w: &Tensor<Wgpu<BT>, 2>,
) -> Option<Tensor<Wgpu<BT>, 2>> {
    type Inputs<BT> = (Tensor<Wgpu<BT>, 2>, Tensor<Wgpu<BT>, 2>);
    static TUNER: LocalTuner<MatmulKey, CubeTuneId> = LocalTuner::new("qzhou-dense-matmul");

    if !tunable_rows(x.dims()[0]) {
        return None;
    }
    let tunables = TUNER.init(|| {
        let key = |(x, w): &Inputs<BT>| {
            MatmulKey::new(dense_format(w), x.dims()[0], x.dims()[1], w.dims()[1])
        };
        let inputs = |_: &MatmulKey, (x, w): &Inputs<BT>| (tune_rows(x), w.clone());
        let wgsl = |schedule| {
            move |(x, w): Inputs<BT>| {
                dense_matmul_kernel(x, &w, schedule)
                    .map(float_primitive)
                    .ok_or("the kernel does not take this shape or layout")
            }
        };
        TunableSet::new(key, inputs)
            .with(Tunable::new("row_tile", wgsl(MatmulSchedule::RowTile)))
            .with(Tunable::new("tiled", wgsl(MatmulSchedule::Tiled)))
            .with(Tunable::new("burn_matmul", |(x, w): Inputs<BT>| {
                Ok::<_, &str>(float_primitive(x.matmul(w)))
            }))
    });
    let inputs = (x.clone(), w.clone());
    Some(run_tuned(&TUNER, tunables, &x, inputs))
}

/// `x` `[m, k]` times the quantised `weight` (`x · Wᵀ`) by the fastest candidate for its key;
/// `None` where the input is not handed to the tuner ([`tunable_rows`]).
pub(super) fn quantized_matmul<BT: BoolElement>(
    x: Tensor<Wgpu<BT>, 2>,
    weight: &QuantizedMatrix<Wgpu<BT>>,
) -> Option<Tensor<Wgpu<BT>, 2>> {
    type Inputs<BT> = (Tensor<Wgpu<BT>, 2>, QuantizedMatrix<Wgpu<BT>>);
    static TUNER: LocalTuner<MatmulKey, CubeTuneId> = LocalTuner::new("qzhou-quantized-matmul");

    if !tunable_rows(x.dims()[0]) {
        return None;
    }
    let tunables = TUNER.init(|| {
        let key = |(x, weight): &Inputs<BT>| {
            let format = match (weight.q4k, weight.bits) {
                (true, _) => WeightFormat::Q4k,
                (false, 8) => WeightFormat::Q8,
                (false, _) => WeightFormat::Q4,
            };
            MatmulKey::new(format, x.dims()[0], weight.cols, weight.rows)
        };
        let inputs = |_: &MatmulKey, (x, weight): &Inputs<BT>| (tune_rows(x), weight.clone());
        let wgsl = |schedule| {
            move |(x, weight): Inputs<BT>| {
                quantized_matmul_kernel(x, &weight, schedule)
                    .map(float_primitive)
                    .ok_or("the kernel does not take this shape")
            }
        };
        TunableSet::new(key, inputs)
            .with(Tunable::new("row_tile", wgsl(MatmulSchedule::RowTile)))
            .with(Tunable::new("tiled", wgsl(MatmulSchedule::Tiled)))
    });
    let inputs = (x.clone(), weight.clone());
    Some(run_tuned(&TUNER, tunables, &x, inputs))
}
