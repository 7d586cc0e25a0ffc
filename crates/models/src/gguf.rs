//! GGUF files: a bounds-checked reader (every count and length is checked against the file size
//! before anything is allocated, so a corrupted or hostile file gives an error, never a panic or
//! an out-of-memory abort) and a streaming writer (header first, then tensor data one at a time).
//!
//! Layout (GGUF v2/v3, little-endian): magic `GGUF`, version, tensor count (u64), metadata count
//! (u64), metadata key/values, tensor infos (name, dims innermost-first, ggml type, offset), then
//! tensor data starting at the next multiple of `general.alignment` (default 32).

use crate::{ModelError, Result};
use candle_core::quantized::GgmlDType;
use std::collections::HashMap;

pub const MAGIC: [u8; 4] = *b"GGUF";
pub const VERSION: u32 = 3;
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Longest key or tensor name we accept; real ones are far shorter.
const MAX_NAME: u64 = 65_535;
const MAX_DIMS: u32 = 4;
/// Memory the metadata of one file may take once parsed, counted at its in-memory size (an
/// array item is a whole `MetaValue`, 32 bytes natively, however few bytes it has in the file;
/// strings count their length). Real files need far less: a 256k-token vocabulary with scores,
/// types and merges is about 40 MiB, a whole tokenizer.json in `tokenizer.huggingface.json`
/// a few tens of MiB more.
pub const MAX_METADATA_BYTES: u64 = 128 << 20;
const ITEM_BYTES: u64 = std::mem::size_of::<MetaValue>() as u64;

fn bad(msg: impl Into<String>) -> ModelError {
    ModelError::Weights(format!("GGUF: {}", msg.into()))
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<MetaValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetaValue {
    fn type_id(&self) -> u32 {
        match self {
            Self::U8(_) => 0,
            Self::I8(_) => 1,
            Self::U16(_) => 2,
            Self::I16(_) => 3,
            Self::U32(_) => 4,
            Self::I32(_) => 5,
            Self::F32(_) => 6,
            Self::Bool(_) => 7,
            Self::String(_) => 8,
            Self::Array(_) => 9,
            Self::U64(_) => 10,
            Self::I64(_) => 11,
            Self::F64(_) => 12,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// Any integer type as u64 (negative values are not converted).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// ggml type ids as stored in the file.
pub fn dtype_from_u32(v: u32) -> Option<GgmlDType> {
    Some(match v {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        30 => GgmlDType::BF16,
        _ => return None,
    })
}

pub fn dtype_to_u32(d: GgmlDType) -> u32 {
    match d {
        GgmlDType::F32 => 0,
        GgmlDType::F16 => 1,
        GgmlDType::Q4_0 => 2,
        GgmlDType::Q4_1 => 3,
        GgmlDType::Q5_0 => 6,
        GgmlDType::Q5_1 => 7,
        GgmlDType::Q8_0 => 8,
        GgmlDType::Q8_1 => 9,
        GgmlDType::Q2K => 10,
        GgmlDType::Q3K => 11,
        GgmlDType::Q4K => 12,
        GgmlDType::Q5K => 13,
        GgmlDType::Q6K => 14,
        GgmlDType::Q8K => 15,
        GgmlDType::BF16 => 30,
    }
}

/// Bytes of a tensor of `dims` (any order) in `dtype`, or an error if the shape does not fit the
/// type's blocks or the size overflows.
pub fn tensor_bytes(dims: &[usize], dtype: GgmlDType) -> Result<u64> {
    let elems =
        dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64)).ok_or_else(|| bad("tensor size overflows"))?;
    let inner = *dims.last().unwrap_or(&1) as u64;
    let bs = dtype.block_size() as u64;
    if !inner.is_multiple_of(bs) {
        return Err(bad(format!("rows of {inner} elements do not fit {dtype:?} blocks of {bs}")));
    }
    (elems / bs).checked_mul(dtype.type_size() as u64).ok_or_else(|| bad("tensor size overflows"))
}

/// Where a tensor is in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// PyTorch order (outermost first).
    pub dims: Vec<usize>,
    pub dtype: GgmlDType,
    /// Absolute file offset of the data.
    pub offset: u64,
    pub size: u64,
}

/// Random access to the bytes of a GGUF file.
pub trait ByteSource {
    fn len(&self) -> u64;
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ByteSource for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
        let src = self.get(start..start + buf.len()).ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// A file read with positioned reads (not memory-mapped, so resident memory holds only the
/// tensors as loaded, not a second copy in the page cache mapping).
#[cfg(feature = "mmap")]
pub struct FileSource {
    file: std::fs::File,
    len: u64,
}

#[cfg(feature = "mmap")]
impl FileSource {
    pub fn open(path: &std::path::Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| ModelError::Io(format!("{}: {e}", path.display())))?;
        let len = file.metadata().map_err(|e| ModelError::Io(format!("{}: {e}", path.display())))?.len();
        Ok(Self { file, len })
    }
}

#[cfg(feature = "mmap")]
impl ByteSource for FileSource {
    fn len(&self) -> u64 {
        self.len
    }
    #[cfg(unix)]
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
    }
    #[cfg(windows)]
    fn read_at(&self, mut offset: u64, mut buf: &mut [u8]) -> std::io::Result<()> {
        while !buf.is_empty() {
            let n = std::os::windows::fs::FileExt::seek_read(&self.file, buf, offset)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf = &mut buf[n..];
            offset += n as u64;
        }
        Ok(())
    }
}

/// How far past the bytes it needs the header reader reads at once: a reader handed only a
/// file's header (a pipeline stage's pieces, see `pipeline::stage_byte_ranges_gguf`) must hold
/// this much beyond the header's end.
pub const HEADER_READ_AHEAD: u64 = 1 << 20;

/// A buffered forward reader over a `ByteSource` that refuses lengths beyond the end.
struct Cursor<'a> {
    src: &'a dyn ByteSource,
    pos: u64,
    buf: Vec<u8>,
    buf_start: u64,
    /// Bytes of parsed metadata left to accept (see `MAX_METADATA_BYTES`).
    budget_left: u64,
}

impl<'a> Cursor<'a> {
    fn new(src: &'a dyn ByteSource) -> Self {
        Self { src, pos: 0, buf: Vec::new(), buf_start: 0, budget_left: MAX_METADATA_BYTES }
    }

    fn remaining(&self) -> u64 {
        self.src.len().saturating_sub(self.pos)
    }

    fn bytes(&mut self, n: u64, what: &str) -> Result<&[u8]> {
        if n > self.remaining() {
            return Err(bad(format!(
                "{what} needs {n} bytes at offset {} but the file ends at {}: truncated?",
                self.pos,
                self.src.len()
            )));
        }
        let n = n as usize;
        let in_buf = self.pos >= self.buf_start && self.pos + n as u64 <= self.buf_start + self.buf.len() as u64;
        if !in_buf {
            let want = (n.max(HEADER_READ_AHEAD as usize) as u64).min(self.remaining()) as usize;
            self.buf.resize(want, 0);
            self.src.read_at(self.pos, &mut self.buf).map_err(|e| bad(format!("reading {what}: {e}")))?;
            self.buf_start = self.pos;
        }
        let start = (self.pos - self.buf_start) as usize;
        self.pos += n as u64;
        Ok(&self.buf[start..start + n])
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes(4, what)?.try_into().unwrap()))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes(8, what)?.try_into().unwrap()))
    }

    /// Takes `bytes` of the metadata budget.
    fn charge(&mut self, bytes: u64, what: &str) -> Result<()> {
        self.budget_left = self.budget_left.checked_sub(bytes).ok_or_else(|| {
            bad(format!("{what}: the metadata would take more than {MAX_METADATA_BYTES} bytes of memory"))
        })?;
        Ok(())
    }

    fn string(&mut self, what: &str, max: u64) -> Result<String> {
        let n = self.u64(what)?;
        if n > max {
            return Err(bad(format!("{what}: length {n} is implausible")));
        }
        if n <= self.remaining() {
            self.charge(n, what)?;
        }
        let b = self.bytes(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| bad(format!("{what} is not UTF-8")))
    }

    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<MetaValue> {
        let w = |c: &mut Self, n: u64| -> Result<Vec<u8>> { Ok(c.bytes(n, key)?.to_vec()) };
        Ok(match ty {
            0 => MetaValue::U8(w(self, 1)?[0]),
            1 => MetaValue::I8(w(self, 1)?[0] as i8),
            2 => MetaValue::U16(u16::from_le_bytes(w(self, 2)?.try_into().unwrap())),
            3 => MetaValue::I16(i16::from_le_bytes(w(self, 2)?.try_into().unwrap())),
            4 => MetaValue::U32(self.u32(key)?),
            5 => MetaValue::I32(self.u32(key)? as i32),
            6 => MetaValue::F32(f32::from_bits(self.u32(key)?)),
            7 => MetaValue::Bool(w(self, 1)?[0] != 0),
            8 => MetaValue::String(self.string(key, u64::MAX)?),
            9 => {
                if depth > 2 {
                    return Err(bad(format!("`{key}`: arrays nested too deeply")));
                }
                let item_ty = self.u32(key)?;
                let n = self.u64(key)?;
                // Every item takes at least one byte: a count beyond the file is corruption.
                if n > self.remaining() {
                    return Err(bad(format!("`{key}`: array of {n} items cannot fit in the file")));
                }
                self.charge(n.saturating_mul(ITEM_BYTES), &format!("`{key}` ({n} items)"))?;
                let mut items = Vec::with_capacity(n.min(1 << 20) as usize);
                for _ in 0..n {
                    items.push(self.value(item_ty, key, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(self.u64(key)?),
            11 => MetaValue::I64(self.u64(key)? as i64),
            12 => MetaValue::F64(f64::from_bits(self.u64(key)?)),
            other => return Err(bad(format!("`{key}`: unknown value type {other}"))),
        })
    }
}

/// A parsed GGUF file: metadata, tensor directory and the bytes behind them.
pub struct GgufFile {
    source: Box<dyn ByteSource + Send + Sync>,
    pub metadata: HashMap<String, MetaValue>,
    pub tensors: HashMap<String, TensorInfo>,
    /// Tensor names in file order.
    pub tensor_order: Vec<String>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("tensors", &self.tensors.len())
            .field("metadata", &self.metadata.len())
            .finish()
    }
}

impl GgufFile {
    /// Parses and validates the header of `source`.
    pub fn parse(source: Box<dyn ByteSource + Send + Sync>) -> Result<Self> {
        let mut c = Cursor::new(source.as_ref());
        if c.remaining() < 24 || c.bytes(4, "magic")? != MAGIC {
            return Err(bad("not a GGUF file (no GGUF magic)"));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(bad(format!("version {version} is not supported (2 or 3)")));
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata count")?;
        // A tensor info takes at least 28 bytes, a key/value at least 13.
        if n_tensors > c.remaining() / 28 || n_kv > c.remaining() / 13 {
            return Err(bad(format!("{n_tensors} tensors and {n_kv} metadata entries cannot fit in the file")));
        }
        let mut metadata = HashMap::new();
        for _ in 0..n_kv {
            c.charge(ITEM_BYTES + std::mem::size_of::<String>() as u64, "metadata entries")?;
            let key = c.string("metadata key", MAX_NAME)?;
            let ty = c.u32(&key)?;
            let v = c.value(ty, &key, 0)?;
            metadata.insert(key, v);
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
                _ => return Err(bad(format!("general.alignment {v:?} is not a power of two"))),
            },
        };
        let mut raw = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = c.string("tensor name", MAX_NAME)?;
            let n_dims = c.u32(&name)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(bad(format!("tensor `{name}` has {n_dims} dimensions")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                let d = c.u64(&name)?;
                let d = usize::try_from(d).map_err(|_| bad(format!("tensor `{name}`: dimension {d} too large")))?;
                // A zero dimension makes a tensor of no bytes whatever its other dimensions, so
                // they would escape the size check (and no real tensor has one).
                if d == 0 {
                    return Err(bad(format!("tensor `{name}` has a dimension of 0")));
                }
                dims.push(d);
            }
            dims.reverse();
            let ty = c.u32(&name)?;
            let dtype =
                dtype_from_u32(ty).ok_or_else(|| bad(format!("tensor `{name}`: ggml type {ty} is not supported")))?;
            let offset = c.u64(&name)?;
            raw.push((name, dims, dtype, offset));
        }
        let data_start = c.pos.div_ceil(alignment) * alignment;
        let file_len = source.len();
        let mut tensors = HashMap::with_capacity(raw.len());
        let mut tensor_order = Vec::with_capacity(raw.len());
        for (name, dims, dtype, rel) in raw {
            let size = tensor_bytes(&dims, dtype).map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
            let offset =
                data_start.checked_add(rel).ok_or_else(|| bad(format!("tensor `{name}`: offset overflows")))?;
            if offset.checked_add(size).is_none_or(|end| end > file_len) {
                return Err(bad(format!(
                    "tensor `{name}` ({size} bytes at offset {offset}) runs past the end of the file ({file_len} bytes): truncated?"
                )));
            }
            if tensors.insert(name.clone(), TensorInfo { dims, dtype, offset, size }).is_some() {
                return Err(bad(format!("tensor `{name}` appears twice")));
            }
            tensor_order.push(name);
        }
        drop(c);
        Ok(Self { source, metadata, tensors, tensor_order })
    }

    /// Opens a GGUF file on disk.
    #[cfg(feature = "mmap")]
    pub fn open(path: &std::path::Path) -> Result<Self> {
        Self::parse(Box::new(FileSource::open(path)?)).map_err(|e| match e {
            ModelError::Weights(m) => ModelError::Weights(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses a GGUF file held in memory (the browser's case).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::parse(Box::new(bytes))
    }

    /// The file's length in bytes.
    pub fn file_len(&self) -> u64 {
        self.source.len()
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).and_then(MetaValue::as_str)
    }

    /// The raw bytes of tensor `name`.
    pub fn tensor_data(&self, name: &str) -> Result<(TensorInfo, Vec<u8>)> {
        let info = self.tensors.get(name).ok_or_else(|| ModelError::MissingTensor { name: name.to_owned() })?.clone();
        let mut buf = vec![0u8; info.size as usize];
        self.source.read_at(info.offset, &mut buf).map_err(|e| bad(format!("reading tensor `{name}`: {e}")))?;
        Ok((info, buf))
    }
}

/// Writes a GGUF file: `begin` writes the header (all tensor sizes are known up front from
/// shapes and types), then `write_tensor` appends each tensor's data in the declared order.
pub struct GgufWriter<W: std::io::Write> {
    out: W,
    pos: u64,
    pending: std::collections::VecDeque<(String, u64)>,
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn put_value(buf: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => buf.push(*x),
        MetaValue::I8(x) => buf.push(*x as u8),
        MetaValue::U16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => buf.push(u8::from(*x)),
        MetaValue::String(s) => put_str(buf, s),
        MetaValue::Array(items) => {
            let ty = items.first().map_or(4, MetaValue::type_id);
            buf.extend_from_slice(&ty.to_le_bytes());
            buf.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for i in items {
                put_value(buf, i);
            }
        }
        MetaValue::U64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => buf.extend_from_slice(&x.to_le_bytes()),
    }
}

impl<W: std::io::Write> GgufWriter<W> {
    /// Writes the header for `tensors` (name, PyTorch-order dims, type).
    pub fn begin(
        mut out: W,
        metadata: &[(String, MetaValue)],
        tensors: &[(String, Vec<usize>, GgmlDType)],
    ) -> Result<Self> {
        let io = |e: std::io::Error| ModelError::Io(format!("writing GGUF: {e}"));
        let mut h = Vec::new();
        h.extend_from_slice(&MAGIC);
        h.extend_from_slice(&VERSION.to_le_bytes());
        h.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        h.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (k, v) in metadata {
            put_str(&mut h, k);
            h.extend_from_slice(&v.type_id().to_le_bytes());
            put_value(&mut h, v);
        }
        let mut rel = 0u64;
        let mut pending = std::collections::VecDeque::new();
        for (name, dims, dtype) in tensors {
            put_str(&mut h, name);
            h.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims.iter().rev() {
                h.extend_from_slice(&(*d as u64).to_le_bytes());
            }
            h.extend_from_slice(&dtype_to_u32(*dtype).to_le_bytes());
            h.extend_from_slice(&rel.to_le_bytes());
            let size = tensor_bytes(dims, *dtype).map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
            pending.push_back((name.clone(), size));
            rel = (rel + size).div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
        }
        let pad = (h.len() as u64).div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT - h.len() as u64;
        h.resize(h.len() + pad as usize, 0);
        out.write_all(&h).map_err(io)?;
        Ok(Self { out, pos: 0, pending })
    }

    /// Appends the data of the next declared tensor.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let (expected, size) =
            self.pending.pop_front().ok_or_else(|| bad(format!("tensor `{name}` was not declared")))?;
        if expected != name || size != data.len() as u64 {
            return Err(bad(format!(
                "expected tensor `{expected}` of {size} bytes next, got `{name}` of {} bytes",
                data.len()
            )));
        }
        let io = |e: std::io::Error| ModelError::Io(format!("writing GGUF: {e}"));
        self.out.write_all(data).map_err(io)?;
        self.pos += size;
        let padded = self.pos.div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
        self.out.write_all(&vec![0u8; (padded - self.pos) as usize]).map_err(io)?;
        self.pos = padded;
        Ok(())
    }

    /// Checks every declared tensor was written and returns the writer.
    pub fn finish(mut self) -> Result<W> {
        if let Some((name, _)) = self.pending.front() {
            return Err(bad(format!("tensor `{name}` was declared but not written")));
        }
        self.out.flush().map_err(|e| ModelError::Io(format!("writing GGUF: {e}")))?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let meta = vec![
            ("general.architecture".to_owned(), MetaValue::String("qwen3".into())),
            (
                "a.list".to_owned(),
                MetaValue::Array(vec![MetaValue::String("x".into()), MetaValue::String("yz".into())]),
            ),
            ("a.f".to_owned(), MetaValue::F32(1.5)),
        ];
        let tensors = vec![
            ("t.weight".to_owned(), vec![2, 32], GgmlDType::Q8_0),
            ("n.weight".to_owned(), vec![3], GgmlDType::F32),
        ];
        let mut w = GgufWriter::begin(Vec::new(), &meta, &tensors).unwrap();
        w.write_tensor("t.weight", &[7u8; 68]).unwrap();
        w.write_tensor("n.weight", &[1u8; 12]).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn round_trip() {
        let f = GgufFile::from_bytes(sample()).unwrap();
        assert_eq!(f.get_str("general.architecture"), Some("qwen3"));
        assert_eq!(f.metadata["a.f"], MetaValue::F32(1.5));
        assert_eq!(f.metadata["a.list"].as_array().unwrap().len(), 2);
        let (info, data) = f.tensor_data("t.weight").unwrap();
        assert_eq!((info.dims.as_slice(), info.dtype, data.len()), ([2usize, 32].as_slice(), GgmlDType::Q8_0, 68));
        assert!(data.iter().all(|&b| b == 7));
        assert_eq!(f.tensor_data("n.weight").unwrap().1, vec![1u8; 12]);
        assert_eq!(f.tensor_order, ["t.weight", "n.weight"]);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let full = sample();
        for cut in 0..full.len() {
            let r = GgufFile::from_bytes(full[..cut].to_vec());
            // Cutting only trailing padding of the last tensor still leaves a valid file.
            if let Ok(f) = r {
                assert!(f.tensors.values().all(|t| t.offset + t.size <= cut as u64));
            }
        }
        assert!(GgufFile::from_bytes(full[..full.len() - 25].to_vec())
            .unwrap_err()
            .to_string()
            .contains("past the end"));
    }

    #[test]
    fn random_corruption_never_panics() {
        let full = sample();
        let mut state = 0x1234_5678_u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as usize
        };
        for _ in 0..5000 {
            let mut b = full.clone();
            for _ in 0..1 + next() % 4 {
                let i = next() % b.len();
                b[i] = next() as u8;
            }
            let cut = b.len() - next() % 8;
            if let Ok(f) = GgufFile::from_bytes(b[..cut].to_vec()) {
                for n in f.tensor_order.clone() {
                    let _ = f.tensor_data(&n);
                }
            }
        }
    }

    /// A header with one metadata array of `n` items of type `ty`, each `item_bytes` long.
    fn one_array(ty: u32, n: u64, item_bytes: usize) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes());
        put_str(&mut b, "a.list");
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&ty.to_le_bytes());
        b.extend_from_slice(&n.to_le_bytes());
        b.resize(b.len() + n as usize * item_bytes, 0);
        b
    }

    #[test]
    fn metadata_memory_is_bounded_by_its_in_memory_size() {
        // 16 MiB of u8 items would be 512 MiB of MetaValues.
        let n = 16u64 << 20;
        let err = GgufFile::from_bytes(one_array(0, n, 1)).unwrap_err().to_string();
        assert!(err.contains(&MAX_METADATA_BYTES.to_string()), "{err}");
        // What fits the budget parses.
        let n = MAX_METADATA_BYTES / ITEM_BYTES / 2;
        let f = GgufFile::from_bytes(one_array(0, n, 1)).unwrap();
        assert_eq!(f.metadata["a.list"].as_array().unwrap().len() as u64, n);
    }

    #[test]
    fn zero_dimensions_are_refused() {
        // dims [0, 2^40] in the file: zero bytes, yet 2^40 rows.
        let mut w = Vec::new();
        w.extend_from_slice(&MAGIC);
        w.extend_from_slice(&VERSION.to_le_bytes());
        w.extend_from_slice(&1u64.to_le_bytes());
        w.extend_from_slice(&0u64.to_le_bytes());
        put_str(&mut w, "cls.output.weight");
        w.extend_from_slice(&2u32.to_le_bytes());
        w.extend_from_slice(&0u64.to_le_bytes());
        w.extend_from_slice(&(1u64 << 40).to_le_bytes());
        w.extend_from_slice(&0u32.to_le_bytes());
        w.extend_from_slice(&0u64.to_le_bytes());
        w.resize(w.len() + 64, 0);
        let err = GgufFile::from_bytes(w).unwrap_err().to_string();
        assert!(err.contains("dimension of 0"), "{err}");
    }

    #[test]
    fn hostile_counts_do_not_allocate() {
        let mut b = sample();
        b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(GgufFile::from_bytes(b).unwrap_err().to_string().contains("cannot fit"));
        let mut b = sample();
        // First key length.
        b[24..32].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        assert!(GgufFile::from_bytes(b).is_err());
        assert!(GgufFile::from_bytes(b"not a gguf file at all....".to_vec())
            .unwrap_err()
            .to_string()
            .contains("magic"));
    }
}
