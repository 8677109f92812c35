//! Streaming reader for HF safetensors checkpoints (single file or sharded).
//!
//! Only headers are parsed up front; each tensor is read on demand straight into the `f32`
//! buffer that becomes the model parameter, so loading never holds a second full copy of the
//! checkpoint. Bytes come from a [`ByteSource`]: a file (see `crate::fs`), an in-memory buffer,
//! or anything else that supports positioned reads (the web crate feeds fetched buffers).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use safetensors::tensor::Metadata;
use safetensors::Dtype;
use serde::Deserialize;

use crate::error::{QzhouError, Result};

/// Random-access bytes with a name for error messages.
pub trait ByteSource: Send + Sync {
    /// File name or other label shown in errors.
    fn name(&self) -> &str;
    /// Total length in bytes.
    fn len(&self) -> u64;
    /// Fill `buf` with the bytes starting at `offset`.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
    /// Whether the source is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A byte buffer already in memory.
pub struct MemorySource {
    name: String,
    bytes: Arc<[u8]>,
}

impl MemorySource {
    /// Wrap `bytes` under the label `name`.
    pub fn new(name: impl Into<String>, bytes: impl Into<Arc<[u8]>>) -> Self {
        Self {
            name: name.into(),
            bytes: bytes.into(),
        }
    }
}

impl ByteSource for MemorySource {
    fn name(&self) -> &str {
        &self.name
    }
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(std::io::Error::other)?;
        let end = start
            .checked_add(buf.len())
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "read past the end of the buffer",
                )
            })?;
        buf.copy_from_slice(&self.bytes[start..end]);
        Ok(())
    }
}

/// One safetensors file: its parsed header and where its data starts.
pub struct SafetensorsFile {
    source: Box<dyn ByteSource>,
    data_start: u64,
    metadata: Metadata,
}

/// Largest header we accept (the safetensors crate uses the same 100 MB bound).
const MAX_HEADER: u64 = 100_000_000;

impl SafetensorsFile {
    /// Parse the header of `source`; fails with the file name on any inconsistency.
    pub fn open(source: Box<dyn ByteSource>) -> Result<Self> {
        let bad = |reason: String| QzhouError::Safetensors {
            file: source.name().to_string(),
            reason,
        };
        let io = |e: std::io::Error| QzhouError::Io {
            name: source.name().to_string(),
            source: e,
        };
        let total = source.len();
        if total < 8 {
            return Err(bad(format!(
                "only {total} bytes; a header needs at least 8"
            )));
        }
        let mut len_bytes = [0u8; 8];
        source.read_exact_at(0, &mut len_bytes).map_err(io)?;
        let n = u64::from_le_bytes(len_bytes);
        if n > MAX_HEADER || n + 8 > total {
            return Err(bad(format!(
                "header length {n} does not fit a {total}-byte file"
            )));
        }
        let mut header = vec![0u8; n as usize];
        source.read_exact_at(8, &mut header).map_err(io)?;
        let metadata: Metadata =
            serde_json::from_slice(&header).map_err(|e| bad(format!("bad header: {e}")))?;
        let data_len = metadata.data_len() as u64;
        if 8 + n + data_len != total {
            return Err(bad(format!(
                "header describes {data_len} data bytes but the file holds {}",
                total - 8 - n
            )));
        }
        Ok(Self {
            source,
            data_start: 8 + n,
            metadata,
        })
    }

    /// Label of the underlying source.
    pub fn name(&self) -> &str {
        self.source.name()
    }

    /// Tensor names in this file.
    pub fn tensor_names(&self) -> Vec<String> {
        self.metadata.offset_keys()
    }
}

/// Where the shards of a sharded checkpoint are: `model.safetensors.index.json`.
#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

/// Whether `name` names a file inside its folder: no path separator, not hidden, not `..`
/// (file names read from an index or manifest must not reach outside the model folder).
pub(crate) fn is_plain_file_name(name: &str) -> bool {
    !(name.contains('/') || name.contains('\\') || name.starts_with('.'))
}

/// File names listed by a `model.safetensors.index.json`, each once, in sorted order.
pub fn shard_file_names(index_json: &[u8]) -> Result<Vec<String>> {
    let index: ShardIndex =
        serde_json::from_slice(index_json).map_err(|e| QzhouError::ShardIndex(e.to_string()))?;
    let mut files: Vec<String> = index.weight_map.into_values().collect();
    files.sort();
    files.dedup();
    if files.is_empty() {
        return Err(QzhouError::ShardIndex("`weight_map` is empty".into()));
    }
    if let Some(f) = files.iter().find(|f| !is_plain_file_name(f)) {
        return Err(QzhouError::ShardIndex(format!(
            "shard name `{f}` must be a plain file name"
        )));
    }
    Ok(files)
}

/// Storage dtype of a tensor as the loader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredDtype {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// Block-quantised 8-bit (web weight packs, see [`crate::quantization`]).
    Q8,
    /// Block-quantised 4-bit (web weight packs, see [`crate::quantization`]).
    Q4,
    /// Block-quantised 4-bit with 16-value sub-blocks and coded parameters (web weight packs'
    /// embedding tables, see [`crate::quantization`]).
    Q4K,
}

/// Named tensors that the model loader reads one at a time as `f32`: a safetensors
/// [`Checkpoint`], a web [`crate::weight_pack::WeightPack`], or anything else. `Sync`, so a
/// load can run inside a backend scope that requires `Send` closures
/// ([`crate::KernelBackend::with_persistent_memory`]).
pub trait TensorSource: Sync {
    /// Every tensor name, sorted.
    fn names(&self) -> Vec<String>;
    /// Shape (file layout) and dtype of `name`, without reading its data.
    fn meta(&self, name: &str) -> Option<TensorMeta>;
    /// The values of `name` widened (or dequantised) to `f32`, row-major, with its shape.
    fn read_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)>;
    /// The blocks of a q8/q4-stored tensor as they are (no dequantisation), with its shape;
    /// `None` when `name` is not stored block-quantised. Backends with a fused
    /// dequantise-matmul kernel keep such weights packed on the device.
    fn read_packed(
        &self,
        name: &str,
    ) -> Result<Option<(crate::quantization::PackedBlocks, Vec<usize>)>> {
        let _ = name;
        Ok(None)
    }
}

impl TensorSource for Checkpoint {
    fn names(&self) -> Vec<String> {
        Checkpoint::names(self)
    }
    fn meta(&self, name: &str) -> Option<TensorMeta> {
        Checkpoint::meta(self, name)
    }
    fn read_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        Checkpoint::read_f32(self, name)
    }
}

/// Shape and dtype of one stored tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMeta {
    /// Shape in the file's layout.
    pub shape: Vec<usize>,
    /// Storage dtype, or the unsupported dtype's name.
    pub dtype: std::result::Result<StoredDtype, String>,
}

/// All tensors of a checkpoint across its shards, readable one at a time.
pub struct Checkpoint {
    files: Vec<SafetensorsFile>,
    /// Tensor name -> index into `files`.
    location: HashMap<String, usize>,
}

impl Checkpoint {
    /// Combine parsed shards; a tensor present in two shards is an error.
    pub fn new(files: Vec<SafetensorsFile>) -> Result<Self> {
        let mut location: HashMap<String, usize> = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            for name in f.tensor_names() {
                if let Some(&j) = location.get(&name) {
                    return Err(QzhouError::ShardIndex(format!(
                        "tensor `{name}` appears in both {} and {}",
                        files[j].name(),
                        f.name()
                    )));
                }
                location.insert(name, i);
            }
        }
        Ok(Self { files, location })
    }

    /// A checkpoint held in one in-memory safetensors buffer.
    pub fn from_bytes(name: &str, bytes: impl Into<Arc<[u8]>>) -> Result<Self> {
        Self::new(vec![SafetensorsFile::open(Box::new(MemorySource::new(
            name, bytes,
        )))?])
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.location.keys().cloned().collect();
        v.sort();
        v
    }

    /// Whether a tensor of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.location.contains_key(name)
    }

    /// Shape and dtype of `name`, without reading its data.
    pub fn meta(&self, name: &str) -> Option<TensorMeta> {
        let file = &self.files[*self.location.get(name)?];
        let info = file.metadata.info(name)?;
        let dtype = match info.dtype {
            Dtype::F32 => Ok(StoredDtype::F32),
            Dtype::F16 => Ok(StoredDtype::F16),
            Dtype::BF16 => Ok(StoredDtype::BF16),
            other => Err(format!("{other:?}")),
        };
        Some(TensorMeta {
            shape: info.shape.clone(),
            dtype,
        })
    }

    /// Read `name` as little-endian f32 values (converting f16/bf16) with its shape, in the
    /// file's layout.
    /// f32 data lands directly in the returned buffer; half-precision data passes through one
    /// temporary buffer of its own size.
    pub fn read_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let missing = || QzhouError::WeightMismatch {
            missing: vec![name.to_string()],
            unexpected: vec![],
            mis_shaped: vec![],
            bad_dtype: vec![],
        };
        let file = &self.files[*self.location.get(name).ok_or_else(missing)?];
        let info = file.metadata.info(name).ok_or_else(missing)?;
        let (start, end) = info.data_offsets;
        let offset = file.data_start + start as u64;
        let io = |e| QzhouError::Io {
            name: file.name().to_string(),
            source: e,
        };
        let values = match info.dtype {
            Dtype::F32 => {
                let n = (end - start) / 4;
                let mut out = vec![0f32; n];
                file.source
                    .read_exact_at(offset, bytemuck::cast_slice_mut(&mut out))
                    .map_err(io)?;
                if cfg!(target_endian = "big") {
                    for v in &mut out {
                        *v = f32::from_bits(u32::from_le(v.to_bits()));
                    }
                }
                out
            }
            Dtype::F16 | Dtype::BF16 => {
                let mut raw = vec![0u8; end - start];
                file.source.read_exact_at(offset, &mut raw).map_err(io)?;
                let bf16 = info.dtype == Dtype::BF16;
                raw.chunks_exact(2)
                    .map(|c| {
                        let b = [c[0], c[1]];
                        if bf16 {
                            half::bf16::from_le_bytes(b).to_f32()
                        } else {
                            half::f16::from_le_bytes(b).to_f32()
                        }
                    })
                    .collect()
            }
            other => {
                return Err(QzhouError::WeightMismatch {
                    missing: vec![],
                    unexpected: vec![],
                    mis_shaped: vec![],
                    bad_dtype: vec![(name.to_string(), format!("{other:?}"))],
                })
            }
        };
        Ok((values, info.shape.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    fn file(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
        let views: Vec<(String, TensorView)> = tensors
            .iter()
            .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize(views, None).unwrap()
    }

    #[test]
    fn reads_f32_f16_bf16_as_f32() {
        let vals = [1.5f32, -2.25, 0.0, 3.0e-3];
        let f32b: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let f16b: Vec<u8> = vals
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        let bf16b: Vec<u8> = vals
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        let bytes = file(&[
            ("a", Dtype::F32, vec![2, 2], f32b),
            ("b", Dtype::F16, vec![4], f16b),
            ("c", Dtype::BF16, vec![4], bf16b),
        ]);
        let ck = Checkpoint::from_bytes("t.safetensors", bytes).unwrap();
        assert_eq!(ck.read_f32("a").unwrap(), (vals.to_vec(), vec![2, 2]));
        let h: Vec<f32> = vals
            .iter()
            .map(|v| half::f16::from_f32(*v).to_f32())
            .collect();
        assert_eq!(ck.read_f32("b").unwrap(), (h, vec![4]));
        let b: Vec<f32> = vals
            .iter()
            .map(|v| half::bf16::from_f32(*v).to_f32())
            .collect();
        assert_eq!(ck.read_f32("c").unwrap(), (b, vec![4]));
        assert_eq!(ck.meta("a").unwrap().shape, vec![2, 2]);
    }

    #[test]
    fn broken_files_name_the_file() {
        let e = Checkpoint::from_bytes("w.safetensors", vec![1u8, 2, 3])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("w.safetensors") && e.contains("8"), "{e}");
        let mut good = file(&[("a", Dtype::F32, vec![1], 1f32.to_le_bytes().to_vec())]);
        good.pop(); // truncated data
        let e = Checkpoint::from_bytes("w.safetensors", good)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("w.safetensors") && e.contains("data bytes"),
            "{e}"
        );
        let mut junk = 5u64.to_le_bytes().to_vec();
        junk.extend_from_slice(b"{nope");
        let e = Checkpoint::from_bytes("w.safetensors", junk)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("bad header"), "{e}");
    }

    #[test]
    fn shard_index_lists_each_file_once() {
        let j = br#"{"metadata":{"total_size":8},"weight_map":{"a":"m-2.safetensors","b":"m-1.safetensors","c":"m-2.safetensors"}}"#;
        assert_eq!(
            shard_file_names(j).unwrap(),
            vec!["m-1.safetensors", "m-2.safetensors"]
        );
        assert!(shard_file_names(br#"{"weight_map":{"a":"../x"}}"#).is_err());
        assert!(shard_file_names(b"[]")
            .unwrap_err()
            .to_string()
            .starts_with("model.safetensors.index.json"));
    }
}
