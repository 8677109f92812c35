//! Score precomputed sentence-pair embeddings with qzhou's STS evaluator — for models qzhou
//! cannot run (the positive control in `scripts/minilm_sts_control.py`).
//!
//!     cargo run -p qzhou-cli --example score_sts -- FIRST.npy SECOND.npy GOLD.npy
//!
//! FIRST/SECOND: `[pairs, dim]` f32; GOLD: `[pairs]` f64 or f32. Prints the scores as JSON.

use std::path::Path;

use anyhow::{bail, Context, Result};
use npyz::NpyFile;

fn rows(path: &Path) -> Result<Vec<Vec<f32>>> {
    let file =
        NpyFile::new(std::fs::File::open(path).with_context(|| format!("{}", path.display()))?)?;
    let shape = file.shape().to_vec();
    let [n, d] = shape[..] else {
        bail!(
            "{}: expected a 2-D array, got shape {shape:?}",
            path.display()
        )
    };
    let values: Vec<f32> = file.into_vec()?;
    Ok(values
        .chunks(d as usize)
        .take(n as usize)
        .map(<[f32]>::to_vec)
        .collect())
}

fn gold(path: &Path) -> Result<Vec<f64>> {
    let bytes = std::fs::read(path).with_context(|| format!("{}", path.display()))?;
    let file = NpyFile::new(&bytes[..])?;
    Ok(match file.into_vec::<f64>() {
        Ok(v) => v,
        Err(_) => NpyFile::new(&bytes[..])?
            .into_vec::<f32>()?
            .into_iter()
            .map(f64::from)
            .collect(),
    })
}

fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 4 {
        bail!("usage: score_sts FIRST.npy SECOND.npy GOLD.npy");
    }
    let scores = qzhou_core::metrics::sts_scores(
        &rows(Path::new(&a[1]))?,
        &rows(Path::new(&a[2]))?,
        &gold(Path::new(&a[3]))?,
    )?;
    println!("{}", serde_json::to_string_pretty(&scores)?);
    Ok(())
}
