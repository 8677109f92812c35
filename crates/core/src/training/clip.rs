//! Global gradient-norm clipping (PyTorch's `clip_grad_norm_`): Burn's optimizer clipping is
//! per parameter, which changes the update's direction; this scales all gradients together.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// `‖g‖₂` over every gradient of `module`'s parameters in `grads`.
pub fn grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> f64 {
    struct SumSquares<'a, B: AutodiffBackend> {
        grads: &'a GradientsParams,
        total: f64,
        _b: std::marker::PhantomData<B>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for SumSquares<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
                // Squared in f32 whatever the gradient's dtype (bf16 sums lose low bits), summed
                // row by row on the device and the row sums in f64 on the host, in a fixed
                // order: Burn's CPU backend sums a whole large tensor in parallel chunks whose
                // partial sums combine in a scheduling-dependent order, which made the norm,
                // hence the clip factor and the weights, differ in the last bits between runs
                // (a resumed run then no longer equalled an uninterrupted one).
                let g = g.cast(burn::tensor::FloatDType::F32).square();
                self.total += if D >= 2 {
                    g.sum_dim(D - 1)
                        .into_data()
                        .iter::<f32>()
                        .map(f64::from)
                        .sum::<f64>()
                } else {
                    g.sum().into_scalar().elem::<f64>()
                };
            }
        }
    }
    let mut v = SumSquares::<B> {
        grads,
        total: 0.0,
        _b: std::marker::PhantomData,
    };
    module.visit(&mut v);
    v.total.sqrt()
}

/// Scale every gradient by `max_norm / ‖g‖` when `‖g‖ > max_norm` (as `clip_grad_norm_`, which
/// adds 1e-6 to the norm). Returns the norm before clipping.
pub fn clip_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    struct Scale<'a, B: AutodiffBackend> {
        grads: &'a mut GradientsParams,
        factor: f64,
        _b: std::marker::PhantomData<B>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                self.grads.register(param.id, g.mul_scalar(self.factor));
            }
        }
    }
    let norm = grad_norm(module, grads);
    let factor = max_norm / (norm + 1e-6);
    if factor < 1.0 {
        module.visit(&mut Scale::<B> {
            grads,
            factor,
            _b: std::marker::PhantomData,
        });
    }
    norm
}
