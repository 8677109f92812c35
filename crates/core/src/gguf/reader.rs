//! The GGUF container (llama.cpp's `gguf.md`, versions 2 and 3): header, metadata key/values,
//! tensor infos, and each tensor's data read on demand and dequantised to `f32`.
//!
//! Every count, length and offset read from the file is checked against the bytes that remain
//! before anything is allocated for it, so a truncated or hostile file is an error naming the
//! file and the field, never a panic or an allocation larger than the file.

use std::collections::BTreeMap;

use crate::error::{QzhouError, Result};
use crate::weights::ByteSource;

use super::block_types::GgmlType;

/// `GGUF` as a little-endian u32.
const MAGIC: u32 = 0x4655_4747;
/// Data alignment when `general.alignment` is absent.
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most 4 dimensions.
const MAX_DIMS: u32 = 4;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// Any unsigned integer type (u8, u16, u32, u64).
    Uint(u64),
    /// Any signed integer type (i8, i16, i32, i64).
    Int(i64),
    /// f32 or f64.
    Float(f64),
    /// bool.
    Bool(bool),
    /// UTF-8 string.
    Str(String),
    /// Array of values (each of one type).
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::Uint(v) => Some(v),
            Self::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    /// The value as a float, if it is numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::Float(v) => Some(v),
            Self::Uint(v) => Some(v as f64),
            Self::Int(v) => Some(v as f64),
            _ => None,
        }
    }
    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Where one tensor lives in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensorInfo {
    /// Name in the GGUF (llama.cpp naming, e.g. `blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the contiguous (innermost) one.
    pub dims: Vec<u64>,
    /// Storage type; `Err(name)` for a type this reader cannot dequantise.
    pub ggml_type: std::result::Result<GgmlType, String>,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    /// Bytes of data (0 when the type is unreadable).
    pub n_bytes: u64,
}

impl GgufTensorInfo {
    /// Number of values.
    pub fn n_values(&self) -> u64 {
        self.dims.iter().product()
    }
    /// Row-major shape in PyTorch/HF order (the ggml dims reversed).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// A parsed GGUF file: metadata and tensor infos; data is read per tensor on demand.
pub struct GgufFile {
    source: Box<dyn ByteSource>,
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata by key.
    pub metadata: BTreeMap<String, GgufValue>,
    /// Tensor infos in file order.
    pub tensors: Vec<GgufTensorInfo>,
}

/// Sequential little-endian reads over a [`ByteSource`] through a buffer.
struct Cursor<'a> {
    source: &'a dyn ByteSource,
    pos: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

impl<'a> Cursor<'a> {
    const CHUNK: usize = 1 << 20;

    fn new(source: &'a dyn ByteSource) -> Self {
        Self {
            source,
            pos: 0,
            buf: Vec::new(),
            buf_start: 0,
        }
    }

    fn err(&self, reason: impl Into<String>) -> QzhouError {
        QzhouError::Gguf {
            file: self.source.name().to_string(),
            reason: reason.into(),
        }
    }

    fn remaining(&self) -> u64 {
        self.source.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes; `what` names the field in the error for a short file.
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8]> {
        if (n as u64) > self.remaining() {
            return Err(self.err(format!(
                "truncated: {what} needs {n} bytes at offset {}, the file has {} bytes",
                self.pos,
                self.source.len()
            )));
        }
        let buf_end = self.buf_start + self.buf.len() as u64;
        if self.pos < self.buf_start || self.pos + n as u64 > buf_end {
            let len = (n.max(Self::CHUNK) as u64).min(self.remaining()) as usize;
            self.buf.resize(len, 0);
            self.source
                .read_exact_at(self.pos, &mut self.buf)
                .map_err(|e| QzhouError::Io {
                    name: self.source.name().to_string(),
                    source: e,
                })?;
            self.buf_start = self.pos;
        }
        let at = (self.pos - self.buf_start) as usize;
        self.pos += n as u64;
        Ok(&self.buf[at..at + n])
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        if len > self.remaining() {
            return Err(self.err(format!(
                "{what}: string length {len} runs past the end of the file"
            )));
        }
        let bytes = self.take(len as usize, what)?.to_vec();
        String::from_utf8(bytes).map_err(|_| self.err(format!("{what}: string is not UTF-8")))
    }

    /// A value of GGUF value type `ty`; `depth` bounds nested arrays.
    fn value(&mut self, ty: u32, what: &str, depth: u32) -> Result<GgufValue> {
        Ok(match ty {
            0 => GgufValue::Uint(self.u8(what)? as u64),
            1 => GgufValue::Int(self.u8(what)? as i8 as i64),
            2 => GgufValue::Uint(self.u16(what)? as u64),
            3 => GgufValue::Int(self.u16(what)? as i16 as i64),
            4 => GgufValue::Uint(self.u32(what)? as u64),
            5 => GgufValue::Int(self.u32(what)? as i32 as i64),
            6 => GgufValue::Float(f32::from_bits(self.u32(what)?) as f64),
            7 => match self.u8(what)? {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(self.err(format!("{what}: bool byte {b} is neither 0 nor 1"))),
            },
            8 => GgufValue::Str(self.string(what)?),
            9 => {
                if depth >= 2 {
                    return Err(self.err(format!("{what}: arrays nested deeper than 2")));
                }
                let item_ty = self.u32(what)?;
                let n = self.u64(what)?;
                // Every item takes at least one byte: a count beyond the remaining bytes is a lie.
                if n > self.remaining() {
                    return Err(self.err(format!(
                        "{what}: array of {n} items runs past the end of the file"
                    )));
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(item_ty, what, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::Uint(self.u64(what)?),
            11 => GgufValue::Int(self.u64(what)? as i64),
            12 => GgufValue::Float(f64::from_bits(self.u64(what)?)),
            other => return Err(self.err(format!("{what}: unknown value type {other}"))),
        })
    }
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("name", &self.source.name())
            .field("version", &self.version)
            .field("metadata keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Parse the header, metadata and tensor infos of `source`.
    pub fn open(source: Box<dyn ByteSource>) -> Result<Self> {
        let mut c = Cursor::new(source.as_ref());
        let magic = c.u32("magic")?;
        if magic != MAGIC {
            return Err(c.err(format!(
                "not a GGUF file (starts with {:02x?}, expected \"GGUF\")",
                magic.to_le_bytes()
            )));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(c.err(format!(
                "GGUF version {version} is not supported (2 and 3 are)"
            )));
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata count")?;
        // A key/value pair takes at least 13 bytes, a tensor info at least 24.
        if n_kv.saturating_mul(13) > c.remaining() || n_tensors.saturating_mul(24) > c.remaining() {
            return Err(c.err(format!(
                "{n_kv} metadata entries and {n_tensors} tensors cannot fit in {} bytes",
                c.source.len()
            )));
        }
        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = c.string(&format!("metadata key #{i}"))?;
            let ty = c.u32(&key)?;
            let value = c.value(ty, &key, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(c.err(format!("metadata key `{key}` appears twice")));
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
                _ => return Err(c.err(format!("general.alignment {v:?} is not a power of two"))),
            },
        };
        let mut raw = Vec::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let name = c.string(&format!("tensor #{i} name"))?;
            let n_dims = c.u32(&name)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(c.err(format!(
                    "tensor `{name}` has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"
                )));
            }
            let dims = (0..n_dims)
                .map(|_| c.u64(&name))
                .collect::<Result<Vec<u64>>>()?;
            let ty = c.u32(&name)?;
            let offset = c.u64(&name)?;
            raw.push((name, dims, ty, offset));
        }
        let data_start = c.pos.div_ceil(alignment) * alignment;
        let file_len = source.len();
        let mut tensors = Vec::with_capacity(raw.len());
        let mut seen = std::collections::HashSet::new();
        for (name, dims, ty, offset) in raw {
            let bad = |reason: String| QzhouError::Gguf {
                file: source.name().to_string(),
                reason: format!("tensor `{name}`: {reason}"),
            };
            if !seen.insert(name.clone()) {
                return Err(bad("appears twice".into()));
            }
            let n_values = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .filter(|&n| n > 0)
                .ok_or_else(|| bad(format!("dimensions {dims:?} are zero or overflow")))?;
            if offset % alignment != 0 {
                return Err(bad(format!(
                    "data offset {offset} is not a multiple of the alignment {alignment}"
                )));
            }
            let ggml_type = GgmlType::from_id(ty);
            let n_bytes = match ggml_type {
                Ok(t) => {
                    if dims[0] % t.block_len() as u64 != 0 {
                        return Err(bad(format!(
                            "rows of {} values are not whole {t} blocks of {}",
                            dims[0],
                            t.block_len()
                        )));
                    }
                    t.bytes_for(n_values)
                        .ok_or_else(|| bad("size overflows".into()))?
                }
                Err(_) => 0,
            };
            let abs = data_start
                .checked_add(offset)
                .filter(|&a| a.checked_add(n_bytes).is_some_and(|end| end <= file_len))
                .ok_or_else(|| {
                    bad(format!(
                        "data ({n_bytes} bytes at offset {offset} after byte {data_start}) runs past the end of the {file_len}-byte file (truncated?)"
                    ))
                })?;
            tensors.push(GgufTensorInfo {
                name,
                dims,
                ggml_type,
                offset: abs,
                n_bytes,
            });
        }
        drop(c);
        Ok(Self {
            source,
            version,
            metadata,
            tensors,
        })
    }

    /// Label of the underlying source.
    pub fn name(&self) -> &str {
        self.source.name()
    }

    /// The info of tensor `name`.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// The values of `info`, dequantised to `f32`, row-major (ggml dims reversed).
    pub fn read_f32(&self, info: &GgufTensorInfo) -> Result<Vec<f32>> {
        let ty = info.ggml_type.clone().map_err(|type_name| {
            QzhouError::Gguf {
                file: self.name().to_string(),
                reason: format!(
                    "tensor `{}` is stored as {type_name}, which this reader cannot dequantise (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)",
                    info.name
                ),
            }
        })?;
        let mut out = vec![0f32; info.n_values() as usize];
        // Dequantise in slices of whole blocks so only a slice of raw bytes is held at once.
        let per_slice_blocks = (1usize << 22) / ty.block_bytes();
        let values_per_slice = per_slice_blocks * ty.block_len();
        let mut raw = vec![0u8; per_slice_blocks * ty.block_bytes()];
        let mut pos = info.offset;
        for y in out.chunks_mut(values_per_slice) {
            let n_bytes = y.len() / ty.block_len() * ty.block_bytes();
            let raw = &mut raw[..n_bytes];
            self.source
                .read_exact_at(pos, raw)
                .map_err(|e| QzhouError::Io {
                    name: self.name().to_string(),
                    source: e,
                })?;
            ty.dequantize(raw, y);
            pos += n_bytes as u64;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::MemorySource;

    /// A GGUF v3 writer for tests: metadata as (key, type, payload) and tensors as
    /// (name, ggml dims, type id, data).
    fn build(kv: &[(&str, u32, Vec<u8>)], tensors: &[(&str, Vec<u64>, u32, Vec<u8>)]) -> Vec<u8> {
        let s = |v: &mut Vec<u8>, t: &str| {
            v.extend((t.len() as u64).to_le_bytes());
            v.extend(t.as_bytes());
        };
        let mut f = Vec::new();
        f.extend(MAGIC.to_le_bytes());
        f.extend(3u32.to_le_bytes());
        f.extend((tensors.len() as u64).to_le_bytes());
        f.extend((kv.len() as u64).to_le_bytes());
        for (k, ty, payload) in kv {
            s(&mut f, k);
            f.extend(ty.to_le_bytes());
            f.extend(payload);
        }
        let mut offset = 0u64;
        let mut data = Vec::new();
        for (name, dims, ty, bytes) in tensors {
            s(&mut f, name);
            f.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                f.extend(d.to_le_bytes());
            }
            f.extend(ty.to_le_bytes());
            f.extend(offset.to_le_bytes());
            data.extend(bytes);
            while data.len() % 32 != 0 {
                data.push(0);
            }
            offset = data.len() as u64;
        }
        while f.len() % 32 != 0 {
            f.push(0);
        }
        f.extend(data);
        f
    }

    fn string(t: &str) -> Vec<u8> {
        let mut v = (t.len() as u64).to_le_bytes().to_vec();
        v.extend(t.as_bytes());
        v
    }

    fn open(bytes: Vec<u8>) -> Result<GgufFile> {
        GgufFile::open(Box::new(MemorySource::new("test.gguf", bytes)))
    }

    fn sample() -> Vec<u8> {
        let mut tokens = 8u32.to_le_bytes().to_vec(); // items are strings
        tokens.extend(2u64.to_le_bytes());
        tokens.extend(string("a"));
        tokens.extend(string("Ġb"));
        // Q8_0 block: d = 0.5 (f16 0x3800), values -3..28.
        let mut q8 = vec![0x00, 0x38];
        q8.extend((0..32).map(|i| (i as i8 - 3) as u8));
        let f32s: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        build(
            &[
                ("general.architecture", 8, string("qwen2")),
                ("qwen2.block_count", 4, 24u32.to_le_bytes().to_vec()),
                ("qwen2.rope.freq_base", 6, 1e6f32.to_le_bytes().to_vec()),
                ("tokenizer.ggml.add_bos_token", 7, vec![0]),
                ("tokenizer.ggml.tokens", 9, tokens),
            ],
            &[
                ("blk.0.attn_q.weight", vec![32, 1], 8, q8),
                ("output_norm.weight", vec![2], 0, f32s),
            ],
        )
    }

    #[test]
    fn reads_metadata_and_tensors() {
        let g = open(sample()).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(
            g.get("general.architecture").and_then(GgufValue::as_str),
            Some("qwen2")
        );
        assert_eq!(
            g.get("qwen2.block_count").and_then(GgufValue::as_u64),
            Some(24)
        );
        assert_eq!(
            g.get("qwen2.rope.freq_base").and_then(GgufValue::as_f64),
            Some(1e6)
        );
        assert_eq!(
            g.get("tokenizer.ggml.add_bos_token"),
            Some(&GgufValue::Bool(false))
        );
        assert_eq!(
            g.get("tokenizer.ggml.tokens"),
            Some(&GgufValue::Array(vec![
                GgufValue::Str("a".into()),
                GgufValue::Str("Ġb".into())
            ]))
        );
        let q = g.tensor("blk.0.attn_q.weight").unwrap();
        assert_eq!(q.shape(), vec![1, 32]);
        let values = g.read_f32(q).unwrap();
        let expected: Vec<f32> = (0..32).map(|i| (i - 3) as f32 * 0.5).collect();
        assert_eq!(values, expected);
        let norm = g.tensor("output_norm.weight").unwrap();
        assert_eq!(g.read_f32(norm).unwrap(), vec![1.5, -2.0]);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let full = sample();
        for len in 0..full.len() - 1 {
            let Err(e) = open(full[..len].to_vec()) else {
                // Cutting only the final tensor's alignment padding leaves a valid file.
                assert!(len >= full.len() - 24, "{len} bytes parsed");
                continue;
            };
            let msg = e.to_string();
            assert!(msg.starts_with("test.gguf: "), "{msg}");
            assert!(
                ["truncated", "past the end", "cannot fit"]
                    .iter()
                    .any(|w| msg.contains(w)),
                "{len}: {msg}"
            );
        }
    }

    #[test]
    fn hostile_headers_are_refused_without_allocating() {
        let mut bad_magic = sample();
        bad_magic[0] = b'X';
        assert!(open(bad_magic)
            .unwrap_err()
            .to_string()
            .contains("not a GGUF file"));
        let mut v1 = sample();
        v1[4] = 1;
        assert!(open(v1).unwrap_err().to_string().contains("version 1"));
        let mut many = sample();
        many[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(open(many).unwrap_err().to_string().contains("cannot fit"));
        // A string whose length runs past the end.
        let huge_string = build(&[("k", 8, u64::MAX.to_le_bytes().to_vec())], &[]);
        assert!(open(huge_string)
            .unwrap_err()
            .to_string()
            .contains("past the end"));
        // An array claiming 2^40 items.
        let mut arr = 4u32.to_le_bytes().to_vec();
        arr.extend((1u64 << 40).to_le_bytes());
        let huge_array = build(&[("k", 9, arr)], &[]);
        assert!(open(huge_array)
            .unwrap_err()
            .to_string()
            .contains("past the end"));
        // Dimensions that overflow u64, or data past the end of the file.
        let overflow = build(&[], &[("t", vec![1 << 40, 1 << 40], 0, vec![])]);
        assert!(open(overflow).unwrap_err().to_string().contains("overflow"));
        let past = build(&[], &[("t", vec![1024], 0, vec![0; 16])]);
        assert!(open(past).unwrap_err().to_string().contains("past the end"));
        let dup = build(
            &[],
            &[("t", vec![1], 0, vec![0; 4]), ("t", vec![1], 0, vec![0; 4])],
        );
        assert!(open(dup).unwrap_err().to_string().contains("appears twice"));
        let ragged = build(&[], &[("t", vec![33], 8, vec![0; 64])]);
        assert!(open(ragged)
            .unwrap_err()
            .to_string()
            .contains("whole Q8_0 blocks"));
    }

    #[test]
    fn an_unreadable_tensor_type_is_named_when_read() {
        let g = open(build(
            &[],
            &[("blk.0.ffn_up.weight", vec![256], 10, vec![0; 84])],
        ))
        .unwrap();
        let t = &g.tensors[0];
        let msg = g.read_f32(t).unwrap_err().to_string();
        assert!(
            msg.contains("blk.0.ffn_up.weight") && msg.contains("Q2_K"),
            "{msg}"
        );
        let g = open(build(&[], &[("t", vec![4], 77, vec![0; 4])])).unwrap();
        let msg = g.read_f32(&g.tensors[0]).unwrap_err().to_string();
        assert!(msg.contains("type 77"), "{msg}");
    }
}
