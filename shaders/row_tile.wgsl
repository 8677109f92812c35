// The 8-row × 1-column tile shared by quantized_matmul.wgsl, q4k_matmul.wgsl and
// dense_matmul.wgsl (the host prepends this file to each). One invocation computes rows
// row0 .. row0 + 7 of one output column: the kernel loads or decodes four weights of that
// column as a vec4 and hands them to `accumulate`, which dots them with a vec4 load of each of
// the eight x rows. Two vec4 accumulators with constant lanes, no workgroup memory, no barrier,
// no dynamically indexed private array inside the loop — what keeps software rasterisers
// (SwiftShader, lavapipe) from spilling to memory.
//
// Uses the kernel's bindings `x` (array<vec4<f32>>, rows of k / 4 vec4s), `out` (array<f32>,
// [m, n] row-major) and `info` (WGSL resolves module-scope names in any order).

struct Info {
    m: u32,
    n: u32,
    k: u32,
    _pad: u32,
}

const TILE_M: u32 = 8u;
const TILE_N: u32 = 64u;

var<private> acc_a: vec4<f32>; // rows 0..3
var<private> acc_b: vec4<f32>; // rows 4..7
var<private> rows_a: vec4<u32>; // vec4 index of the start of rows 0..3 of x
var<private> rows_b: vec4<u32>; // rows 4..7

/// Point the tile at rows `tile · 8 ..` of x and zero its accumulators; returns the first
/// row. Rows past the end re-read the last row; their results are not written.
fn begin_rows(tile: u32) -> u32 {
    let k4 = info.k / 4u;
    let row0 = tile * TILE_M;
    let last = info.m - 1u;
    rows_a = min(vec4<u32>(row0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(last)) * k4;
    rows_b = min(vec4<u32>(row0) + vec4<u32>(4u, 5u, 6u, 7u), vec4<u32>(last)) * k4;
    acc_a = vec4<f32>(0.0);
    acc_b = vec4<f32>(0.0);
    return row0;
}

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

/// Write the tile's rows of column `col` (those below m).
fn store_rows(col: u32, row0: u32) {
    let out_rows = array<f32, 8>(acc_a.x, acc_a.y, acc_a.z, acc_a.w, acc_b.x, acc_b.y, acc_b.z, acc_b.w);
    for (var r = 0u; r < TILE_M; r = r + 1u) {
        let row = row0 + r;
        if (row < info.m) {
            out[row * info.n + col] = out_rows[r];
        }
    }
}
