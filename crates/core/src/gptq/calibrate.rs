//! Run calibration texts through an encoder layer by layer and collect, per layer, the second
//! moments of what each projection reads.

use burn::prelude::*;

use super::InputMoments;
use crate::kernels::KernelBackend;
use crate::model::{rope_tables, QwenEncoder};

/// The inputs of one decoder layer's seven projections (four distinct vectors).
#[derive(Debug)]
pub struct LayerInputs {
    /// `input_layernorm(x)`: read by `q_proj`, `k_proj`, `v_proj`.
    pub attention: InputMoments,
    /// The heads' outputs: read by `o_proj`.
    pub attention_output: InputMoments,
    /// `post_attention_layernorm(h)`: read by `gate_proj`, `up_proj`.
    pub mlp: InputMoments,
    /// `silu(gate) * up`: read by `down_proj`.
    pub mlp_gated: InputMoments,
}

impl LayerInputs {
    /// The moments that projection `name` (`q_proj`, …, `down_proj`) reads.
    pub fn for_projection(&mut self, name: &str) -> Option<&mut InputMoments> {
        match name {
            "q_proj" | "k_proj" | "v_proj" => Some(&mut self.attention),
            "o_proj" => Some(&mut self.attention_output),
            "gate_proj" | "up_proj" => Some(&mut self.mlp),
            "down_proj" => Some(&mut self.mlp_gated),
            _ => None,
        }
    }
}

/// Add `x` (`[1, seq, dim]`) to `slot`, created `dim` wide on first use.
fn add<B: Backend>(slot: &mut Option<InputMoments>, x: Tensor<B, 3>) {
    let dim = x.dims()[2];
    let rows = x
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("f32 data after convert");
    slot.get_or_insert_with(|| InputMoments::new(dim))
        .add_rows(&rows);
}

/// Tokens run through the layers together: calibration texts are packed side by side into rows
/// of up to this many tokens (a longer text gets a row of its own). A short text alone makes
/// each projection a product of a few rows with the whole weight, which on the CPU costs about
/// as much to lay out as to compute; the extra attention over a packed row is under a tenth of
/// its projections' work at this length.
pub const PACKED_TOKENS: usize = 512;

/// One packed row: its hidden states `[1, tokens, hidden]`, RoPE tables restarting at every
/// text, and the mask that keeps the texts apart.
struct PackedRow<B: Backend> {
    hidden: Tensor<B, 3>,
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
    mask: Option<Tensor<B, 4, Bool>>,
}

/// Group the non-empty `sequences`, in order, into rows of at most [`PACKED_TOKENS`] tokens.
fn pack_rows<B: KernelBackend>(
    encoder: &QwenEncoder<B>,
    sequences: &[Vec<u32>],
    device: &B::Device,
) -> Vec<PackedRow<B>> {
    let mut groups: Vec<Vec<&[u32]>> = Vec::new();
    let mut filled = 0;
    for ids in sequences.iter().filter(|ids| !ids.is_empty()) {
        match groups.last_mut() {
            Some(group) if filled + ids.len() <= PACKED_TOKENS => group.push(ids),
            _ => {
                groups.push(vec![ids]);
                filled = 0;
            }
        }
        filled += ids.len();
    }
    let longest = sequences.iter().map(Vec::len).max().unwrap_or(0);
    let (cos, sin) = rope_tables::<B>(encoder.rope_theta, encoder.head_dim, longest, device);
    groups
        .into_iter()
        .map(|group| {
            let lengths: Vec<usize> = group.iter().map(|ids| ids.len()).collect();
            let ids: Vec<i64> = group
                .iter()
                .flat_map(|ids| ids.iter())
                .map(|&t| t as i64)
                .collect();
            let s = ids.len();
            let hidden = encoder
                .embed_tokens
                .forward(Tensor::<B, 1, Int>::from_ints(ids.as_slice(), device).reshape([1, s]));
            let table = |t: &Tensor<B, 2>| {
                Tensor::cat(
                    lengths.iter().map(|&n| t.clone().narrow(0, 0, n)).collect(),
                    0,
                )
            };
            let mask = if group.len() == 1 {
                encoder.attention_mask(Tensor::<B, 2, Int>::ones([1, s], device))
            } else {
                Some(encoder.packed_attention_mask(&lengths, device))
            };
            PackedRow {
                hidden,
                cos: table(&cos),
                sin: table(&sin),
                mask,
            }
        })
        .collect()
}

/// Run every token sequence (`sequences[i]`: token ids, one text, no padding) through `encoder`
/// in its attention mode, one layer at a time for all sequences, calling `on_layer(index,
/// inputs)` after each layer. Texts run packed into rows of up to [`PACKED_TOKENS`] tokens, each
/// attending only to itself, so the moments are those of every text run alone. Only one layer's
/// moments and every sequence's hidden states (`tokens · hidden` floats) are held at a time. The
/// encoder runs unchanged (f32 weights): the moments are those of the full-precision model
/// (GPTQ without sequential re-quantisation).
pub fn calibrate<B: KernelBackend>(
    encoder: &QwenEncoder<B>,
    sequences: &[Vec<u32>],
    device: &B::Device,
    on_layer: &mut dyn FnMut(usize, LayerInputs) -> crate::Result<()>,
) -> crate::Result<()> {
    if sequences.iter().all(|ids| ids.is_empty()) {
        return Err(crate::QzhouError::InvalidOption(
            "GPTQ calibration needs at least one non-empty text".into(),
        ));
    }
    let mut rows = pack_rows(encoder, sequences, device);
    for (index, layer) in encoder.layers.iter().enumerate() {
        let attn = &layer.self_attn;
        let mut slots: [Option<InputMoments>; 4] = Default::default();
        for row in &mut rows {
            let x = row.hidden.clone();
            let normed = layer.input_layernorm.forward(x.clone());
            add(&mut slots[0], normed.clone());
            let heads = attn.attend(normed, &row.cos, &row.sin, row.mask.clone());
            add(&mut slots[1], heads.clone());
            let h = x + attn.o_proj.forward(heads);
            let normed = layer.post_attention_layernorm.forward(h.clone());
            add(&mut slots[2], normed.clone());
            let gated = layer.mlp.gated(normed);
            add(&mut slots[3], gated.clone());
            row.hidden = h + layer.mlp.down_proj.forward(gated);
        }
        let [Some(attention), Some(attention_output), Some(mlp), Some(mlp_gated)] = slots else {
            unreachable!("at least one non-empty sequence ran through the layer")
        };
        on_layer(
            index,
            LayerInputs {
                attention,
                attention_output,
                mlp,
                mlp_gated,
            },
        )?;
    }
    Ok(())
}
