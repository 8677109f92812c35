//! `qzhou embed --shard I/N`: one worker's slice of a corpus, embedded so that a killed worker
//! can be run again without redoing what it finished, and `qzhou merge-shards` to join them.
//!
//! * **Split**: the input's text positions are cut into resume chunks of `C` texts (`C` =
//!   `--chunk-texts`), and shard `I` of `N` (0-based, as Slurm array and Kubernetes indexed-Job
//!   indices are) takes chunks `⌊K·I/N⌋ .. ⌊K·(I+1)/N⌋` of the `K` chunks. Shards are contiguous
//!   and in order, so their outputs concatenated are the unsharded output; and every chunk holds
//!   the same texts whether the input is sharded or not, so the vectors are bit for bit the same
//!   (a forward pass only ever sees one chunk's texts).
//! * **Output**: shard `I` of `N` of `emb.jsonl` is `emb-0000I-of-0000N.jsonl`, written atomically
//!   once every chunk is done. Until then each finished chunk is its own file in
//!   `emb-0000I-of-0000N.jsonl.parts/` (atomically written, so a file there is complete), next to
//!   a `job.json` fingerprint of the model, the input slice and the options; a rerun skips the
//!   chunks it finds and refuses a folder left by a different job.

use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use clap::Args;
use npyz::WriterBuilder;

use crate::output::{atomic_write, resolve_format, OutputFormat};

/// Shard `index` of `count` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This worker's shard, `0 ..= count − 1`.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("`{s}`: expected I/N with 0 ≤ I < N (0-based shard index, e.g. 0/4)");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Text positions of this shard among `total`, cut at multiples of `chunk` texts.
    pub fn range(&self, total: usize, chunk: usize) -> Range<usize> {
        let chunks = total.div_ceil(chunk) as u128;
        let edge = |i: usize| {
            let c = (chunks * i as u128 / self.count as u128) as usize;
            (c * chunk).min(total)
        };
        edge(self.index)..edge(self.index + 1)
    }

    /// `dir/emb.jsonl` → `dir/emb-00002-of-00003.jsonl`.
    pub fn output_path(&self, output: &Path) -> PathBuf {
        let stem = output
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let name = match output.extension() {
            Some(ext) => format!(
                "{stem}-{:05}-of-{:05}.{}",
                self.index,
                self.count,
                ext.to_string_lossy()
            ),
            None => format!("{stem}-{:05}-of-{:05}", self.index, self.count),
        };
        output.with_file_name(name)
    }
}

/// The finished chunks of one shard: `<shard output>.parts/`.
pub struct ShardParts {
    dir: PathBuf,
}

impl ShardParts {
    /// Open (or create) the parts folder of `output` for the job `fingerprint`; refuses a
    /// folder written for another job.
    pub fn open(output: &Path, fingerprint: &str) -> Result<Self> {
        let mut name = output.file_name().unwrap_or_default().to_os_string();
        name.push(".parts");
        let dir = output.with_file_name(name);
        let job = dir.join("job.json");
        let expected = serde_json::json!({ "fingerprint": fingerprint }).to_string();
        if dir.is_dir() {
            let found = fs::read_to_string(&job).unwrap_or_default();
            if found.trim() != expected {
                bail!(
                    "{} holds chunks of a different job (another model, input slice or option); \
                     delete it to start this shard over",
                    dir.display()
                );
            }
        } else {
            fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            atomic_write(&job, |w| Ok(w.write_all(expected.as_bytes())?))?;
        }
        Ok(Self { dir })
    }

    fn chunk_path(&self, chunk: usize) -> PathBuf {
        self.dir.join(format!("chunk-{chunk:010}.jsonl"))
    }

    /// Whether chunk `chunk` (absolute index: positions `chunk·C ..`) is finished.
    pub fn has(&self, chunk: usize) -> bool {
        self.chunk_path(chunk).is_file()
    }

    /// Store a finished chunk as JSONL lines (atomically).
    pub fn write(&self, chunk: usize, lines: &[u8]) -> Result<()> {
        atomic_write(&self.chunk_path(chunk), |w| Ok(w.write_all(lines)?))
    }

    /// Write the shard's output from chunks `chunks` (all finished) in `format`, then remove
    /// the parts folder.
    pub fn finish(self, chunks: Range<usize>, output: &Path, format: OutputFormat) -> Result<()> {
        let paths: Vec<PathBuf> = chunks.map(|c| self.chunk_path(c)).collect();
        if let Some(missing) = paths.iter().find(|p| !p.is_file()) {
            bail!(
                "{} is missing: the shard is not finished",
                missing.display()
            );
        }
        match resolve_format(format, Some(output))? {
            OutputFormat::Npy => {
                let rows = read_jsonl_rows(&paths)?;
                let dim = rows.first().map_or(0, Vec::len);
                atomic_write(output, |w| {
                    let mut npy = npyz::WriteOptions::<f32>::new()
                        .default_dtype()
                        .shape(&[rows.len() as u64, dim as u64])
                        .writer(w)
                        .begin_nd()?;
                    for row in &rows {
                        npy.extend(row.iter().copied())?;
                    }
                    npy.finish()?;
                    Ok(())
                })?;
            }
            _ => atomic_write(output, |w| concatenate(&paths, w))?,
        }
        fs::remove_dir_all(&self.dir)
            .with_context(|| format!("cannot remove {}", self.dir.display()))
    }
}

/// The `embedding` arrays of JSONL files' lines, in order.
fn read_jsonl_rows(paths: &[PathBuf]) -> Result<Vec<Vec<f32>>> {
    let mut rows = Vec::new();
    for path in paths {
        let file =
            fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        for (n, line) in BufReader::new(file).lines().enumerate() {
            let line = line.with_context(|| format!("cannot read {}", path.display()))?;
            let v: serde_json::Value = serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: malformed JSON", path.display(), n + 1))?;
            let row = v
                .get("embedding")
                .and_then(|e| e.as_array())
                .and_then(|a| a.iter().map(|x| x.as_f64().map(|x| x as f32)).collect())
                .with_context(|| format!("{}:{}: no `embedding` array", path.display(), n + 1))?;
            rows.push(row);
        }
    }
    Ok(rows)
}

fn concatenate(paths: &[PathBuf], w: &mut dyn Write) -> Result<()> {
    for path in paths {
        let mut file =
            fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        std::io::copy(&mut file, w).with_context(|| format!("cannot copy {}", path.display()))?;
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct MergeShardsArgs {
    /// The output `qzhou embed --shard` was given (`emb.jsonl` joins `emb-*-of-N.jsonl`); the
    /// joined file is written there, atomically.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Remove the shard files once joined.
    #[arg(long)]
    pub remove_shards: bool,
}

/// `qzhou merge-shards`: check that every shard of one run is there and join them in order.
pub fn merge(args: MergeShardsArgs) -> Result<()> {
    let output = &args.output;
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let stem = output
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let ext = output.extension().map(|e| e.to_string_lossy().to_string());
    let mut found: Vec<Shard> = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().to_string();
        if let Some(shard) = parse_shard_name(&name, &stem, ext.as_deref()) {
            found.push(shard);
        }
    }
    let Some(count) = found.iter().map(|s| s.count).max() else {
        let ext = ext.map(|e| format!(".{e}")).unwrap_or_default();
        bail!(
            "no shard files {stem}-IIIII-of-NNNNN{ext} in {}",
            dir.display()
        );
    };
    if let Some(other) = found.iter().find(|s| s.count != count) {
        bail!(
            "shard files of two runs: some are of {} shards, some of {count}; remove the stale ones",
            other.count
        );
    }
    let missing: Vec<String> = (0..count)
        .filter(|&i| !found.contains(&Shard { index: i, count }))
        .map(|i| i.to_string())
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} of {count} shards missing (not finished or not run): {}",
            missing.len(),
            missing.join(", ")
        );
    }
    let paths: Vec<PathBuf> = (0..count)
        .map(|index| Shard { index, count }.output_path(output))
        .collect();
    match resolve_format(OutputFormat::Auto, Some(output))? {
        OutputFormat::Npy => merge_npy(&paths, output)?,
        _ => atomic_write(output, |w| concatenate(&paths, w))?,
    }
    if args.remove_shards {
        for p in &paths {
            fs::remove_file(p).with_context(|| format!("cannot remove {}", p.display()))?;
        }
    }
    eprintln!("joined {count} shards into {}", output.display());
    Ok(())
}

/// `emb-00002-of-00003.jsonl` for stem `emb`, extension `jsonl` → shard 2/3.
fn parse_shard_name(name: &str, stem: &str, ext: Option<&str>) -> Option<Shard> {
    let rest = name.strip_prefix(stem)?.strip_prefix('-')?;
    let rest = match ext {
        Some(ext) => rest.strip_suffix(ext)?.strip_suffix('.')?,
        None => rest,
    };
    let (i, n) = rest.split_once("-of-")?;
    if i.len() < 5 || n.len() < 5 || !(i.bytes().chain(n.bytes()).all(|b| b.is_ascii_digit())) {
        return None;
    }
    let shard = Shard {
        index: i.parse().ok()?,
        count: n.parse().ok()?,
    };
    (shard.index < shard.count).then_some(shard)
}

/// Join `.npy` matrices `[rows_i, dim]` into one `[Σ rows_i, dim]`, one shard in memory at a time.
fn merge_npy(paths: &[PathBuf], output: &Path) -> Result<()> {
    let mut total = 0u64;
    let mut dim = None;
    for p in paths {
        let shape = npy_shape(p)?;
        let [rows, d] = shape[..] else {
            bail!("{}: not a 2-D array (shape {shape:?})", p.display());
        };
        match dim {
            Some(prev) if prev != d && rows > 0 => {
                bail!("{}: {d} columns, the others have {prev}", p.display())
            }
            None if rows > 0 => dim = Some(d),
            _ => {}
        }
        total += rows;
    }
    atomic_write(output, |w| {
        let mut npy = npyz::WriteOptions::<f32>::new()
            .default_dtype()
            .shape(&[total, dim.unwrap_or(0)])
            .writer(w)
            .begin_nd()?;
        for p in paths {
            let bytes = fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            let values = npyz::NpyFile::new(&bytes[..])
                .and_then(|f| f.into_vec::<f32>())
                .with_context(|| format!("{}: not a float32 .npy", p.display()))?;
            npy.extend(values)?;
        }
        npy.finish()?;
        Ok(())
    })
}

fn npy_shape(path: &Path) -> Result<Vec<u64>> {
    let file = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let header = npyz::NpyHeader::from_reader(BufReader::new(file))
        .with_context(|| format!("{}: not an .npy file", path.display()))?;
    Ok(header.shape().to_vec())
}

/// The JSONL lines of a chunk (`qzhou embed`'s own output lines).
pub fn jsonl_lines(ids: &[serde_json::Value], rows: &[Vec<f32>]) -> Result<Vec<u8>> {
    let mut w = BufWriter::new(Vec::new());
    crate::output::write_jsonl(&mut w, ids, rows)?;
    Ok(w.into_inner()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_position_once_in_order_at_chunk_edges() {
        for total in [0, 1, 7, 255, 256, 257, 1000, 10_000] {
            for count in 1..=7 {
                let mut next = 0;
                for index in 0..count {
                    let r = Shard { index, count }.range(total, 256);
                    assert_eq!(r.start, next, "total {total} shard {index}/{count}");
                    assert!(r.start % 256 == 0 || r.start == total);
                    next = r.end;
                }
                assert_eq!(next, total);
            }
        }
        // 1,000 texts in chunks of 256 over 3 shards: chunks 0 | 1 | 2,3.
        let r: Vec<_> = (0..3)
            .map(|index| Shard { index, count: 3 }.range(1000, 256))
            .collect();
        assert_eq!(r, [0..256, 256..512, 512..1000]);
    }

    #[test]
    fn shard_specs_and_names() {
        assert_eq!("2/3".parse::<Shard>(), Ok(Shard { index: 2, count: 3 }));
        for bad in ["3/3", "1/0", "-1/3", "a/3", "2", "2/3/4"] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(e.contains("expected I/N"), "{bad}: {e}");
        }
        let s = Shard { index: 2, count: 3 };
        assert_eq!(
            s.output_path(Path::new("out/emb.jsonl")),
            Path::new("out/emb-00002-of-00003.jsonl")
        );
        assert_eq!(
            parse_shard_name("emb-00002-of-00003.jsonl", "emb", Some("jsonl")),
            Some(s)
        );
        assert_eq!(
            parse_shard_name("emb-00002-of-00003.npy", "emb", Some("jsonl")),
            None
        );
        assert_eq!(
            parse_shard_name("emb-2-of-3.jsonl", "emb", Some("jsonl")),
            None
        );
        assert_eq!(
            parse_shard_name("emb-00003-of-00003.jsonl", "emb", Some("jsonl")),
            None
        );
    }
}
