//! LoRA (Hu et al. 2021) as a module wrapper around a dense projection — Burn 0.21 has none.
//!
//! `y = x·W + b + (α / r) · (x·A)·B` with the base `W` `[in, out]` frozen, `A` `[in, r]`
//! initialised like PEFT (Kaiming-uniform, `a = √5`: `U(−1/√in, 1/√in)`) and `B` `[r, out]`
//! zero, so a fresh adapter leaves the model unchanged. [`LoraLinear::merge`] folds the update
//! into `W` (plain `Linear` for inference and export); [`LoraLinear::unmerge`] takes it back out.

use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::Distribution;

use super::dense::{linear_rows, matmul_rows};
use crate::error::{QzhouError, Result};
use crate::kernels::KernelBackend;
/// A dense projection with a trainable low-rank update.
#[derive(Module, Debug)]
pub struct LoraLinear<B: Backend> {
    /// The frozen base projection (weight `[in, out]`).
    pub base: Linear<B>,
    /// Down-projection `[in, r]`.
    pub lora_a: Param<Tensor<B, 2>>,
    /// Up-projection `[r, out]`, zero at creation.
    pub lora_b: Param<Tensor<B, 2>>,
    /// `α / r`.
    pub scale: f64,
}

impl<B: Backend> LoraLinear<B> {
    /// Wrap `base` with a rank-`rank` adapter scaled by `alpha / rank`; the base parameters stop
    /// requiring gradients.
    pub fn new(base: Linear<B>, rank: usize, alpha: f64) -> Result<Self> {
        let [d_in, d_out] = base.weight.dims();
        if rank == 0 || rank > d_in.min(d_out) {
            return Err(QzhouError::InvalidOption(format!(
                "LoRA rank {rank} must be between 1 and min(in {d_in}, out {d_out})"
            )));
        }
        if !(alpha.is_finite() && alpha > 0.0) {
            return Err(QzhouError::InvalidOption(format!(
                "LoRA alpha must be a positive number, got {alpha}"
            )));
        }
        let device = base.weight.device();
        let bound = 1.0 / (d_in as f64).sqrt();
        let lora_a = Tensor::random([d_in, rank], Distribution::Uniform(-bound, bound), &device);
        let lora_b = Tensor::zeros([rank, d_out], &device);
        Ok(Self {
            base: Linear {
                weight: base.weight.set_require_grad(false),
                bias: base.bias.map(|b| b.set_require_grad(false)),
            },
            lora_a: Param::from_tensor(lora_a),
            lora_b: Param::from_tensor(lora_b),
            scale: alpha / rank as f64,
        })
    }

    /// The update `(α / r)·A·B`, `[in, out]`.
    pub fn delta(&self) -> Tensor<B, 2> {
        self.lora_a
            .val()
            .matmul(self.lora_b.val())
            .mul_scalar(self.scale)
    }

    /// The base projection with the update folded in: `W + (α / r)·A·B` (same bias).
    pub fn merge(&self) -> Linear<B> {
        Linear {
            weight: Param::from_tensor((self.base.weight.val() + self.delta()).detach()),
            bias: self.base.bias.clone(),
        }
    }

    /// Take this adapter's update back out of a `merged` projection (the inverse of
    /// [`LoraLinear::merge`], up to rounding), keeping the adapter.
    pub fn unmerge(&self, merged: Linear<B>) -> Self {
        Self {
            base: Linear {
                weight: Param::from_tensor((merged.weight.val() - self.delta()).detach())
                    .set_require_grad(false),
                bias: merged.bias.map(|b| b.set_require_grad(false)),
            },
            lora_a: self.lora_a.clone(),
            lora_b: self.lora_b.clone(),
            scale: self.scale,
        }
    }
}

impl<B: KernelBackend> LoraLinear<B> {
    /// `x`: `[batch, seq, in]` -> `[batch, seq, out]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let update = matmul_rows(
            matmul_rows(x.clone(), &self.lora_a.val()),
            &self.lora_b.val(),
        )
        .mul_scalar(self.scale);
        linear_rows(&self.base, x) + update
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn base<Bk: Backend>(d_in: usize, d_out: usize) -> Linear<Bk> {
        let dev = Default::default();
        Linear {
            weight: Param::from_tensor(Tensor::random([d_in, d_out], Distribution::Default, &dev)),
            bias: Some(Param::from_tensor(Tensor::random(
                [d_out],
                Distribution::Default,
                &dev,
            ))),
        }
    }

    fn max_diff<Bk: Backend, const D: usize>(a: Tensor<Bk, D>, b: Tensor<Bk, D>) -> f32 {
        (a - b).abs().max().into_scalar().elem::<f32>()
    }

    #[test]
    fn a_fresh_adapter_is_the_identity_and_merge_equals_forward() {
        let dev = Default::default();
        let lin = base::<Flex>(12, 6);
        let x = Tensor::<Flex, 3>::random([2, 3, 12], Distribution::Default, &dev);
        let mut lora = LoraLinear::new(lin.clone(), 4, 8.0).unwrap();
        assert_eq!(
            max_diff(lora.forward(x.clone()), lin.forward(x.clone())),
            0.0
        );
        // Give B values, as training would.
        lora.lora_b = Param::from_tensor(Tensor::random([4, 6], Distribution::Default, &dev));
        let adapted = lora.forward(x.clone());
        assert!(max_diff(adapted.clone(), lin.forward(x.clone())) > 1e-3);
        let merged = lora.merge();
        assert!(max_diff(merged.forward(x.clone()), adapted) < 1e-4);
        let back = lora.unmerge(merged);
        assert!(max_diff(back.base.weight.val(), lin.weight.val()) < 1e-5);
    }

    #[cfg(feature = "autodiff")]
    #[test]
    fn only_the_adapter_gets_gradients() {
        type A = burn::backend::Autodiff<Flex>;
        let dev = Default::default();
        let mut lora = LoraLinear::new(base::<A>(8, 8), 2, 4.0).unwrap();
        lora.lora_b = Param::from_tensor(Tensor::random([2, 8], Distribution::Default, &dev));
        let x = Tensor::<A, 3>::random([1, 5, 8], Distribution::Default, &dev);
        let grads = lora.forward(x).sum().backward();
        assert!(lora.base.weight.val().grad(&grads).is_none());
        assert!(lora.lora_a.val().grad(&grads).is_some());
        assert!(lora.lora_b.val().grad(&grads).is_some());
    }

    #[test]
    fn bad_rank_and_alpha_are_errors() {
        assert!(LoraLinear::new(base::<Flex>(8, 4), 5, 1.0).is_err());
        assert!(LoraLinear::new(base::<Flex>(8, 4), 0, 1.0).is_err());
        assert!(LoraLinear::new(base::<Flex>(8, 4), 2, f64::NAN).is_err());
    }
}
