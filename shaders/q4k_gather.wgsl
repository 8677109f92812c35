// Gather + dequantise rows of a q4k table (the token embedding kept q4k on the device; the
// pack's row-major layout, see crates/core/src/quantization.rs). Each row is cut into
// super-blocks of 128 values with an f16 pair (d, dmin), each cut into 8 sub-blocks of 16 values
// with an 8-bit scale code sc and min code mc:
//
//   out[t, c] = W[ids[t] - start, c]   where start <= ids[t] < start + rows, else 0
//   W[r, c]   = q · (d · sc) − dmin · mc   q ∈ [0, 15], eight nibbles per word, low first
//
// Word `w` of row `r` is words[r · row_words + w] (row_words = cols / 8); (d, dmin) of its
// super-block w / 16 is word r · supers + w / 16 of params (two f16, d low) times row_scale[r], a
// power of two per row; the codes of its sub-block s = w / 2 are bytes 2 (s mod 2) (sc) and
// 2 (s mod 2) + 1 (mc) of word r · (cols / 32) + s / 2 of codes. A table bigger than one buffer
// is split by rows; each part writes zeros for the ids it does not hold and the host sums the
// parts.
//
// One invocation decodes one word (8 values) of one token's row: x = word index, y (with a
// stride of the grid's height, which WebGPU caps at 65 535) = token.
//
// Bindings (order fixed by the host): ids, words, params, row_scale, codes, out, info. Storage
// bindings are read_write for the reason given in quantized_matmul.wgsl (Burn shares buffers).

struct Info {
    tokens: u32,
    cols: u32,
    start: u32,
    rows: u32,
}

@group(0) @binding(0) var<storage, read_write> ids: array<i32>;
@group(0) @binding(1) var<storage, read_write> words: array<u32>;
@group(0) @binding(2) var<storage, read_write> params: array<u32>;
@group(0) @binding(3) var<storage, read_write> row_scale: array<f32>;
@group(0) @binding(4) var<storage, read_write> codes: array<u32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<uniform> info: Info;

@compute @workgroup_size(64, 1, 1)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let row_words = info.cols / 8u;
    let w = gid.x;
    if (w >= row_words) {
        return;
    }
    let supers = info.cols / 128u;
    let code_words = info.cols / 32u;
    let sub = w / 2u;
    let shift = 16u * (sub & 1u);
    for (var t = gid.y; t < info.tokens; t = t + groups.y) {
        let base = t * info.cols + w * 8u;
        let local = ids[t] - i32(info.start);
        if (local < 0 || local >= i32(info.rows)) {
            for (var j = 0u; j < 8u; j = j + 1u) {
                out[base + j] = 0.0;
            }
            continue;
        }
        let r = u32(local);
        let word = words[r * row_words + w];
        let d = unpack2x16float(params[r * supers + w / 16u]) * row_scale[r];
        let code = codes[r * code_words + sub / 2u];
        let scale = d.x * f32(extractBits(code, shift, 8u));
        let min = -(d.y * f32(extractBits(code, shift + 8u, 8u)));
        for (var j = 0u; j < 8u; j = j + 1u) {
            out[base + j] = f32(extractBits(word, 4u * j, 4u)) * scale + min;
        }
    }
}
