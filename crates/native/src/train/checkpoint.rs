//! Checkpoint folders `step-NNNNNNNN/` in the run folder: model and optimizer records (Burn's
//! named MessagePack, full precision) and `state.json` (step, sampler state, config
//! fingerprint). Written to a temporary folder and renamed, so a crash mid-save never leaves a
//! half checkpoint, and an older checkpoint is deleted only after a newer one is complete.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use qzhou_core::data::sampler::SamplerState;
use qzhou_core::model::LoraConfig;
use serde::{Deserialize, Serialize};

/// `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Updates applied so far.
    pub step: usize,
    /// Where the data order continues.
    pub sampler: SamplerState,
    /// [`super::config::RunConfig::fingerprint`] of the run that wrote it.
    pub fingerprint: String,
    /// The run configuration (paths absolute): `qzhou export` rebuilds the model from it.
    pub run: super::config::RunConfig,
    /// The adapters the saved model carries (needed to rebuild its structure).
    pub lora: Option<LoraConfig>,
    /// Tokens (real, unpadded) seen so far.
    pub tokens: u64,
    /// Whether the run had reached its last step.
    pub finished: bool,
}

pub const MODEL_FILE: &str = "model";
pub const OPTIMIZER_FILE: &str = "optimizer";
pub const STATE_FILE: &str = "state.json";

/// Folder of the checkpoint after `step` updates.
pub fn step_dir(run_dir: &Path, step: usize) -> PathBuf {
    run_dir.join(format!("step-{step:08}"))
}

/// Complete checkpoints in `run_dir`, oldest first.
pub fn list(run_dir: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(run_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", run_dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(n) = name
            .strip_prefix("step-")
            .and_then(|n| n.parse::<usize>().ok())
        {
            if entry.path().join(STATE_FILE).is_file() {
                found.push((n, entry.path()));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Read a checkpoint's `state.json`.
pub fn read_state(dir: &Path) -> Result<TrainState> {
    let path = dir.join(STATE_FILE);
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "{} is not a qzhou train checkpoint (no {STATE_FILE})",
            dir.display()
        )
    })?;
    serde_json::from_slice(&bytes).with_context(|| format!("{}: malformed", path.display()))
}

/// Write a checkpoint: `write_records(tmp)` saves the model and optimizer files into the
/// temporary folder, then the state is written and the folder renamed into place. Keeps the
/// newest `keep_last` (0 = all) afterwards.
pub fn save(
    run_dir: &Path,
    state: &TrainState,
    keep_last: usize,
    write_records: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    std::fs::create_dir_all(run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    let final_dir = step_dir(run_dir, state.step);
    let tmp = run_dir.join(format!(".tmp-step-{:08}", state.step));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    write_records(&tmp)?;
    let json = serde_json::to_vec_pretty(state)?;
    std::fs::write(tmp.join(STATE_FILE), json)?;
    for entry in std::fs::read_dir(&tmp)? {
        std::fs::File::open(entry?.path())?.sync_all()?;
    }
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir)?;
    }
    std::fs::rename(&tmp, &final_dir)
        .with_context(|| format!("cannot move checkpoint into {}", final_dir.display()))?;
    if keep_last > 0 {
        let all = list(run_dir)?;
        if all.len() > keep_last {
            for (_, old) in &all[..all.len() - keep_last] {
                std::fs::remove_dir_all(old)
                    .with_context(|| format!("cannot remove old checkpoint {}", old.display()))?;
            }
        }
    }
    Ok(final_dir)
}

/// The newest checkpoint of `run_dir`, or an error saying there is none.
pub fn latest(run_dir: &Path) -> Result<PathBuf> {
    match list(run_dir)?.pop() {
        Some((_, dir)) => Ok(dir),
        None => bail!("no checkpoint to resume in {}", run_dir.display()),
    }
}
