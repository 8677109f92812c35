// Fused dequantise + matmul for block-quantised weights (qzhou q8 / q4, block = 32 values).
// The row-tile schedule: the host runs tiled_matmul.wgsl (with the same decoding) where n is a
// multiple of 4, 2.2–2.5× faster on lavapipe, and this kernel for the other shapes.
//
//   out[m, n] = sum_k x[m, k] * W[n, k]          (x · Wᵀ, W in HF [out, in] layout)
//   q8: W[n, k] = (q · scale) · row_scale[n]           q ∈ [-127, 127], four i8 per u32 word
//   q4: W[n, k] = (min + q · scale) · row_scale[n]     q ∈ [0, 15], eight nibbles per word, low first
//
// scale and min are f16, two per u32 word (unpack2x16float, low half first); row_scale is a
// power of two per output column, applied once to the finished dot product (exact).
//
// The host prepends `const BITS: u32 = 8u;` or `4u;` (the only template parameter), so one
// source serves both schemes and the branch on BITS folds away at pipeline creation, and
// nibbles.wgsl (`nibbles_of` and `bytes_of`, the decoding).
//
// Weight layout on the device is k-major ("column-interleaved"): word `w` of block `b` of
// output column `col` is words[(b · WORDS + w) · n + col], and its scale (q8) / scale and min
// (q4) are params[b · n + col] / params[2 (b · n + col) + {0, 1}]. Neighbouring invocations
// (consecutive columns) therefore read neighbouring words — coalesced on a GPU, contiguous
// vector loads on a CPU rasteriser — while every invocation of a workgroup reads the same x
// element (a broadcast). Decoded, the words are Wᵀ as a row-major [k, n] matrix. The f16
// parameters sit at half index b · n + col (q8 scale) or word b · n + col (q4 scale, min).
//
// One invocation computes 8 rows of one output column (the tile of row_tile.wgsl, which the
// host prepends): each weight is decoded once and used 8 times; four decoded weights form a
// vec4 dotted with a vec4 load of each x row (x is bound as vec4s; k is a multiple of 32).
//
// Bindings (order fixed by the host): x, words, params, row_scale, out, info. `k` must be a multiple of
// 32 (the host checks). Every storage binding is declared read_write although inputs are only
// read: Burn sub-allocates tensors from shared buffers, so an input and the output may be two
// ranges of one buffer, and WebGPU forbids one buffer as read-only and writable in the same
// dispatch.

const BLOCK: u32 = 32u;
// Words per block: 32 values × BITS bits / 32 bits.
const WORDS: u32 = BITS;

@group(0) @binding(0) var<storage, read_write> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> words: array<u32>;
@group(0) @binding(2) var<storage, read_write> params: array<u32>;
@group(0) @binding(3) var<storage, read_write> row_scale: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<uniform> info: Info;

@compute @workgroup_size(64, 1, 1)
fn main(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let col = workgroup.x * TILE_N + lid;
    if (col >= info.n) {
        return;
    }
    let n = info.n;
    let row0 = begin_rows(workgroup.y);

    let blocks = info.k / BLOCK;
    for (var b = 0u; b < blocks; b = b + 1u) {
        let c4 = b * (BLOCK / 4u);
        if (BITS == 8u) {
            let half = b * n + col;
            let scale = unpack2x16float(params[half >> 1u])[half & 1u];
            for (var w = 0u; w < WORDS; w = w + 1u) {
                let word = words[(b * WORDS + w) * n + col];
                accumulate(c4 + w, bytes_of(word) * scale);
            }
        } else {
            let pair = unpack2x16float(params[b * n + col]);
            let scale = pair.x;
            let offset = pair.y;
            for (var w = 0u; w < WORDS; w = w + 1u) {
                let word = words[(b * WORDS + w) * n + col];
                accumulate(c4 + 2u * w, nibbles_of(word, 0u) * scale + offset);
                accumulate(c4 + 2u * w + 1u, nibbles_of(word, 4u) * scale + offset);
            }
        }
    }

    let factor = row_scale[col];
    acc_a = acc_a * factor;
    acc_b = acc_b * factor;
    store_rows(col, row0);
}
