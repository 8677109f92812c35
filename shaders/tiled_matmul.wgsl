// The tiled matmul shared by the f32, q8/q4 and q4k weights: workgroup memory, large tiles.
//
//   out[m, n] = sum_k x[m, k] * W[n, k] · factor[n]          (x · Wᵀ, W in HF [out, in] layout)
//
// The host prepends the tile constants and one weights file — dense_weights.wgsl (f32),
// block_weights.wgsl (q8/q4, after nibbles.wgsl) or q4k_weights.wgsl (after nibbles.wgsl) —
// which declares the bindings (x, the weight's buffers, out, info: the order of the host's
// `launch`) and two functions:
//   w_quad(col, q) -> vec4<f32>      W[col, 4q .. 4q + 3] before the factor (col < n, q < k / 4)
//   column_factors(col) -> vec4<f32> factor[col .. col + 3] (quantised weights' per-column power
//                                    of two, ones for f32; col + 3 < n)
//
// A workgroup of WG_X × WG_Y invocations computes a block of BR = WG_Y·RM rows and
// BC = 4·WG_X·CN4 columns of `out` (the host uses 8 × 8 invocations of 8 rows × 16 columns, k
// in steps of 16: 12 KiB of workgroup memory; see TILED in crates/core/src/kernels/wgpu.rs). The block walks k in steps of DEPTH: the workgroup copies the x and
// W slices of the step into workgroup memory (W decoded there, once per 64 rows), transposed so
// that at each depth a vec4 holds four rows (x) or four columns (W), zero past m, n or k; then
// each invocation, per depth, loads RM / 4 vec4s of x and CN4 vec4s of W and does RM · CN4 vec4
// multiply-adds into its RM × CN4 accumulators: 128 multiply-adds per 6 workgroup loads, where
// the row-tile kernels (row_tile.wgsl) do 32 per nine global loads. Large per-invocation tiles
// are what software rasterisers want: they run invocations as SIMD lanes, so a load costs a
// gather whatever its width, and only arithmetic per load amortises it.
//
// n and k must be multiples of 4 (the host checks). Every storage binding is read_write:
// Burn sub-allocates tensors from shared buffers, so an input and the output may be two ranges
// of one buffer, and WebGPU forbids one buffer as read-only and writable in the same dispatch.

struct Info {
    m: u32,
    n: u32,
    k: u32,
    _pad: u32,
}

// From the host: WG_X, WG_Y (invocations per workgroup along columns and rows), RM (rows per
// invocation, a multiple of 4), CN4 (column quads per invocation), DEPTH (the k step, a
// multiple of 4).
const WG: u32 = WG_X * WG_Y;
const BR: u32 = WG_Y * RM;        // rows of the block
const BC: u32 = WG_X * CN4 * 4u;  // columns of the block
const D4: u32 = DEPTH / 4u;

// x_tile[kk * BR / 4 + r4][i] = x[row_block + 4·r4 + i, k0 + kk].
var<workgroup> x_tile: array<vec4<f32>, DEPTH * BR / 4u>;
// w_tile[kk * BC / 4 + c4][i] = W[col_block + 4·c4 + i, k0 + kk].
var<workgroup> w_tile: array<vec4<f32>, DEPTH * BC / 4u>;

/// x[row, 4·q .. 4·q + 3], zero past m or k.
fn x_at(row: u32, q: u32) -> vec4<f32> {
    let k4 = info.k / 4u;
    if (row < info.m && q < k4) {
        return x[row * k4 + q];
    }
    return vec4<f32>(0.0);
}

/// W[col, 4·q .. 4·q + 3] (before its factor), zero past n or k.
fn w_at(col: u32, q: u32) -> vec4<f32> {
    if (col < info.n && q < info.k / 4u) {
        return w_quad(col, q);
    }
    return vec4<f32>(0.0);
}

@compute @workgroup_size(WG, 1, 1)
fn main(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let tx = lid % WG_X;
    let ty = lid / WG_X;
    let row_block = workgroup.y * BR;
    let col_block = workgroup.x * BC;

    var acc: array<vec4<f32>, RM * CN4>;
    for (var i = 0u; i < RM * CN4; i = i + 1u) {
        acc[i] = vec4<f32>(0.0);
    }

    for (var k0 = 0u; k0 < info.k; k0 = k0 + DEPTH) {
        let q0 = k0 / 4u;
        for (var e = lid; e < BR * D4; e = e + WG) {
            let r = e / D4;
            let d = e % D4;
            let v = x_at(row_block + r, q0 + d);
            let at = 4u * d * (BR / 4u) + r / 4u;
            let lane = r % 4u;
            x_tile[at][lane] = v.x;
            x_tile[at + BR / 4u][lane] = v.y;
            x_tile[at + 2u * BR / 4u][lane] = v.z;
            x_tile[at + 3u * BR / 4u][lane] = v.w;
        }
        for (var e = lid; e < BC * D4; e = e + WG) {
            let c = e / D4;
            let d = e % D4;
            let v = w_at(col_block + c, q0 + d);
            let at = 4u * d * (BC / 4u) + c / 4u;
            let lane = c % 4u;
            w_tile[at][lane] = v.x;
            w_tile[at + BC / 4u][lane] = v.y;
            w_tile[at + 2u * BC / 4u][lane] = v.z;
            w_tile[at + 3u * BC / 4u][lane] = v.w;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < DEPTH; kk = kk + 1u) {
            var b: array<vec4<f32>, CN4>;
            for (var j = 0u; j < CN4; j = j + 1u) {
                b[j] = w_tile[kk * (BC / 4u) + tx * CN4 + j];
            }
            for (var i4 = 0u; i4 < RM / 4u; i4 = i4 + 1u) {
                let a = x_tile[kk * (BR / 4u) + ty * (RM / 4u) + i4];
                for (var j = 0u; j < CN4; j = j + 1u) {
                    let base = 4u * i4 * CN4 + j;
                    acc[base] = acc[base] + a.x * b[j];
                    acc[base + CN4] = acc[base + CN4] + a.y * b[j];
                    acc[base + 2u * CN4] = acc[base + 2u * CN4] + a.z * b[j];
                    acc[base + 3u * CN4] = acc[base + 3u * CN4] + a.w * b[j];
                }
            }
        }
        workgroupBarrier();
    }

    // n is a multiple of 4 (the host checks), so a column quad is all in or all out.
    let n4 = info.n / 4u;
    for (var j = 0u; j < CN4; j = j + 1u) {
        let q = col_block / 4u + tx * CN4 + j;
        if (q < n4) {
            let factors = column_factors(4u * q);
            for (var i = 0u; i < RM; i = i + 1u) {
                let row = row_block + ty * RM + i;
                if (row < info.m) {
                    out[row * n4 + q] = acc[i * CN4 + j] * factors;
                }
            }
        }
    }
}
