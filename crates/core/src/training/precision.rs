//! How a training run stores and computes its floating-point numbers.

/// The precision of a training run: what the forward/backward pass computes in, what the
/// optimizer updates, and what its moments are kept in.
///
/// | | compute (weights, activations, grads) | master weights | Adam moments | bytes/param (full FT) |
/// |---|---|---|---|---|
/// | `F32` | f32 | – (the weights) | f32 | 4 + 4 + 8 = 16 |
/// | `MixedBf16` | bf16 | f32 | f32 | 2 + 2 + 4 + 8 = 16 |
/// | `PureBf16` | bf16 | – (the weights) | bf16 | 2 + 2 + 4 = 8 |
///
/// Pure bf16 loses every update smaller than half a unit in the last place of the weight
/// (about 0.2–0.4 % of it: bf16 keeps 8 significant bits), which at LR 3e-5 is most of them;
/// it is the memory-saving option, mixed precision the default for bf16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// bf16 forward/backward, f32 master weights and f32 Adam moments.
    MixedBf16,
    /// bf16 weights, activations, gradients and Adam moments.
    PureBf16,
}

impl Precision {
    /// Bytes of one element of the weights the forward pass reads.
    pub fn compute_bytes(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::MixedBf16 | Precision::PureBf16 => 2,
        }
    }

    /// Bytes of one f32 master copy per trainable weight (0 when the weights are the masters).
    pub fn master_bytes(self) -> usize {
        match self {
            Precision::MixedBf16 => 4,
            Precision::F32 | Precision::PureBf16 => 0,
        }
    }

    /// Bytes of one gradient element (gradients come out in the compute dtype).
    pub fn grad_bytes(self) -> usize {
        self.compute_bytes()
    }

    /// Bytes of Adam's two moments per trainable weight.
    pub fn optimizer_bytes(self) -> usize {
        match self {
            Precision::F32 | Precision::MixedBf16 => 8,
            Precision::PureBf16 => 4,
        }
    }
}
