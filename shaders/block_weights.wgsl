// q8 / q4 weights (blocks of 32 values) for tiled_matmul.wgsl; the host prepends
// `const BITS: u32 = 8u;` or `4u;` and nibbles.wgsl. The device layout and the decoding are
// quantized_matmul.wgsl's:
//   q8: W[n, k] = (q · scale) · row_scale[n]           four i8 per u32 word
//   q4: W[n, k] = (min + q · scale) · row_scale[n]     eight nibbles per word, low first
// word `w` of block `b` of column `col` is words[(b · WORDS + w) · n + col]; the f16 scale (q8)
// is half b · n + col of params, the f16 (scale, min) pair (q4) word b · n + col.
//
// Bindings (order fixed by the host): x, words, params, row_scale, out, info.

@group(0) @binding(0) var<storage, read_write> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> words: array<u32>;
@group(0) @binding(2) var<storage, read_write> params: array<u32>;
@group(0) @binding(3) var<storage, read_write> row_scale: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(5) var<uniform> info: Info;

// Words per block of 32 values: 32 × BITS bits / 32 bits.
const WORDS: u32 = BITS;

/// W[col, 4q .. 4q + 3] before row_scale.
fn w_quad(col: u32, q: u32) -> vec4<f32> {
    let n = info.n;
    let b = q / 8u; // eight quads per block
    let j = q % 8u;
    if (BITS == 8u) {
        let half = b * n + col;
        let scale = unpack2x16float(params[half >> 1u])[half & 1u];
        return bytes_of(words[(b * WORDS + j) * n + col]) * scale;
    }
    let pair = unpack2x16float(params[b * n + col]);
    let word = words[(b * WORDS + j / 2u) * n + col];
    return nibbles_of(word, 4u * (j % 2u)) * pair.x + pair.y;
}

/// row_scale[col .. col + 3].
fn column_factors(col: u32) -> vec4<f32> {
    return vec4<f32>(row_scale[col], row_scale[col + 1u], row_scale[col + 2u], row_scale[col + 3u]);
}
