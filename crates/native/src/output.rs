//! Writing embeddings as JSONL or `.npy`, atomically: the output appears (or replaces an old
//! file) only once everything was written, so a failure never destroys earlier results.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use npyz::WriterBuilder;
use serde_json::{json, Value};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// `.npy` → npy, anything else (and stdout) → JSONL.
    Auto,
    /// One `{"id": ..., "embedding": [...]}` object per line.
    Jsonl,
    /// A 2-D little-endian float32 NumPy array `[texts, dim]`, rows in input order.
    Npy,
}

/// Resolve `Auto` from the output path.
pub fn resolve_format(format: OutputFormat, path: Option<&Path>) -> Result<OutputFormat> {
    Ok(match (format, path) {
        (OutputFormat::Npy, None) => bail!("--output-format npy needs --output FILE"),
        (OutputFormat::Auto, Some(p)) if p.extension().is_some_and(|e| e == "npy") => {
            OutputFormat::Npy
        }
        (OutputFormat::Auto, _) => OutputFormat::Jsonl,
        (f, _) => f,
    })
}

/// Write `rows` (with their ids) to `path`, or JSONL to stdout when `path` is `None`.
pub fn write_embeddings(
    path: Option<&Path>,
    format: OutputFormat,
    ids: &[Value],
    rows: &[Vec<f32>],
) -> Result<()> {
    let format = resolve_format(format, path)?;
    match path {
        None => {
            let stdout = std::io::stdout();
            let mut w = BufWriter::new(stdout.lock());
            write_jsonl(&mut w, ids, rows)?;
            w.flush().context("writing to stdout")?;
            Ok(())
        }
        Some(path) => atomic_write(path, |w| match format {
            OutputFormat::Npy => write_npy(w, rows),
            _ => write_jsonl(w, ids, rows),
        }),
    }
}

pub(crate) fn write_jsonl(w: &mut dyn Write, ids: &[Value], rows: &[Vec<f32>]) -> Result<()> {
    for (id, row) in ids.iter().zip(rows) {
        serde_json::to_writer(&mut *w, &json!({"id": id, "embedding": row}))?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

fn write_npy(w: &mut dyn Write, rows: &[Vec<f32>]) -> Result<()> {
    let dim = rows.first().map_or(0, Vec::len);
    let mut writer = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(&[rows.len() as u64, dim as u64])
        .writer(w)
        .begin_nd()?;
    for row in rows {
        writer.extend(row.iter().copied())?;
    }
    writer.finish()?;
    Ok(())
}

/// Write through a temporary file next to `path`, then rename it over `path`.
pub(crate) fn atomic_write(
    path: &Path,
    body: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        bail!("output folder {} does not exist", dir.display());
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".qzhou-")
        .tempfile_in(&dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    {
        let mut w = BufWriter::new(tmp.as_file_mut());
        body(&mut w)?;
        w.flush()?;
    }
    // tempfile creates 0600; results and exported models are meant to be read (and served).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_is_readable_by_npyz_and_jsonl_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let rows = vec![vec![1.0f32, 2.0], vec![3.0, -4.5]];
        let ids = vec![json!("a"), json!(7)];
        let npy = dir.path().join("e.npy");
        write_embeddings(Some(&npy), OutputFormat::Auto, &ids, &rows).unwrap();
        let bytes = std::fs::read(&npy).unwrap();
        let arr = npyz::NpyFile::new(&bytes[..]).unwrap();
        assert_eq!(arr.shape(), &[2, 2]);
        assert_eq!(arr.into_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, -4.5]);
        let jl = dir.path().join("e.jsonl");
        write_embeddings(Some(&jl), OutputFormat::Auto, &ids, &rows).unwrap();
        let text = std::fs::read_to_string(&jl).unwrap();
        assert_eq!(
            text,
            "{\"embedding\":[1.0,2.0],\"id\":\"a\"}\n{\"embedding\":[3.0,-4.5],\"id\":7}\n"
        );
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.jsonl");
        std::fs::write(&p, "precious\n").unwrap();
        let r = atomic_write(&p, |w| {
            w.write_all(b"partial")?;
            bail!("boom")
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "precious\n");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temporary file left behind"
        );
        assert!(resolve_format(OutputFormat::Npy, None).is_err());
    }
}
