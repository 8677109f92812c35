//! A token-embedding table kept block-quantised (q8/q4/q4k) on the device: a lookup gathers
//! the rows of the requested ids and dequantises only those
//! ([`KernelBackend::quantized_gather`]), so Qwen2.5-7B's `151 936 × 3 584` table takes
//! 0.34 GB of GPU memory at q4 (0.37 GB at q4k) instead of 2.2 GB as f32.
//!
//! [`KernelBackend::quantized_gather`]: super::KernelBackend::quantized_gather

use burn::prelude::*;

use super::{block_bits, code_bytes, half_params, params_per_block, unpack_words};
use crate::error::Result;
use crate::quantization::{PackedBlocks, Quantization, BLOCK_SIZE, Q4K_SUB_BLOCK, Q4K_SUPER_BLOCK};

/// Rows `start .. start + rows` of a `[vocab, cols]` table, block-quantised **row-major**, as
/// the pack stores them: word `w` of row `r` is `words[r · row_words + w]` (`row_words =
/// cols · bits / 32`) and the parameters of its block `b` are f16 value `r · blocks + b` (q8
/// scale) or `2 (r · blocks + b) + {0, 1}` (q4 scale, min) of `params`, two per word, times
/// `row_scale[r]` (see `half_params.rs`), `blocks = cols / 32`. q4k: the parameters are one
/// `(d, dmin)` pair per 128 values (f16 `2 (r · supers + b) + {0, 1}`) and `codes` holds each
/// 16-value sub-block's scale and min codes, `cols / 32` words per row (layout of
/// [`PackedBlocks::codes`]). A lookup reads one row's words contiguously. `words`, `params`
/// and `codes` hold `u32` words bit-cast to the backend's int type.
#[derive(Module, Debug)]
pub struct QuantizedRows<B: Backend> {
    /// Quantised values, one 32-bit word per 4 (q8) or 8 (q4) of them, row-major.
    pub words: Tensor<B, 1, Int>,
    /// Per-block scales (q8) or scale/min pairs (q4) as f16, two per word, row-major.
    pub params: Tensor<B, 1, Int>,
    /// The power of two each row's parameters are multiplied by, `[rows]`.
    pub row_scale: Tensor<B, 1>,
    /// q4k: sub-block scale/min codes, four bytes per word, row-major; one unused word for q8/q4.
    pub codes: Tensor<B, 1, Int>,
    /// Vocabulary index of the first row held.
    pub start: usize,
    /// Rows held.
    pub rows: usize,
    /// Values per row (the hidden size), a multiple of 32.
    pub cols: usize,
    /// Bits per value: 8 or 4.
    pub bits: usize,
    /// Whether the table is q4k (16-value sub-blocks with coded parameters) rather than q8/q4.
    pub q4k: bool,
}

impl<B: Backend> QuantizedRows<B> {
    /// Upload `packed`, which holds rows `start .. start + rows` of a row-major table with
    /// `cols` values per row.
    pub fn from_packed(
        packed: &PackedBlocks,
        start: usize,
        rows: usize,
        cols: usize,
        device: &B::Device,
    ) -> Result<Self> {
        let bits = block_bits(packed, rows, cols)?;
        let words: Vec<i32> = packed.words.iter().map(|&w| w as i32).collect();
        let q4k = packed.scheme == Quantization::Q4K;
        let per_row = cols / packed.scheme.block_size() * packed.params_per_block();
        let params = half_params::encode(&packed.params, rows, per_row, |r, j| r * per_row + j);
        let codes: Vec<i32> = if q4k {
            packed.codes.iter().map(|&w| w as i32).collect()
        } else {
            vec![0]
        };
        let (n_words, n_params, n_codes) = (words.len(), params.words.len(), codes.len());
        Ok(Self {
            words: Tensor::from_data(TensorData::new(words, [n_words]), device),
            params: Tensor::from_data(TensorData::new(params.words, [n_params]), device),
            row_scale: Tensor::from_data(TensorData::new(params.row_scale, [rows]), device),
            codes: Tensor::from_data(TensorData::new(codes, [n_codes]), device),
            start,
            rows,
            cols,
            bits,
            q4k,
        })
    }

    /// Device bytes of the words, parameters, codes (q4k) and row factors.
    pub fn device_bytes(&self) -> usize {
        let codes = if self.q4k { self.codes.dims()[0] } else { 0 };
        (self.words.dims()[0] + self.params.dims()[0] + codes + self.rows) * 4
    }

    /// Parameters per block: 1 (q8 scale) or 2 (q4 scale, min).
    pub fn params_per_block(&self) -> usize {
        params_per_block(self.bits)
    }
}

/// [`KernelBackend::quantized_gather`](super::KernelBackend::quantized_gather) with plain Burn
/// ops: `ids` `[n]` → `[n, cols]`, row `ids[t] - start` of `table` dequantised where `ids[t]`
/// falls inside the table's range, zeros elsewhere.
pub fn reference_quantized_gather<B: Backend>(
    ids: Tensor<B, 1, Int>,
    table: &QuantizedRows<B>,
) -> Tensor<B, 2> {
    let n = ids.dims()[0];
    let (rows, cols, bits) = (table.rows, table.cols, table.bits);
    let (start, end) = (table.start as i64, (table.start + rows) as i64);
    let inside = ids
        .clone()
        .greater_equal_elem(start)
        .bool_and(ids.clone().lower_elem(end));
    let local = ids.sub_scalar(start).clamp(0, rows as i64 - 1);
    let row_words = cols * bits / 32;
    let blocks = cols / BLOCK_SIZE;
    let per_block = table.params_per_block();
    let words = table
        .words
        .clone()
        .reshape([rows, row_words])
        .select(0, local.clone());
    if table.q4k {
        let w = q4k_rows(words, local, table);
        return w.reshape([n, cols]) * inside.float().unsqueeze_dim(1);
    }
    // [n, row_words, per_word] → [n, blocks, 32]: value j of word w is column w · per_word + j.
    let q = unpack_words(words, bits, 2).reshape([n, blocks, BLOCK_SIZE]);
    let params = (half_params::decode(table.params.clone(), rows * blocks * per_block)
        .reshape([rows, blocks * per_block])
        * table.row_scale.clone().reshape([rows, 1]))
    .select(0, local)
    .reshape([n, blocks, per_block]);
    let w = if bits == 8 {
        q * params
    } else {
        let scale = params.clone().narrow(2, 0, 1);
        let min = params.narrow(2, 1, 1);
        q * scale + min
    };
    w.reshape([n, cols]) * inside.float().unsqueeze_dim(1)
}

/// The q4k rows `words` `[n, cols / 8]` (rows `local` of `table`) dequantised, `[n, cols / 16,
/// 16]`: `q · (d · sc) − dmin · mc` per sub-block, in the order of operations of the host
/// decoder and the WGSL kernel.
fn q4k_rows<B: Backend>(
    words: Tensor<B, 2, Int>,
    local: Tensor<B, 1, Int>,
    table: &QuantizedRows<B>,
) -> Tensor<B, 3> {
    let (n, rows, cols) = (words.dims()[0], table.rows, table.cols);
    let (supers, subs) = (cols / Q4K_SUPER_BLOCK, cols / Q4K_SUB_BLOCK);
    let q = unpack_words(words, 4, 2).reshape([n, subs, Q4K_SUB_BLOCK]);
    // (d, dmin) per super-block, repeated over its 8 sub-blocks: [n, subs, 2].
    let d = (half_params::decode(table.params.clone(), rows * supers * 2)
        .reshape([rows, supers * 2])
        * table.row_scale.clone().reshape([rows, 1]))
    .select(0, local.clone())
    .reshape([n, supers, 1, 2])
    .repeat_dim(2, Q4K_SUPER_BLOCK / Q4K_SUB_BLOCK)
    .reshape([n, subs, 2]);
    // Codes: bytes sc, mc per sub-block, 4 bytes per word: [n, subs, 2].
    let code_words = table
        .codes
        .clone()
        .reshape([rows, cols / 32])
        .select(0, local);
    let codes = code_bytes(code_words, 2).reshape([n, subs, 2]);
    let scale = d.clone().narrow(2, 0, 1) * codes.clone().narrow(2, 0, 1);
    let min = (d.narrow(2, 1, 1) * codes.narrow(2, 1, 1)).neg();
    q * scale + min
}
