//! The group of data-parallel peers a training step runs in (one per device, possibly on
//! several machines), as the one collective operation a step needs: an element-wise sum
//! returned to every peer (all-reduce). The library stays transport-free: `qzhou train`
//! implements [`PeerGroup`] on burn-collective; [`Solo`] is the one-device group.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::error::{QzhouError, Result};

/// A data-parallel group seen from one of its peers. Every peer must make the same calls in
/// the same order with tensors of the same shape and dtype (the collective matches them up).
pub trait PeerGroup<B: Backend> {
    /// This peer's index, `0..size()`; peer 0 writes checkpoints and metrics.
    fn rank(&self) -> usize;
    /// Number of peers.
    fn size(&self) -> usize;
    /// The element-wise sum of every peer's `tensor`, returned to every peer (all-reduce).
    fn all_reduce_sum<const D: usize>(&self, tensor: Tensor<B, D>) -> Result<Tensor<B, D>>;
}

/// The group of one: all-reduce is the identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct Solo;

impl<B: Backend> PeerGroup<B> for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum<const D: usize>(&self, tensor: Tensor<B, D>) -> Result<Tensor<B, D>> {
        Ok(tensor)
    }
}

/// Sum every trainable parameter's gradient over the peers, in the module's own parameter
/// order (the same on every peer, whatever gradients each holds): a parameter this peer has
/// no gradient for (it embedded no text of the batch) contributes zeros of its shape.
/// Frozen parameters (LoRA's base weights) are left out on every peer alike.
pub fn all_reduce_gradients<B, M, P>(
    module: &M,
    mut grads: GradientsParams,
    peers: &P,
) -> Result<GradientsParams>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    P: PeerGroup<B::InnerBackend>,
{
    struct Reduce<'a, P> {
        grads: &'a mut GradientsParams,
        peers: &'a P,
        error: Option<QzhouError>,
    }
    impl<B: AutodiffBackend, P: PeerGroup<B::InnerBackend>> ModuleVisitor<B> for Reduce<'_, P> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if !param.is_require_grad() || self.error.is_some() {
                return;
            }
            let grad = self
                .grads
                .remove::<B::InnerBackend, D>(param.id)
                .unwrap_or_else(|| param.val().inner().zeros_like());
            match self.peers.all_reduce_sum(grad) {
                Ok(sum) => self.grads.register::<B::InnerBackend, D>(param.id, sum),
                Err(e) => self.error = Some(e),
            }
        }
    }
    let mut visitor = Reduce {
        grads: &mut grads,
        peers,
        error: None,
    };
    module.visit(&mut visitor);
    match visitor.error {
        Some(e) => Err(e),
        None => Ok(grads),
    }
}

/// Make every peer's trainable parameters peer 0's, exactly (an all-reduce in which the other
/// peers contribute zeros): replicas built from the same files are equal already, but
/// randomly initialised adapters (LoRA) are drawn per peer.
pub fn copy_trainable_from_first_peer<B, M, P>(module: M, peers: &P) -> Result<M>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    P: PeerGroup<B::InnerBackend>,
{
    struct Copy<'a, P> {
        peers: &'a P,
        error: Option<QzhouError>,
    }
    impl<B: AutodiffBackend, P: PeerGroup<B::InnerBackend>> burn::module::ModuleMapper<B>
        for Copy<'_, P>
    {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            if !param.is_require_grad() || self.error.is_some() {
                return param;
            }
            let (id, value, mapper) = param.consume();
            let inner = value.inner();
            let mine = if self.peers.rank() == 0 {
                inner.clone()
            } else {
                inner.zeros_like()
            };
            let value = match self.peers.all_reduce_sum(mine) {
                Ok(first) => first,
                Err(e) => {
                    self.error = Some(e);
                    inner
                }
            };
            Param::from_mapped_value(id, Tensor::from_inner(value).require_grad(), mapper)
        }
    }
    let mut mapper = Copy { peers, error: None };
    let module = module.map(&mut mapper);
    match mapper.error {
        Some(e) => Err(e),
        None => Ok(module),
    }
}
