// Fused dequantise + matmul for block-quantised weights (qzhou q8 / q4, block = 32 values).
//
//   out[m, n] = sum_k x[m, k] * W[n, k]          (x · Wᵀ, W in HF [out, in] layout)
//   q8: W[n, k] = q · scale           q ∈ [-127, 127], four i8 per u32 word
//   q4: W[n, k] = min + q · scale     q ∈ [0, 15], eight nibbles per u32 word, low first
//
// The host prepends `const BITS: u32 = 8u;` or `4u;` (the only template parameter), so one
// source serves both schemes and the branch on BITS folds away at pipeline creation.
//
// Tiling: a workgroup of 64 invocations computes a tile of TILE_M = 8 rows of `x` by 64
// output columns (one column per invocation, eight accumulators each). Per 32-wide block of
// k, the 8 × 32 slice of `x` is staged in workgroup memory, then every invocation decodes
// its column's block once (8 or 4 words + scale[/min]) and feeds each decoded weight to all
// eight rows: 256 multiply-adds per 32 decodes, and the weights never exist in f32 in memory.
//
// Bindings (order fixed by the host): x, words, params, out, info.
// Every storage binding is declared read_write although inputs are only read: Burn
// sub-allocates tensors from shared buffers, so an input and the output may be two ranges of
// one buffer, and WebGPU forbids one buffer as read-only and writable in the same dispatch. Buffers are read with
// explicit bounds checks; `k` must be a multiple of 32 (the host checks).

struct Info {
    m: u32,
    n: u32,
    k: u32,
    _pad: u32,
}

const TILE_M: u32 = 8u;
const TILE_N: u32 = 64u;
const BLOCK: u32 = 32u;
// Words per block: 32 values × BITS bits / 32 bits.
const WORDS: u32 = BITS;
const VALUES_PER_WORD: u32 = 32u / BITS;

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> words: array<u32>;
@group(0) @binding(2) var<storage, read_write> params: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> info: Info;

var<workgroup> x_tile: array<f32, 256>; // TILE_M × BLOCK

@compute @workgroup_size(64, 1, 1)
fn main(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let col = workgroup.x * TILE_N + lid;
    let row0 = workgroup.y * TILE_M;
    let blocks = info.k / BLOCK;
    var acc: array<f32, 8>;

    for (var b = 0u; b < blocks; b = b + 1u) {
        // Stage x[row0 .. row0 + 8, 32b .. 32b + 32]: 256 values, four per invocation.
        for (var i = 0u; i < 4u; i = i + 1u) {
            let idx = lid + i * 64u;
            let row = row0 + idx / BLOCK;
            var v = 0.0;
            if (row < info.m) {
                v = x[row * info.k + b * BLOCK + idx % BLOCK];
            }
            x_tile[idx] = v;
        }
        workgroupBarrier();

        if (col < info.n) {
            let block = col * blocks + b;
            var scale: f32;
            var offset = 0.0;
            if (BITS == 8u) {
                scale = params[block];
            } else {
                scale = params[2u * block];
                offset = params[2u * block + 1u];
            }
            for (var w = 0u; w < WORDS; w = w + 1u) {
                let word = words[block * WORDS + w];
                for (var j = 0u; j < VALUES_PER_WORD; j = j + 1u) {
                    var q: f32;
                    if (BITS == 8u) {
                        q = f32(extractBits(bitcast<i32>(word), j * 8u, 8u)); // sign-extends
                    } else {
                        q = f32(extractBits(word, j * 4u, 4u));
                    }
                    let weight = q * scale + offset;
                    let c = w * VALUES_PER_WORD + j;
                    for (var r = 0u; r < TILE_M; r = r + 1u) {
                        acc[r] = acc[r] + x_tile[r * BLOCK + c] * weight;
                    }
                }
            }
        }
        workgroupBarrier();
    }

    if (col < info.n) {
        for (var r = 0u; r < TILE_M; r = r + 1u) {
            let row = row0 + r;
            if (row < info.m) {
                out[row * info.n + col] = acc[r];
            }
        }
    }
}
