// Decoding 4-bit values, shared by quantized_matmul.wgsl (q4) and q4k_matmul.wgsl (the host
// prepends this file to each): eight nibbles per u32 word, low nibble first.

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
