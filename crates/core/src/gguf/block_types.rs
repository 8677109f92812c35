//! GGML tensor types and their dequantisation to `f32`.
//!
//! Each quantised type stores a row as consecutive blocks of `block_len` values in
//! `block_bytes` bytes. The formulas are llama.cpp's (`ggml-quants.c`, `dequantize_row_*`);
//! the unit tests compare them with the `gguf` Python package's numpy dequantisers.

use half::{bf16, f16};

/// A GGML tensor type as numbered in the GGUF file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)] // llama.cpp's names: Q4_K is not Q4K
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// bfloat16.
    BF16,
    /// 32 values: f16 scale, 4-bit values offset by 8.
    Q4_0,
    /// 32 values: f16 scale and minimum, 4-bit values.
    Q4_1,
    /// 32 values: f16 scale, 5-bit values (high bits packed apart) offset by 16.
    Q5_0,
    /// 32 values: f16 scale and minimum, 5-bit values.
    Q5_1,
    /// 32 values: f16 scale, signed 8-bit values.
    Q8_0,
    /// 256-value super-block: 8 sub-blocks of 32 with 6-bit scales and minimums, 4-bit values.
    Q4_K,
    /// 256-value super-block: like Q4_K with a fifth bit per value.
    Q5_K,
    /// 256-value super-block: 16 sub-blocks of 16 with signed 8-bit scales, 6-bit values.
    Q6_K,
}

impl GgmlType {
    /// The type with GGUF id `id`, or the name of a known type this reader cannot dequantise
    /// (`Err(name)`; `"type N"` when the id is unknown).
    pub fn from_id(id: u32) -> std::result::Result<Self, String> {
        Ok(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            12 => Self::Q4_K,
            13 => Self::Q5_K,
            14 => Self::Q6_K,
            30 => Self::BF16,
            other => {
                let name = match other {
                    4 | 5 => "Q4_2/Q4_3 (removed from ggml)",
                    9 => "Q8_1",
                    10 => "Q2_K",
                    11 => "Q3_K",
                    15 => "Q8_K",
                    16 => "IQ2_XXS",
                    17 => "IQ2_XS",
                    18 => "IQ3_XXS",
                    19 => "IQ1_S",
                    20 => "IQ4_NL",
                    21 => "IQ3_S",
                    22 => "IQ2_S",
                    23 => "IQ4_XS",
                    24 => "I8",
                    25 => "I16",
                    26 => "I32",
                    27 => "I64",
                    28 => "F64",
                    29 => "IQ1_M",
                    34 => "TQ1_0",
                    35 => "TQ2_0",
                    39 => "MXFP4",
                    _ => return Err(format!("type {other}")),
                };
                return Err(name.to_string());
            }
        })
    }

    /// Name as llama.cpp prints it.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q8_0 => "Q8_0",
            Self::Q4_K => "Q4_K",
            Self::Q5_K => "Q5_K",
            Self::Q6_K => "Q6_K",
        }
    }

    /// Values per block (1 for the float types).
    pub fn block_len(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 => 32,
            Self::Q4_K | Self::Q5_K | Self::Q6_K => 256,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q4_K => 144,
            Self::Q5_K => 176,
            Self::Q6_K => 210,
        }
    }

    /// Bytes that `n` values occupy, or `None` when `n` is not a whole number of blocks (or the
    /// size overflows).
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        let block_len = self.block_len() as u64;
        if n % block_len != 0 {
            return None;
        }
        (n / block_len).checked_mul(self.block_bytes() as u64)
    }

    /// Dequantise `bytes` (whole blocks) into `out`, which must hold
    /// `bytes.len() / block_bytes * block_len` values.
    ///
    /// # Panics
    /// When the lengths disagree (callers size both from [`GgmlType::bytes_for`]).
    pub fn dequantize(self, bytes: &[u8], out: &mut [f32]) {
        let (bb, bl) = (self.block_bytes(), self.block_len());
        assert!(
            bytes.len() % bb == 0 && bytes.len() / bb * bl == out.len(),
            "dequantize: {} bytes of {} do not hold {} values",
            bytes.len(),
            self.name(),
            out.len()
        );
        let blocks = bytes.chunks_exact(bb).zip(out.chunks_exact_mut(bl));
        match self {
            Self::F32 => {
                blocks.for_each(|(b, y)| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            Self::F16 => blocks.for_each(|(b, y)| y[0] = half16(b, 0)),
            Self::BF16 => {
                blocks.for_each(|(b, y)| y[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32())
            }
            Self::Q4_0 => blocks.for_each(|(b, y)| q4_0(b, y)),
            Self::Q4_1 => blocks.for_each(|(b, y)| q4_1(b, y)),
            Self::Q5_0 => blocks.for_each(|(b, y)| q5_0(b, y)),
            Self::Q5_1 => blocks.for_each(|(b, y)| q5_1(b, y)),
            Self::Q8_0 => blocks.for_each(|(b, y)| q8_0(b, y)),
            Self::Q4_K => blocks.for_each(|(b, y)| q4_k(b, y)),
            Self::Q5_K => blocks.for_each(|(b, y)| q5_k(b, y)),
            Self::Q6_K => blocks.for_each(|(b, y)| q6_k(b, y)),
        }
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The little-endian f16 at `b[at..at + 2]` as f32.
fn half16(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// `d`, then 16 bytes: value j is `(low nibble of byte j) - 8`, value j + 16 the high nibble.
fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = half16(b, 0);
    for (j, &q) in b[2..18].iter().enumerate() {
        y[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
        y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
    }
}

/// `d`, `m`, then nibbles as Q4_0 without the offset: `q·d + m`.
fn q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (half16(b, 0), half16(b, 2));
    for (j, &q) in b[4..20].iter().enumerate() {
        y[j] = (q & 0x0F) as f32 * d + m;
        y[j + 16] = (q >> 4) as f32 * d + m;
    }
}

/// `d`, a 32-bit little-endian word of fifth bits (bit j for value j), nibbles as Q4_0;
/// values offset by 16.
fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = half16(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    for (j, &q) in b[6..22].iter().enumerate() {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = (((q & 0x0F) as u32 | h0) as i32 - 16) as f32 * d;
        y[j + 16] = (((q >> 4) as u32 | h1) as i32 - 16) as f32 * d;
    }
}

/// `d`, `m`, fifth bits, nibbles: `q·d + m`.
fn q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (half16(b, 0), half16(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    for (j, &q) in b[8..24].iter().enumerate() {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = ((q & 0x0F) as u32 | h0) as f32 * d + m;
        y[j + 16] = ((q >> 4) as u32 | h1) as f32 * d + m;
    }
}

/// `d`, then 32 signed bytes.
fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = half16(b, 0);
    for (j, &q) in b[2..34].iter().enumerate() {
        y[j] = q as i8 as f32 * d;
    }
}

/// The 6-bit scale and minimum of sub-block `j` (0..8) from the 12 packed bytes of a K block.
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    if j < 4 {
        ((q[j] & 63) as f32, (q[j + 4] & 63) as f32)
    } else {
        (
            ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4)) as f32,
            ((q[j + 4] >> 4) | ((q[j] >> 6) << 4)) as f32,
        )
    }
}

/// `d`, `dmin`, 12 bytes of scales/minimums, 128 bytes of nibbles; each 64 values use two
/// sub-blocks: the low nibbles of 32 bytes, then their high nibbles.
fn q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (half16(b, 0), half16(b, 2));
    let scales = &b[4..16];
    let qs = &b[16..144];
    for chunk in 0..4 {
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, m1, d2, m2) = (d * sc1, dmin * m1, d * sc2, dmin * m2);
        let q = &qs[32 * chunk..32 * chunk + 32];
        let y = &mut y[64 * chunk..64 * chunk + 64];
        for l in 0..32 {
            y[l] = d1 * (q[l] & 0x0F) as f32 - m1;
            y[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

/// Q4_K plus 32 bytes of fifth bits (two bits per byte per 64-value chunk).
fn q5_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (half16(b, 0), half16(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for chunk in 0..4 {
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, m1, d2, m2) = (d * sc1, dmin * m1, d * sc2, dmin * m2);
        let (u1, u2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
        let q = &qs[32 * chunk..32 * chunk + 32];
        let y = &mut y[64 * chunk..64 * chunk + 64];
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16.0 } else { 0.0 };
            let h2 = if qh[l] & u2 != 0 { 16.0 } else { 0.0 };
            y[l] = d1 * ((q[l] & 0x0F) as f32 + h1) - m1;
            y[l + 32] = d2 * ((q[l] >> 4) as f32 + h2) - m2;
        }
    }
}

/// 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 signed scales, then `d`;
/// values offset by 32.
fn q6_k(b: &[u8], y: &mut [f32]) {
    let d = half16(b, 208);
    for half_block in 0..2 {
        let ql = &b[64 * half_block..64 * half_block + 64];
        let qh = &b[128 + 32 * half_block..128 + 32 * half_block + 32];
        let sc = &b[192 + 8 * half_block..192 + 8 * half_block + 8];
        let y = &mut y[128 * half_block..128 * half_block + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * (sc[is] as i8 as f32) * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8 as f32) * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8 as f32) * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8 as f32) * q4 as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks of each type with the values the `gguf` Python package dequantises them to
    /// (`scripts/gguf_block_fixtures.py`).
    const FIXTURE: &str = include_str!("../../../../tests/fixtures/gguf_blocks.json");

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn every_type_matches_the_gguf_package() {
        let fixture: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
        let types = [
            (GgmlType::F32, 0),
            (GgmlType::F16, 1),
            (GgmlType::Q4_0, 2),
            (GgmlType::Q4_1, 3),
            (GgmlType::Q5_0, 6),
            (GgmlType::Q5_1, 7),
            (GgmlType::Q8_0, 8),
            (GgmlType::Q4_K, 12),
            (GgmlType::Q5_K, 13),
            (GgmlType::Q6_K, 14),
            (GgmlType::BF16, 30),
        ];
        for (ty, id) in types {
            assert_eq!(GgmlType::from_id(id), Ok(ty));
            let case = &fixture[ty.name()];
            let bytes = hex(case["hex"].as_str().unwrap());
            let expected: Vec<f32> = case["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(
                ty.bytes_for(expected.len() as u64),
                Some(bytes.len() as u64),
                "{ty}"
            );
            let mut got = vec![f32::NAN; expected.len()];
            ty.dequantize(&bytes, &mut got);
            let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                // Same f32 formulas; numpy may associate a product differently (1 ulp).
                assert!(
                    (g - e).abs() <= 1e-6 * scale,
                    "{ty} value {i}: {g} vs gguf {e}"
                );
            }
        }
    }

    #[test]
    fn unreadable_types_are_named() {
        assert_eq!(GgmlType::from_id(10), Err("Q2_K".to_string()));
        assert_eq!(GgmlType::from_id(23), Err("IQ4_XS".to_string()));
        assert_eq!(GgmlType::from_id(999), Err("type 999".to_string()));
        assert_eq!(GgmlType::Q4_K.bytes_for(100), None);
        assert_eq!(GgmlType::Q8_0.bytes_for(64), Some(68));
    }
}
