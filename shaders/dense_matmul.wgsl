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
// One invocation computes 8 rows of one output column (the tile of row_tile.wgsl, which the
// host prepends), each weight vec4 loaded once and used 8 times. `k` must be a multiple of 4
// (the host checks).
//
// Bindings (order fixed by the host): x, w, out, info. Every storage binding is read_write for
// the reason given in quantized_matmul.wgsl (Burn sub-allocates tensors from shared buffers).

@group(0) @binding(0) var<storage, read_write> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> info: Info;

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
    let row0 = begin_rows(workgroup.y);

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

    store_rows(col, row0);
}
