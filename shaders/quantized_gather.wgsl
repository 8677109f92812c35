// Gather + dequantise rows of a block-quantised table (the token embedding kept q8 / q4 on the
// device; qzhou blocks of 32 values, the pack's row-major layout).
//
//   out[t, c] = W[ids[t] - start, c]   where start <= ids[t] < start + rows, else 0
//   q8: W[r, c] = (q · scale) · row_scale[r]          q ∈ [-127, 127], four i8 per u32 word
//   q4: W[r, c] = (min + q · scale) · row_scale[r]    q ∈ [0, 15], eight nibbles per word, low first
//
// The host prepends `const BITS: u32 = 8u;` or `4u;`. Word `w` of row `r` is
// words[r · row_words + w] (row_words = cols · BITS / 32); the f16 parameters of block `b` of
// row `r` are half r · blocks + b of params (q8 scale; two halves per u32, low first) or word
// r · blocks + b (q4 scale, min); row_scale is a power of two per row. A table bigger than one buffer is split by rows; each part writes zeros for the ids it
// does not hold and the host sums the parts.
//
// One invocation decodes one word (4 or 8 values) of one token's row: x = word index, y (with
// a stride of the grid's height, which WebGPU caps at 65 535) = token. Neighbouring
// invocations read neighbouring words of one row and write neighbouring outputs.
//
// Bindings (order fixed by the host): ids, words, params, row_scale, out, info. Storage bindings are
// read_write for the reason given in quantized_matmul.wgsl (Burn shares buffers).

struct Info {
    tokens: u32,
    cols: u32,
    start: u32,
    rows: u32,
}

const BLOCK: u32 = 32u;
// Values per word.
const PER_WORD: u32 = 32u / BITS;

@group(0) @binding(0) var<storage, read_write> ids: array<i32>;
@group(0) @binding(1) var<storage, read_write> words: array<u32>;
@group(0) @binding(2) var<storage, read_write> params: array<u32>;
@group(0) @binding(3) var<storage, read_write> row_scale: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<uniform> info: Info;

@compute @workgroup_size(64, 1, 1)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    let row_words = info.cols * BITS / 32u;
    let w = gid.x;
    if (w >= row_words) {
        return;
    }
    let blocks = info.cols / BLOCK;
    let block = w * PER_WORD / BLOCK;
    for (var t = gid.y; t < info.tokens; t = t + groups.y) {
        let base = t * info.cols + w * PER_WORD;
        let local = ids[t] - i32(info.start);
        if (local < 0 || local >= i32(info.rows)) {
            for (var j = 0u; j < PER_WORD; j = j + 1u) {
                out[base + j] = 0.0;
            }
            continue;
        }
        let r = u32(local);
        let word = words[r * row_words + w];
        let factor = row_scale[r];
        if (BITS == 8u) {
            let half = r * blocks + block;
            let scale = unpack2x16float(params[half >> 1u])[half & 1u];
            let v = bitcast<i32>(word);
            for (var j = 0u; j < 4u; j = j + 1u) {
                out[base + j] = (f32(extractBits(v, 8u * j, 8u)) * scale) * factor;
            }
        } else {
            let pair = unpack2x16float(params[r * blocks + block]);
            for (var j = 0u; j < 8u; j = j + 1u) {
                out[base + j] = (f32(extractBits(word, 4u * j, 4u)) * pair.x + pair.y) * factor;
            }
        }
    }
}
