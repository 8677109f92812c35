//! The memory plan of a run (`qzhou_core::training::MemoryPlan`) against the memory of the
//! device it will run on: printed before the model is loaded, and a run that cannot fit is
//! refused with the knobs that shrink it.

use anyhow::{bail, Result};
use qzhou_core::model::LoraConfig;
use qzhou_core::training::memory_plan::GIB;
use qzhou_core::training::{MemoryPlan, PlanInput, Precision};
use qzhou_core::{KernelBackend, QwenConfig};

use super::config::RunConfig;
use crate::backend::BackendKind;

/// Print the plan of `run` on `devices` (the first is the main one) to stderr, with the
/// device's memory where known; an error naming the knobs when it cannot fit.
///
/// Capacity: the host's `MemAvailable` for the CPU backend, the device's total memory where
/// the backend tells ([`KernelBackend::device_memory_bytes`]: CUDA); wgpu cannot tell, so
/// its plan is printed but not enforced.
pub fn report<B: KernelBackend>(
    run: &RunConfig,
    config: &QwenConfig,
    precision: Precision,
    checkpointing: bool,
    backend: BackendKind,
    devices: &[B::Device],
) -> Result<()> {
    let input = input(run, config, precision, checkpointing, devices.len().max(1));
    let plan = MemoryPlan::new(&input)?;
    let capacity = match backend {
        BackendKind::Cpu => host_available_bytes(),
        _ => devices.first().and_then(B::device_memory_bytes),
    };
    eprint!("{plan}");
    let Some(capacity) = capacity else {
        eprintln!("  device memory unknown ({backend:?}): not checked");
        return Ok(());
    };
    let what = if backend == BackendKind::Cpu {
        "available host memory"
    } else {
        "device memory"
    };
    let fits = plan.fits(capacity);
    eprintln!(
        "  {what:<44}{:>8.2}{}",
        capacity as f64 / GIB,
        if fits { "" } else { "  does not fit" }
    );
    if !fits {
        let chunk = match MemoryPlan::largest_fitting_chunk(&input, capacity)? {
            Some(c) => format!(" (grad_cache_chunk = {c} would fit as it is)"),
            None => " (not even grad_cache_chunk = 1 fits as it is)".to_string(),
        };
        bail!(
            "the run needs {:.1} GiB but the {what} is {:.1} GiB; shrink it with {}{chunk}",
            plan.total() as f64 / GIB,
            capacity as f64 / GIB,
            knobs(run, precision, checkpointing).join(", ")
        );
    }
    Ok(())
}

/// The plan's input for `run` at `precision` over `devices` data-parallel devices.
pub fn input<'a>(
    run: &'a RunConfig,
    config: &'a QwenConfig,
    precision: Precision,
    checkpointing: bool,
    devices: usize,
) -> PlanInput<'a> {
    let t = &run.train;
    PlanInput {
        config,
        precision,
        lora: run.lora.as_ref(),
        chunk_texts: t.grad_cache_chunk,
        max_len: t.query_max_len.max(t.passage_max_len),
        batch_texts: batch_texts(run),
        devices,
        checkpointing,
    }
}

/// Texts in the largest batch of the mix: `batch_size · (2 + negatives)` (retrieval and
/// classification: query, positive, negatives; a pair dataset's `2 · batch_size` is at most
/// that).
fn batch_texts(run: &RunConfig) -> usize {
    run.datasets
        .iter()
        .map(|d| d.batch_size * (2 + d.negatives))
        .max()
        .unwrap_or(1)
}

/// The knobs that shrink the run, those not already turned.
fn knobs(run: &RunConfig, precision: Precision, checkpointing: bool) -> Vec<String> {
    let mut k = Vec::new();
    match &run.lora {
        None => k.push("LoRA (a [lora] section: only adapters train)".to_string()),
        Some(LoraConfig { rank, .. }) => k.push(format!("a smaller [lora] rank than {rank}")),
    }
    if run.train.grad_cache_chunk > 1 {
        k.push(format!(
            "a smaller grad_cache_chunk than {}",
            run.train.grad_cache_chunk
        ));
    }
    match precision {
        Precision::F32 => k.push("--dtype bf16 [--pure-bf16]".to_string()),
        Precision::MixedBf16 => k.push("--pure-bf16".to_string()),
        Precision::PureBf16 => {}
    }
    if !checkpointing {
        k.push("--grad-checkpointing".to_string());
    }
    k.push(format!(
        "a shorter passage_max_len than {}",
        run.train.passage_max_len
    ));
    k
}

/// `MemAvailable` of `/proc/meminfo` in bytes (Linux), if readable.
fn host_available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
