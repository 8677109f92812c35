// q4k weights (super-blocks of 128 values, 8 sub-blocks of 16) for tiled_matmul.wgsl; the host
// prepends nibbles.wgsl. The device layout and the decoding are q4k_matmul.wgsl's:
//   W[n, k] = (q · (d · sc) − dmin · mc) · row_scale[n]
// word `w` (0 .. k / 8) of column `col` is words[w · n + col]; (d, dmin) of super-block b the f16
// pair params[b · n + col]; its code word `c` (0 .. 3) codes[(b · 4 + c) · n + col], bytes sc,
// mc of sub-blocks 2c and 2c + 1.
//
// Bindings (order fixed by the host): x, words, params, row_scale, codes, out, info.

@group(0) @binding(0) var<storage, read_write> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> words: array<u32>;
@group(0) @binding(2) var<storage, read_write> params: array<u32>;
@group(0) @binding(3) var<storage, read_write> row_scale: array<f32>;
@group(0) @binding(4) var<storage, read_write> codes: array<u32>;
@group(0) @binding(5) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(6) var<uniform> info: Info;

/// W[col, 4q .. 4q + 3] before row_scale.
fn w_quad(col: u32, q: u32) -> vec4<f32> {
    let n = info.n;
    let b = q / 32u; // 32 quads per super-block
    let sub = (q % 32u) / 4u;
    let h = sub % 2u;
    let units = unpack2x16float(params[b * n + col]);
    let code = codes[(b * 4u + sub / 2u) * n + col];
    let scale = units.x * f32(extractBits(code, 16u * h, 8u));
    let offset = -(units.y * f32(extractBits(code, 16u * h + 8u, 8u)));
    // Two words per sub-block, two quads per word.
    let word = words[(b * 16u + 2u * sub + (q % 4u) / 2u) * n + col];
    return nibbles_of(word, 4u * (q % 2u)) * scale + offset;
}

/// row_scale[col .. col + 3].
fn column_factors(col: u32) -> vec4<f32> {
    return vec4<f32>(row_scale[col], row_scale[col + 1u], row_scale[col + 2u], row_scale[col + 3u]);
}
