//! Training building blocks that are pure tensor math, shared by every backend: the learning
//! rate schedule, GradCache (contrastive batches larger than device memory) and global
//! gradient-norm clipping. The loop itself (data, optimizer, checkpoints) is `qzhou train`.

mod clip;
mod grad_cache;
mod schedule;

pub use clip::{clip_grad_norm, grad_norm};
pub use grad_cache::{data_parallel_step, embed_texts, grad_cache_step, StepOutput};
pub use schedule::{Decay, LrSchedule};
