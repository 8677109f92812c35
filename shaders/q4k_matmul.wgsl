// Fused dequantise + matmul for q4k weights (super-blocks of 128 values with an f16 pair
// (d, dmin), each cut into 8 sub-blocks of 16 values with an 8-bit scale code sc and min code
// mc; see crates/core/src/quantization.rs):
//
//   out[m, n] = sum_k x[m, k] * W[n, k]                              (x · Wᵀ, W in HF [out, in] layout)
//   W[n, k]   = (q · (d · sc) − dmin · mc) · row_scale[n]            q ∈ [0, 15], eight nibbles per word, low first
//
// The row-tile schedule: the host runs tiled_matmul.wgsl (with the same decoding) where n is a
// multiple of 4, 2.2–2.5× faster on lavapipe, and this kernel for the other shapes.
//
// Device layout, k-major like quantized_matmul.wgsl's (consecutive output columns read
// consecutive words): word `w` (0 .. k / 8) of output column `col` is words[w · n + col], so
// super-block `b` holds words b · 16 .. b · 16 + 15 and sub-block `s` of it words b · 16 + 2s and
// + 1; (d, dmin) of super-block b is the f16 pair params[b · n + col] (d low); its code word `c`
// (0 .. 3) is codes[(b · 4 + c) · n + col], holding sub-blocks 2c and 2c + 1 as bytes sc, mc, sc,
// mc (low byte first). row_scale is a power of two per output column, applied once to the
// finished dot product (exact).
//
// The host prepends nibbles.wgsl (`nibbles_of`) and row_tile.wgsl: one invocation computes 8
// rows of one output column, decoding each weight once. Bindings (order fixed by the host): x,
// words, params, row_scale, codes, out, info; `k` must be a multiple of 128 (the host checks).
// Storage bindings are read_write for the reason given in quantized_matmul.wgsl (Burn shares
// buffers).

@group(0) @binding(0) var<storage, read_write> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> words: array<u32>;
@group(0) @binding(2) var<storage, read_write> params: array<u32>;
@group(0) @binding(3) var<storage, read_write> row_scale: array<f32>;
@group(0) @binding(4) var<storage, read_write> codes: array<u32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<uniform> info: Info;

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

    let supers = info.k / 128u;
    for (var b = 0u; b < supers; b = b + 1u) {
        let units = unpack2x16float(params[b * n + col]);
        for (var c = 0u; c < 4u; c = c + 1u) {
            let code = codes[(b * 4u + c) * n + col];
            for (var h = 0u; h < 2u; h = h + 1u) {
                let sub = 2u * c + h;
                let scale = units.x * f32(extractBits(code, 16u * h, 8u));
                let offset = -(units.y * f32(extractBits(code, 16u * h + 8u, 8u)));
                // Sub-block `sub` starts at value b · 128 + sub · 16 = vec4 (b · 32 + sub · 4).
                let c4 = b * 32u + sub * 4u;
                let w0 = words[(b * 16u + 2u * sub) * n + col];
                let w1 = words[(b * 16u + 2u * sub + 1u) * n + col];
                accumulate(c4, nibbles_of(w0, 0u) * scale + offset);
                accumulate(c4 + 1u, nibbles_of(w0, 4u) * scale + offset);
                accumulate(c4 + 2u, nibbles_of(w1, 0u) * scale + offset);
                accumulate(c4 + 3u, nibbles_of(w1, 4u) * scale + offset);
            }
        }
    }

    let factor = row_scale[col];
    acc_a = acc_a * factor;
    acc_b = acc_b * factor;
    store_rows(col, row0);
}
