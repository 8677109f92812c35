// Decoding packed values, shared by the quantised matmul kernels (the host prepends this file
// to quantized_matmul.wgsl, q4k_matmul.wgsl, and to tiled_matmul.wgsl's block_weights.wgsl and
// q4k_weights.wgsl): eight 4-bit values per u32 word, low nibble first; four signed bytes.

/// Nibbles `first .. first + 4` of a word, as floats.
fn nibbles_of(word: u32, first: u32) -> vec4<f32> {
    let s = first * 4u;
    return vec4<f32>(vec4<u32>(
        extractBits(word, s, 4u),
        extractBits(word, s + 4u, 4u),
        extractBits(word, s + 8u, 4u),
        extractBits(word, s + 12u, 4u),
    ));
}

/// The four signed bytes of a q8 word, in order.
fn bytes_of(word: u32) -> vec4<f32> {
    let v = bitcast<i32>(word);
    return vec4<f32>(vec4<i32>(
        extractBits(v, 0u, 8u),
        extractBits(v, 8u, 8u),
        extractBits(v, 16u, 8u),
        extractBits(v, 24u, 8u),
    ));
}
