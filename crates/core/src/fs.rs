//! Loading a model folder from the local file system (feature `fs`, on by default; the web
//! build turns it off and supplies bytes itself).

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::kernels::KernelBackend;

use crate::embedder::{Embedder, LoadOptions, ModelFiles};
use crate::error::{QzhouError, Result};
use crate::sentence_transformers::SentenceTransformersFiles;
use crate::weights::{shard_file_names, ByteSource, Checkpoint, SafetensorsFile};

/// A file read with positioned reads (no seek state, no full read into memory).
pub struct FileSource {
    name: String,
    file: File,
    len: u64,
}

impl FileSource {
    /// Open `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|e| io_error(path, e))?;
        let len = file
            .metadata()
            .map_err(|e| QzhouError::Io {
                name: name.clone(),
                source: e,
            })?
            .len();
        Ok(Self { name, file, len })
    }
}

fn io_error(path: &Path, e: std::io::Error) -> QzhouError {
    if e.kind() == std::io::ErrorKind::NotFound {
        QzhouError::MissingFile(path.display().to_string())
    } else {
        QzhouError::Io {
            name: path.display().to_string(),
            source: e,
        }
    }
}

impl ByteSource for FileSource {
    fn name(&self) -> &str {
        &self.name
    }
    fn len(&self) -> u64 {
        self.len
    }
    #[cfg(unix)]
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
    }
    #[cfg(windows)]
    fn read_exact_at(&self, mut offset: u64, mut buf: &mut [u8]) -> std::io::Result<()> {
        use std::os::windows::fs::FileExt;
        while !buf.is_empty() {
            let n = self.file.seek_read(buf, offset)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf = &mut buf[n..];
            offset += n as u64;
        }
        Ok(())
    }
}

/// `dir/name`; a missing file is [`QzhouError::MissingFile`].
pub fn read_required(dir: &Path, name: &str) -> Result<Vec<u8>> {
    let p = dir.join(name);
    std::fs::read(&p).map_err(|e| io_error(&p, e))
}

/// The file at `path`, or `None` when it does not exist.
pub fn read_optional(path: PathBuf) -> Result<Option<Vec<u8>>> {
    match std::fs::read(&path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(QzhouError::Io {
            name: path.display().to_string(),
            source: e,
        }),
    }
}

/// Open the checkpoint of a folder: `model.safetensors`, or the shards listed by
/// `model.safetensors.index.json`. Only headers are read.
pub fn open_checkpoint(dir: &Path) -> Result<Checkpoint> {
    let index = dir.join("model.safetensors.index.json");
    let names = match read_optional(index)? {
        Some(bytes) => shard_file_names(&bytes)?,
        None => {
            if !dir.join("model.safetensors").exists() {
                return Err(QzhouError::MissingFile(format!(
                    "{} (and no model.safetensors.index.json)",
                    dir.join("model.safetensors").display()
                )));
            }
            vec!["model.safetensors".to_string()]
        }
    };
    let files = names
        .iter()
        .map(|n| {
            Ok(SafetensorsFile::open(Box::new(FileSource::open(
                &dir.join(n),
            )?))?)
        })
        .collect::<Result<Vec<_>>>()?;
    Checkpoint::new(files)
}

impl ModelFiles {
    /// Gather a model folder: `config.json`, `tokenizer.json`, safetensors weights and the
    /// optional sentence-transformers files.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(QzhouError::MissingFile(format!(
                "{} (model folder)",
                dir.display()
            )));
        }
        Ok(Self {
            config: read_required(dir, "config.json")?,
            tokenizer: read_required(dir, "tokenizer.json")?,
            weights: Box::new(open_checkpoint(dir)?),
            sentence_transformers: SentenceTransformersFiles::gather(|name| {
                read_optional(dir.join(name))
            })?,
        })
    }
}

impl<B: KernelBackend> Embedder<B> {
    /// Load a model folder onto `device`.
    pub fn from_dir(
        dir: impl AsRef<Path>,
        device: &B::Device,
        options: &LoadOptions,
    ) -> Result<Self> {
        Self::from_files(ModelFiles::from_dir(dir)?, device, options)
    }
}
