//! AdamW at a chosen [`Precision`], including mixed precision with f32 master weights.
//!
//! Burn 0.21's optimizers update a parameter in the dtype it has. Trained in bf16, every update
//! smaller than half a unit in the last place of a weight (bf16 keeps 8 significant bits: about
//! 0.2–0.4 % of the weight) rounds back to the old value — at the paper's LR 3e-5, Adam's
//! steps of about `lr` are lost on every weight larger than about 0.008. [`PrecisionAdamW`]
//! wraps Burn's own [`AdamW`] step (same formula, same record format as
//! `AdamWConfig::init`) and keeps, for mixed precision, an **f32 master copy** of every
//! trainable weight and **f32 moments**: the forward and backward passes read the bf16 copy,
//! the gradient is cast to f32, the master takes the update, and the bf16 copy is re-cast
//! from it (what `torch.autocast` + an f32 model + `GradScaler`-free bf16 training does).
//!
//! Usage: build the model in f32, hand it to [`PrecisionAdamW::prepare`] (which keeps the
//! masters and returns the model in the compute dtype), train the returned model with
//! [`Optimizer::step`], and save [`PrecisionAdamW::weights`] (the f32 masters) rather than the
//! compute copy. A checkpoint written at any precision loads back into any other.

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::record::AdaptorRecord;
use burn::optim::{
    AdamW, AdamWConfig, GradientsParams, LearningRate, MultiGradientsParams, Optimizer,
    SimpleOptimizer,
};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, FloatDType};
use hashbrown::HashMap;

use super::Precision;

/// The optimizer state of one parameter: Burn's own record, so checkpoints keep
/// `AdamWConfig::init`'s format.
type StateRecord<B> = AdaptorRecord<AdamW, B>;

/// AdamW over a model whose weights are f32, bf16 with f32 masters, or bf16 (see module docs).
#[derive(Clone)]
pub struct PrecisionAdamW<M, B: AutodiffBackend> {
    adam: AdamW,
    precision: Precision,
    /// Adam moments per parameter (f32, or bf16 for [`Precision::PureBf16`]).
    states: HashMap<ParamId, StateRecord<B>>,
    /// Mixed precision: the f32 value of each trainable parameter, flattened to one dimension.
    masters: HashMap<ParamId, Tensor<B::InnerBackend, 1>>,
    _module: std::marker::PhantomData<M>,
}

impl<M: AutodiffModule<B>, B: AutodiffBackend> PrecisionAdamW<M, B> {
    /// AdamW from `config` (betas, epsilon, weight decay) at `precision`.
    pub fn new(config: &AdamWConfig, precision: Precision) -> Self {
        // `init` builds Burn's adaptor around the AdamW step; take the step itself.
        let adaptor: OptimizerAdaptor<AdamW, M, B> = config.init();
        Self {
            adam: adaptor.optim().clone(),
            precision,
            states: HashMap::new(),
            masters: HashMap::new(),
            _module: std::marker::PhantomData,
        }
    }

    /// The precision this optimizer trains at.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Take a model whose weights are f32 (freshly loaded, or read from a checkpoint) and
    /// return it in the compute dtype, keeping f32 masters of its trainable weights for mixed
    /// precision. Frozen weights (LoRA's base) get no master: they are only ever read.
    pub fn prepare(&mut self, module: M) -> M {
        self.masters.clear();
        match self.precision {
            Precision::F32 => cast_params(module, FloatDType::F32),
            Precision::PureBf16 => cast_params(module, FloatDType::BF16),
            Precision::MixedBf16 => {
                let mut keep = KeepMasters::<B> {
                    masters: &mut self.masters,
                };
                module.visit(&mut keep);
                cast_params(module, FloatDType::BF16)
            }
        }
    }

    /// The weights to checkpoint: `module` (the compute copy) with each trainable parameter
    /// replaced by its f32 master under mixed precision; `module` itself otherwise. Frozen
    /// weights stay bf16, so under LoRA the result mixes dtypes: save it (records store f32),
    /// do not run it — evaluate the compute copy.
    pub fn weights(&self, module: &M) -> M {
        if self.precision != Precision::MixedBf16 {
            return module.clone();
        }
        module.clone().map(&mut RestoreMasters::<B> {
            masters: &self.masters,
        })
    }

    fn step_params(&mut self, lr: LearningRate, module: M, grads: &mut GradientsParams) -> M {
        module.map(&mut StepMapper::<B> {
            adam: &self.adam,
            precision: self.precision,
            states: &mut self.states,
            masters: &mut self.masters,
            grads,
            lr,
        })
    }
}

impl<M: AutodiffModule<B>, B: AutodiffBackend> Optimizer<M, B> for PrecisionAdamW<M, B> {
    type Record = HashMap<ParamId, StateRecord<B>>;

    fn step(&mut self, lr: LearningRate, module: M, mut grads: GradientsParams) -> M {
        self.step_params(lr, module, &mut grads)
    }

    fn step_multi(&mut self, lr: LearningRate, module: M, grads: MultiGradientsParams) -> M {
        // Gradients spread over devices: gather each on the device of its parameter.
        let mut single = GradientsParams::new();
        let mut gather = GatherGrads::<B> {
            multi: grads,
            single: &mut single,
            _b: std::marker::PhantomData,
        };
        module.visit(&mut gather);
        self.step_params(lr, module, &mut single)
    }

    fn to_record(&self) -> Self::Record {
        self.states.clone()
    }

    fn load_record(mut self, record: Self::Record) -> Self {
        self.states = record;
        self
    }
}

/// Cast every float parameter of `module` to `dtype` as a new leaf: the id and whether it
/// requires a gradient are kept, and no autodiff edge leads back to the old value.
pub fn cast_params<B: AutodiffBackend, M: AutodiffModule<B>>(module: M, dtype: FloatDType) -> M {
    struct Cast(FloatDType);
    impl<B: AutodiffBackend> ModuleMapper<B> for Cast {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, tensor, mapper) = param.consume();
            let grad = tensor.is_require_grad();
            let mut tensor = Tensor::from_inner(tensor.inner().cast(self.0));
            if grad {
                tensor = tensor.require_grad();
            }
            Param::from_mapped_value(id, tensor, mapper)
        }
    }
    module.map(&mut Cast(dtype))
}

struct KeepMasters<'a, B: AutodiffBackend> {
    masters: &'a mut HashMap<ParamId, Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for KeepMasters<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if param.is_require_grad() {
            let value = param.val().inner();
            let n = value.shape().num_elements();
            self.masters
                .insert(param.id, value.cast(FloatDType::F32).reshape([n]));
        }
    }
}

struct RestoreMasters<'a, B: AutodiffBackend> {
    masters: &'a HashMap<ParamId, Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for RestoreMasters<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let tensor = match self.masters.get(&id) {
            Some(master) => {
                let grad = tensor.is_require_grad();
                let t = Tensor::from_inner(master.clone().reshape(tensor.shape()));
                if grad {
                    t.require_grad()
                } else {
                    t
                }
            }
            None => tensor,
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

struct GatherGrads<'a, B: AutodiffBackend> {
    multi: MultiGradientsParams,
    single: &'a mut GradientsParams,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GatherGrads<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some((grad, device)) = self.multi.remove::<B::InnerBackend, D>(param.id) {
            self.single.register(param.id, grad.to_device(&device));
        }
    }
}

/// One AdamW step per parameter that has a gradient.
struct StepMapper<'a, B: AutodiffBackend> {
    adam: &'a AdamW,
    precision: Precision,
    states: &'a mut HashMap<ParamId, StateRecord<B>>,
    masters: &'a mut HashMap<ParamId, Tensor<B::InnerBackend, 1>>,
    grads: &'a mut GradientsParams,
    lr: LearningRate,
}

impl<B: AutodiffBackend> ModuleMapper<B> for StepMapper<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<B::InnerBackend, D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let require_grad = tensor.is_require_grad();
        let value = tensor.inner();
        let device = value.device();
        let grad = grad.to_device(&device);
        // The dtype the update is computed in: the master's (f32) under mixed precision, the
        // weight's own otherwise. Moments read from a checkpoint come back as f32 and are cast
        // to it (a pure-bf16 run resumes with bf16 moments).
        let update_dtype = match self.precision {
            Precision::MixedBf16 => FloatDType::F32,
            Precision::F32 | Precision::PureBf16 => float_dtype(value.dtype()),
        };
        let state = self.states.remove(&id).map(|record| {
            let mut state: <AdamW as SimpleOptimizer<B::InnerBackend>>::State<D> =
                <AdamW as SimpleOptimizer<B::InnerBackend>>::to_device(
                    record.into_state(),
                    &device,
                );
            let m = &mut state.momentum;
            m.moment_1 = m.moment_1.clone().cast(update_dtype);
            m.moment_2 = m.moment_2.clone().cast(update_dtype);
            state
        });
        let grad = grad.cast(update_dtype);
        let updated = if self.precision == Precision::MixedBf16 {
            // A trainable weight without a master (made trainable after `prepare`): its own
            // value, widened, becomes the master from now on.
            let master = match self.masters.remove(&id) {
                Some(master) => master.reshape(value.shape()),
                None => value.clone().cast(FloatDType::F32),
            };
            let (master, state) = self.adam.step(self.lr, master, grad, state);
            self.store(id, state);
            let n = master.shape().num_elements();
            let compute = master.clone().cast(float_dtype(value.dtype()));
            self.masters.insert(id, master.reshape([n]));
            compute
        } else {
            let (updated, state) = self.adam.step(self.lr, value, grad, state);
            self.store(id, state);
            updated
        };
        let mut tensor = Tensor::from_inner(updated);
        if require_grad {
            tensor = tensor.require_grad();
        }
        Param::from_mapped_value(id, tensor, mapper)
    }
}

impl<B: AutodiffBackend> StepMapper<'_, B> {
    fn store<const D: usize>(
        &mut self,
        id: ParamId,
        state: Option<<AdamW as SimpleOptimizer<B::InnerBackend>>::State<D>>,
    ) {
        if let Some(state) = state {
            self.states.insert(id, AdaptorRecord::from_state(state));
        }
    }
}

/// The float dtype of a float tensor (f32 for anything unexpected).
fn float_dtype(dtype: DType) -> FloatDType {
    match dtype {
        DType::BF16 => FloatDType::BF16,
        DType::F16 => FloatDType::F16,
        DType::F64 => FloatDType::F64,
        _ => FloatDType::F32,
    }
}
