//! Loading a model folder from the local file system (feature `fs`, on by default; the web
//! build turns it off and supplies bytes itself).

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::kernels::KernelBackend;

use crate::embedder::{Embedder, LoadOptions, ModelFiles};
use crate::error::{QzhouError, Result};
use crate::gguf::qwen::{self, QwenGgufTensors};
use crate::gguf::GgufFile;
use crate::sentence_transformers::SentenceTransformersFiles;
use crate::weight_pack::{PackManifest, WeightPack};
use crate::weights::{
    is_plain_file_name, shard_file_names, ByteSource, Checkpoint, SafetensorsFile,
};

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
    /// optional sentence-transformers files. Two single-file forms are accepted too: a web
    /// pack's `manifest-*.json` (its folder as `qzhou export-web` wrote it; q8/q4 weights are
    /// dequantised on load) and a Qwen2/Qwen3 `.gguf` (config and tokenizer from its metadata,
    /// see [`crate::gguf::qwen`]).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if dir.is_file() {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            if name.ends_with(".gguf") {
                return Self::from_gguf(dir);
            }
            if name.ends_with(".json") {
                return Self::from_pack_manifest(dir);
            }
            return Err(QzhouError::InvalidOption(format!(
                "{}: a model is a folder, a web pack's manifest-*.json or a .gguf file",
                dir.display()
            )));
        }
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

impl ModelFiles {
    /// A web weight pack: the manifest at `path`, its weight files (sizes and SHA-256 checked)
    /// and the assets beside it.
    pub fn from_pack_manifest(path: &Path) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
        let manifest = PackManifest::from_json(&bytes, &path.display().to_string())?;
        // Weight files are read a tensor part at a time (a 7B q4 pack is ~5 GB).
        let files = manifest
            .files
            .iter()
            .map(|f| {
                if !is_plain_file_name(&f.name) {
                    return Err(QzhouError::Pack(format!(
                        "weight file name `{}` must be a plain file name",
                        f.name
                    )));
                }
                Ok(Box::new(FileSource::open(&dir.join(&f.name))?) as Box<dyn ByteSource>)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config: read_required(dir, "config.json")?,
            tokenizer: read_required(dir, "tokenizer.json")?,
            weights: Box::new(WeightPack::from_sources(manifest, files)?),
            sentence_transformers: SentenceTransformersFiles::gather(|name| {
                read_optional(dir.join(name))
            })?,
        })
    }

    /// A llama.cpp GGUF of a Qwen2/Qwen3 model: `config.json` from its metadata, the tokenizer
    /// rebuilt from its vocabulary, tensors dequantised to `f32` as they load.
    pub fn from_gguf(path: &Path) -> Result<Self> {
        let gguf = GgufFile::open(Box::new(FileSource::open(path)?))?;
        let config = serde_json::to_vec(&qwen::config_json(&gguf, "float32")?.0)
            .map_err(|e| QzhouError::Config(e.to_string()))?;
        let tokenizer = serde_json::to_vec(&qwen::tokenizer_json(&gguf)?)
            .map_err(|e| QzhouError::Tokenizer(e.to_string()))?;
        Ok(Self {
            config,
            tokenizer,
            weights: Box::new(QwenGgufTensors::new(gguf)?),
            sentence_transformers: SentenceTransformersFiles::default(),
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
