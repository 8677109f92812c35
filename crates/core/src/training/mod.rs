//! Training building blocks that are pure tensor math, shared by every backend: the learning
//! rate schedule, GradCache (contrastive batches larger than device memory) and global
//! gradient-norm clipping. The loop itself (data, optimizer, checkpoints) is `qzhou train`.

mod clip;
mod grad_cache;
pub mod memory_plan;
mod peers;
mod precision;
mod precision_optimizer;
mod schedule;

pub use clip::{clip_grad_norm, grad_norm};
pub use grad_cache::{embed_texts, grad_cache_step, peer_step, StepOutput};
pub use memory_plan::{MemoryPlan, PlanInput};
pub use peers::{all_reduce_gradients, copy_trainable_from_first_peer, PeerGroup, Solo};
pub use precision::Precision;
pub use precision_optimizer::{cast_params, PrecisionAdamW};
pub use schedule::{Decay, LrSchedule};
