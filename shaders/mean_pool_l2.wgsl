// Masked mean pooling, optionally followed by L2 normalisation, in one pass.
//
//   pooled[b, d] = sum_t mask[b, t] · hidden[b, t, d] / sum_t mask[b, t]
//   out[b, :]    = pooled[b, :] / max(‖pooled[b, :]‖₂, 1e-12)      (when normalize != 0)
//
// hidden: [batch, seq, dim] f32, contiguous; mask: [batch, seq] i32 (1 = real token, 0 =
// padding; any other value weights the token, as the plain Burn op does); out: [batch, dim].
// One workgroup of 256 invocations per text: each owns dims lid, lid + 256, …, sums them
// over the sequence (reads are coalesced along dim), keeps the squared sum, and the
// workgroup reduces the squares in shared memory before rescaling its own outputs.
//
// Bindings (order fixed by the host): hidden, mask, out, info.
// Every storage binding is declared read_write although inputs are only read: Burn
// sub-allocates tensors from shared buffers, so an input and the output may be two ranges of
// one buffer, and WebGPU forbids one buffer as read-only and writable in the same dispatch.

struct Info {
    batch: u32,
    seq: u32,
    dim: u32,
    normalize: u32,
}

const WORKGROUP: u32 = 256u;

@group(0) @binding(0) var<storage, read_write> hidden: array<f32>;
@group(0) @binding(1) var<storage, read_write> mask: array<i32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> info: Info;

var<workgroup> squares: array<f32, 256>;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) workgroup: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let text = workgroup.x;
    let valid = text < info.batch;

    var count = 0.0;
    var square_sum = 0.0;
    if (valid) {
        for (var t = 0u; t < info.seq; t = t + 1u) {
            count = count + f32(mask[text * info.seq + t]);
        }
        for (var d = lid; d < info.dim; d = d + WORKGROUP) {
            var sum = 0.0;
            for (var t = 0u; t < info.seq; t = t + 1u) {
                let m = f32(mask[text * info.seq + t]);
                if (m != 0.0) {
                    sum = sum + hidden[(text * info.seq + t) * info.dim + d] * m;
                }
            }
            let mean = sum / count;
            out[text * info.dim + d] = mean;
            square_sum = square_sum + mean * mean;
        }
    }
    squares[lid] = square_sum;
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            squares[lid] = squares[lid] + squares[lid + stride];
        }
        workgroupBarrier();
    }
    if (valid && info.normalize != 0u) {
        let norm = max(sqrt(squares[0]), 1e-12);
        for (var d = lid; d < info.dim; d = d + WORKGROUP) {
            out[text * info.dim + d] = out[text * info.dim + d] / norm;
        }
    }
}
