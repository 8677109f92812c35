// f32 matmul for the dense projections: the quantised kernel's schedule without the decoding.
//
//   out[m, n] = sum_k x[m, k] * W[n, k]          (x · Wᵀ)
//
// The host prepends `const K_MAJOR: bool = true;` or `false;`, the layout W is stored in:
//   false: W row-major [n, k] (HF's [out, in]; what a loaded `Linear` holds, as the transposed
//          view of it): invocation `col` reads its own row as vec4s, w[col · k/4 + c].
//   true:  Wᵀ row-major [k, n] (Burn's `Linear` layout when contiguous): the four values
//          k = 4c .. 4c + 3 of column `col` are w[(4c + i) · n + col]; neighbouring invocations
//          read neighbouring values.
//
// One invocation computes 8 rows of one output column, each weight vec4 loaded once and used
// 8 times, with two vec4 accumulators of constant lanes, no workgroup memory and no barrier
// (see quantized_matmul.wgsl). `k` must be a multiple of 4 (the host checks).
//
// Bindings (order fixed by the host): x, w, out, info. Every storage binding is read_write for
// the reason given in quantized_matmul.wgsl (Burn sub-allocates tensors from shared buffers).

struct Info {
    m: u32,
    n: u32,
    k: u32,
    _pad: u32,
}

const TILE_M: u32 = 8u;
const TILE_N: u32 = 64u;

@group(0) @binding(0) var<storage, read_write> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> info: Info;

var<private> acc_a: vec4<f32>; // rows 0..3
var<private> acc_b: vec4<f32>; // rows 4..7
var<private> rows_a: vec4<u32>; // vec4 index of the start of rows 0..3 of x
var<private> rows_b: vec4<u32>; // rows 4..7

/// Add x[row, 4c4 .. 4c4 + 4] · v to each of the eight rows' accumulators.
fn accumulate(c4: u32, v: vec4<f32>) {
    acc_a = acc_a + vec4<f32>(
        dot(x[rows_a.x + c4], v),
        dot(x[rows_a.y + c4], v),
        dot(x[rows_a.z + c4], v),
        dot(x[rows_a.w + c4], v),
    );
    acc_b = acc_b + vec4<f32>(
        dot(x[rows_b.x + c4], v),
        dot(x[rows_b.y + c4], v),
        dot(x[rows_b.z + c4], v),
        dot(x[rows_b.w + c4], v),
    );
}

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
    let k4 = info.k / 4u;
    let row0 = workgroup.y * TILE_M;
    // Rows past the end re-read the last row; their results are not written.
    let last = info.m - 1u;
    rows_a = min(vec4<u32>(row0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(last)) * k4;
    rows_b = min(vec4<u32>(row0) + vec4<u32>(4u, 5u, 6u, 7u), vec4<u32>(last)) * k4;
    acc_a = vec4<f32>(0.0);
    acc_b = vec4<f32>(0.0);

    for (var c = 0u; c < k4; c = c + 1u) {
        var v: vec4<f32>;
        if (K_MAJOR) {
            let i = 4u * c * n + col;
            v = vec4<f32>(w[i], w[i + n], w[i + 2u * n], w[i + 3u * n]);
        } else {
            let i = 4u * (col * k4 + c);
            v = vec4<f32>(w[i], w[i + 1u], w[i + 2u], w[i + 3u]);
        }
        accumulate(c, v);
    }

    let out_rows = array<f32, 8>(acc_a.x, acc_a.y, acc_a.z, acc_a.w, acc_b.x, acc_b.y, acc_b.z, acc_b.w);
    for (var r = 0u; r < TILE_M; r = r + 1u) {
        let row = row0 + r;
        if (row < info.m) {
            out[row * n + col] = out_rows[r];
        }
    }
}
