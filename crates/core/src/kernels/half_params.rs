//! Block parameters on the device: q8 scales and q4 scale/min pairs as f16, two per 32-bit
//! word, times one power-of-two factor per matrix row — 0.5 (q8) or 1 (q4) bit per weight,
//! half of what f32 parameters take, so a q4 model needs 5 bits per weight of GPU memory.
//!
//! A pack stores each part's parameters as f16 times `2^e` of that part
//! ([`crate::quantization::scale_exponent`]). Each row here gets its own `2^e_r`, chosen so the
//! row's largest |parameter| / `2^e_r` lies in `[2^15, 2^16)`: the pack's f16 values are then
//! multiplied by `2^(e - e_r) >= 1`, which is exact — an f16 has 11 significant bits, so its
//! largest stays at most 65 504, and subnormals only move up.

use burn::prelude::*;
use burn::tensor::ElementConversion;
use half::f16;

/// Parameters re-encoded for the device.
pub(super) struct HalfParams {
    /// f16 bit patterns, two per word (even index in the low half), bit-cast to `i32`.
    pub words: Vec<i32>,
    /// `2^e_r` per row.
    pub row_scale: Vec<f32>,
}

/// Re-encode row-major `params` (`per_row` per row) as f16 halves placed at `index(row, j)`
/// (the device layout) with a power-of-two factor per row.
pub(super) fn encode(
    params: &[f32],
    rows: usize,
    per_row: usize,
    index: impl Fn(usize, usize) -> usize,
) -> HalfParams {
    let mut halves = vec![0u16; rows * per_row];
    let mut row_scale = Vec::with_capacity(rows);
    for r in 0..rows {
        let row = &params[r * per_row..(r + 1) * per_row];
        let absmax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let mut e = if absmax > 0.0 {
            absmax.log2().floor() as i32 - 15
        } else {
            0
        };
        // Only parameters that are not f16 values times a power of two can round up to f16's
        // infinity here; one binade more keeps them finite.
        if f16::from_f32(absmax * 2f32.powi(-e)).is_infinite() {
            e += 1;
        }
        let inverse = 2f32.powi(-e);
        for (j, &v) in row.iter().enumerate() {
            halves[index(r, j)] = f16::from_f32(v * inverse).to_bits();
        }
        row_scale.push(2f32.powi(e));
    }
    let words = halves
        .chunks(2)
        .map(|pair| {
            let hi = pair.get(1).copied().unwrap_or(0);
            (u32::from(pair[0]) | (u32::from(hi) << 16)) as i32
        })
        .collect();
    HalfParams { words, row_scale }
}

/// The first `count` f16 values of `words` (two per word, low half first) as f32, with plain
/// Burn integer ops: `(-1)^s · (mantissa + 1024 [normal]) · 2^(exponent - 25)` (subnormals
/// `mantissa · 2^-24`), the power of two gathered from an exact table. Infinities and NaNs
/// cannot occur: packs refuse non-finite parameters.
pub(super) fn decode<B: Backend>(words: Tensor<B, 1, Int>, count: usize) -> Tensor<B, 1> {
    let n = words.dims()[0];
    let device = words.device();
    let low = words.clone().bitwise_and_scalar(0xffff_i64.elem());
    let high = words
        .bitwise_right_shift_scalar(16_i64.elem())
        .bitwise_and_scalar(0xffff_i64.elem());
    let halves = Tensor::stack::<2>(vec![low, high], 1)
        .reshape([2 * n])
        .narrow(0, 0, count);
    let sign = halves.clone().bitwise_right_shift_scalar(15_i64.elem());
    let exponent = halves
        .clone()
        .bitwise_right_shift_scalar(10_i64.elem())
        .bitwise_and_scalar(31_i64.elem());
    let mantissa = halves.bitwise_and_scalar(1023_i64.elem());
    let implicit = exponent.clone().greater_elem(0).int().mul_scalar(1024);
    // 2^(e - 25) for e ≥ 1, 2^-24 for subnormals (e = 0).
    let powers: Vec<f32> = (0..32).map(|e: i32| 2f32.powi(e.max(1) - 25)).collect();
    let powers = Tensor::<B, 1>::from_data(TensorData::new(powers, [32]), &device);
    let magnitude = (mantissa + implicit).float() * powers.select(0, exponent);
    magnitude * sign.mul_scalar(-2).add_scalar(1).float()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    /// Pack-style parameters: f16 values times 2^e of their part, across the exponent range a
    /// pack allows, with zero rows, subnormal f16 values and both signs; decoded on the device
    /// they are the same numbers exactly.
    #[test]
    fn parameters_survive_encoding_exactly() {
        let per_row = 6;
        let mut params = Vec::new();
        for (r, e) in [-64i32, -20, -1, 0, 3, 40, 64, 0].into_iter().enumerate() {
            for j in 0..per_row {
                let h = match (r, j) {
                    (7, _) => 0.0, // an all-zero row
                    (_, 0) => 65504.0,
                    (_, 1) => -1.5,
                    (_, 2) => 6.1e-5, // just below f16's smallest normal: subnormal
                    (_, 3) => 0.0,
                    _ => (j as f32 * 0.37 - 1.0) * (r as f32 + 1.0),
                };
                let h = f16::from_f32(h).to_f32();
                params.push(h * 2f32.powi(e));
            }
        }
        let rows = params.len() / per_row;
        // The k-major placement used for matrices: parameter j of row r at j · rows + r.
        let encoded = encode(&params, rows, per_row, |r, j| j * rows + r);
        let n = encoded.words.len();
        let words = Tensor::<Flex, 1, Int>::from_data(
            TensorData::new(encoded.words, [n]),
            &Default::default(),
        );
        let halves = decode(words, rows * per_row)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        for r in 0..rows {
            for j in 0..per_row {
                let got = halves[j * rows + r] * encoded.row_scale[r];
                let want = params[r * per_row + j];
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "row {r} param {j}: {got} vs {want}"
                );
            }
        }
    }
}
