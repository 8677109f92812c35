// f32 weights for tiled_matmul.wgsl (the host prepends this file to it). The host also prepends
// `const K_MAJOR: bool = true;` or `false;`, the layout W is stored in: false, W row-major
// [n, k] (HF's [out, in]; what a loaded `Linear` holds, as the transposed view of it); true,
// Wᵀ row-major [k, n] (Burn's `Linear` layout when contiguous).
//
// Bindings (order fixed by the host): x, w, out, info.

@group(0) @binding(0) var<storage, read_write> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> info: Info;

/// W[col, 4q .. 4q + 3].
fn w_quad(col: u32, q: u32) -> vec4<f32> {
    if (K_MAJOR) {
        let n = info.n;
        let i = 4u * q * n + col;
        return vec4<f32>(w[i], w[i + n], w[i + 2u * n], w[i + 3u * n]);
    }
    let i = col * info.k + 4u * q;
    return vec4<f32>(w[i], w[i + 1u], w[i + 2u], w[i + 3u]);
}

/// f32 weights have no per-column factor.
fn column_factors(col: u32) -> vec4<f32> {
    return vec4<f32>(1.0);
}
