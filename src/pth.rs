//! PyTorch `torch.save(model.state_dict())` files, read and written without Python or libtorch.
//!
//! A `.pth` file is a zip archive `<prefix>/data.pkl` (a pickle, protocol 2), `<prefix>/data/<key>`
//! (raw little-endian storages), `<prefix>/byteorder`, `<prefix>/version`. Reading runs a minimal
//! pickle machine that understands only the opcodes a plain state dict uses and resolves only an
//! allow-list of globals (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`,
//! `torch._utils._rebuild_parameter`, `torch.<Dtype>Storage`). Nothing is ever executed: an
//! allow-listed global is a tag the machine interprets itself, and anything else — another global,
//! an unknown opcode, a value that is not a tensor — is refused as "not a plain tensor state dict".
//! Writing produces what `torch.load(weights_only=True)` accepts.
//!
//! Format facts (from PyTorch `torch/serialization.py` and Python's `pickletools`): storages are
//! referenced by `BINPERSID` on the tuple `('storage', <StorageType>, key, location, numel)`;
//! tensors are `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::checkpoint::{Tensor, TensorData};
use crate::fsutil;

/// Errors reading or writing a `.pth` file; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum PthError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a PyTorch zip checkpoint ({message}); hint: save it with `torch.save(model.state_dict(), path)` (PyTorch ≥ 1.6)"
    )]
    Archive { path: PathBuf, message: String },
    #[error(
        "{path} is not a plain tensor state dict: {message}; hint: save only `model.state_dict()` (no optimizer, no custom classes) — wms never executes pickle code"
    )]
    NotStateDict { path: PathBuf, message: String },
    #[error("cannot write {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error(transparent)]
    Atomic(#[from] fsutil::WriteError),
}

/// Element types of torch storages we can hold (the checkpoint keeps f32 and i64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StorageKind {
    Float,
    Double,
    Half,
    Long,
    Int,
}

impl StorageKind {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => StorageKind::Float,
            "DoubleStorage" => StorageKind::Double,
            "HalfStorage" => StorageKind::Half,
            "LongStorage" => StorageKind::Long,
            "IntStorage" => StorageKind::Int,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            StorageKind::Float | StorageKind::Int => 4,
            StorageKind::Double | StorageKind::Long => 8,
            StorageKind::Half => 2,
        }
    }
}

/// The globals the machine knows. Anything else is refused before it is ever used.
#[derive(Debug, Clone, PartialEq)]
enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    StorageType(StorageKind),
}

fn resolve_global(module: &str, name: &str) -> Option<Global> {
    match (module, name) {
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensorV2),
        ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
        ("torch", n) => StorageKind::from_name(n).map(Global::StorageType),
        _ => None,
    }
}

/// Pickle values a plain state dict can contain.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// Dicts keep insertion order (state dicts are OrderedDicts).
    Dict(Vec<(Value, Value)>),
    Global(Global),
    Storage {
        kind: StorageKind,
        key: String,
    },
    Tensor(Tensor),
}

/// Reads a `torch.save(state_dict)` file: tensors in file order (the module's registration order).
/// `_metadata` (module versions) is dropped; wms infers everything from names and shapes.
pub fn read_state_dict(path: &Path) -> Result<Vec<(String, Tensor)>, PthError> {
    let file = fs_err::File::open(path).map_err(|source| PthError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let archive_err = |message: String| PthError::Archive {
        path: path.to_path_buf(),
        message,
    };
    let mut zip = zip::ZipArchive::new(file).map_err(|e| archive_err(e.to_string()))?;
    let pkl_name = zip
        .file_names()
        .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .map(str::to_string)
        .ok_or_else(|| archive_err("no `<name>/data.pkl` entry".into()))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    let mut read_entry = |name: &str| -> Result<Vec<u8>, PthError> {
        let mut entry = zip
            .by_name(name)
            .map_err(|e| archive_err(format!("{name}: {e}")))?;
        let mut buf = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut buf).map_err(|source| PthError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(buf)
    };
    if let Ok(order) = read_entry(&format!("{prefix}byteorder"))
        && order != b"little"
    {
        return Err(archive_err(format!(
            "byte order {:?} is not supported",
            String::from_utf8_lossy(&order)
        )));
    }
    let pickle = read_entry(&pkl_name)?;
    let not_sd = |message: String| PthError::NotStateDict {
        path: path.to_path_buf(),
        message,
    };
    let value = Machine::new(&pickle, |key| {
        read_entry(&format!("{prefix}data/{key}")).map_err(|e| e.to_string())
    })
    .run()
    .map_err(not_sd)?;
    let Value::Dict(items) = value else {
        return Err(not_sd(format!(
            "the top-level object is {}, not a dict",
            describe(&value)
        )));
    };
    let mut out = Vec::with_capacity(items.len());
    for (k, v) in items {
        let Value::Str(name) = k else {
            return Err(not_sd(format!("a key is {}, not a string", describe(&k))));
        };
        match v {
            Value::Tensor(t) => out.push((name, t)),
            other => {
                return Err(not_sd(format!(
                    "entry {name:?} is {}, not a tensor",
                    describe(&other)
                )));
            }
        }
    }
    Ok(out)
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::None => "None",
        Value::Bool(_) => "a bool",
        Value::Int(_) => "an int",
        Value::Float(_) => "a float",
        Value::Str(_) => "a string",
        Value::Tuple(_) => "a tuple",
        Value::List(_) => "a list",
        Value::Dict(_) => "a dict",
        Value::Global(_) => "a class or function",
        Value::Storage { .. } => "a storage",
        Value::Tensor(_) => "a tensor",
    }
}

/// Loads a storage's bytes by key; errors are plain messages.
type StorageLoader<'a> = dyn FnMut(&str) -> Result<Vec<u8>, String> + 'a;

/// The pickle machine: a stack, a mark stack and a memo. Values are copied out of the memo, which
/// is exact for state dicts (they contain no shared mutable containers).
struct Machine<'a> {
    input: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    load_storage: Box<StorageLoader<'a>>,
}

impl<'a> Machine<'a> {
    fn new(
        input: &'a [u8],
        load_storage: impl FnMut(&str) -> Result<Vec<u8>, String> + 'a,
    ) -> Self {
        Machine {
            input,
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            load_storage: Box::new(load_storage),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.input.len())
            .ok_or("the pickle is truncated")?;
        let s = &self.input[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.input[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("the pickle is truncated")?;
        let s = String::from_utf8(rest[..n].to_vec()).map_err(|_| "a name is not UTF-8")?;
        self.pos += n + 1;
        Ok(s)
    }

    fn string(&mut self, n: usize) -> Result<String, String> {
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| "a string is not UTF-8".to_string())
    }

    fn pop(&mut self) -> Result<Value, String> {
        self.stack
            .pop()
            .ok_or_else(|| "stack underflow".to_string())
    }

    fn top(&mut self) -> Result<&mut Value, String> {
        self.stack
            .last_mut()
            .ok_or_else(|| "stack underflow".to_string())
    }

    /// Pops everything above the last MARK.
    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let m = self.marks.pop().ok_or("MARK missing")?;
        if m > self.stack.len() {
            return Err("MARK beyond the stack".into());
        }
        Ok(self.stack.split_off(m))
    }

    fn memo_get(&self, i: u32) -> Result<Value, String> {
        self.memo
            .get(&i)
            .cloned()
            .ok_or_else(|| format!("memo entry {i} missing"))
    }

    fn memo_put(&mut self, i: u32) -> Result<(), String> {
        let v = self.stack.last().ok_or("stack underflow")?.clone();
        self.memo.insert(i, v);
        Ok(())
    }

    fn run(mut self) -> Result<Value, String> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    // PROTO
                    let p = self.u8()?;
                    if p > 5 {
                        return Err(format!("pickle protocol {p} is not supported"));
                    }
                }
                0x95 => {
                    // FRAME: framing is transparent to us.
                    self.take(8)?;
                }
                b'.' => return self.pop(),
                b'c' => {
                    // GLOBAL
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(global(&module, &name)?);
                }
                0x93 => {
                    // STACK_GLOBAL
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(global(&m, &n)?),
                        _ => return Err("STACK_GLOBAL needs two strings".into()),
                    }
                }
                b'(' => self.marks.push(self.stack.len()),
                b')' => self.stack.push(Value::Tuple(vec![])),
                b']' => self.stack.push(Value::List(vec![])),
                b'}' => self.stack.push(Value::Dict(vec![])),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v as i64));
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v as i64));
                }
                0x8a => {
                    // LONG1: little-endian two's complement of n bytes.
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        return Err("integer too large".into());
                    }
                    let mut v: i64 = 0;
                    for (i, &byte) in b.iter().enumerate() {
                        v |= (byte as i64) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.stack.push(Value::Int(v));
                }
                b'G' => {
                    let b = self.take(8)?;
                    let v = f64::from_be_bytes(b.try_into().expect("8 bytes"));
                    self.stack.push(Value::Float(v));
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.string(n)?;
                    self.stack.push(Value::Str(s));
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.string(n)?;
                    self.stack.push(Value::Str(s));
                }
                0x8d => {
                    let b = self.take(8)?;
                    let n = u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize;
                    let s = self.string(n)?;
                    self.stack.push(Value::Str(s));
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err("stack underflow".into());
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items));
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(items));
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let d = pairs(items)?;
                    self.stack.push(Value::Dict(d));
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        Value::List(l) => l.push(v),
                        _ => return Err("APPEND to a non-list".into()),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::List(l) => l.extend(items),
                        _ => return Err("APPENDS to a non-list".into()),
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    dict_insert(self.top()?, vec![(k, v)])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let kv = pairs(items)?;
                    dict_insert(self.top()?, kv)?;
                }
                b'q' => {
                    let i = self.u8()? as u32;
                    self.memo_put(i)?;
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.u8()? as u32;
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                b'j' => {
                    let i = self.u32()?;
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = self.persistent_load(pid)?;
                    self.stack.push(storage);
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = self.reduce(func, args)?;
                    self.stack.push(v);
                }
                b'b' => {
                    // BUILD: only an OrderedDict's `__dict__` (the state dict's `_metadata`), which
                    // carries module versions we do not need.
                    let state = self.pop()?;
                    match (self.top()?, state) {
                        (Value::Dict(_), Value::Dict(_) | Value::None) => {}
                        _ => return Err("BUILD on an object that is not a dict".into()),
                    }
                }
                0x81 | 0x92 | b'i' | b'o' => {
                    return Err("the pickle instantiates an object (NEWOBJ/INST/OBJ)".into());
                }
                b'P' => return Err("the pickle uses a text persistent id".into()),
                other => {
                    return Err(format!(
                        "pickle opcode 0x{other:02x} at byte {} is not used by state dicts",
                        self.pos - 1
                    ));
                }
            }
        }
    }

    fn persistent_load(&mut self, pid: Value) -> Result<Value, String> {
        let Value::Tuple(t) = pid else {
            return Err("a persistent id is not a tuple".into());
        };
        match t.as_slice() {
            [
                Value::Str(tag),
                Value::Global(Global::StorageType(kind)),
                Value::Str(key),
                Value::Str(_location),
                Value::Int(_numel),
            ] if tag == "storage" => Ok(Value::Storage {
                kind: *kind,
                key: key.clone(),
            }),
            _ => {
                Err("a persistent id is not `('storage', <Storage>, key, location, numel)`".into())
            }
        }
    }

    fn reduce(&mut self, func: Value, args: Value) -> Result<Value, String> {
        let Value::Global(g) = func else {
            return Err(format!(
                "REDUCE calls {}, not an allowed global",
                describe(&func)
            ));
        };
        let Value::Tuple(args) = args else {
            return Err("REDUCE arguments are not a tuple".into());
        };
        match g {
            Global::OrderedDict if args.is_empty() => Ok(Value::Dict(vec![])),
            Global::RebuildTensorV2 => match args.as_slice() {
                [
                    Value::Storage { kind, key },
                    Value::Int(offset),
                    Value::Tuple(size),
                    Value::Tuple(stride),
                    Value::Bool(_),
                    Value::Dict(hooks),
                    rest @ ..,
                ] if hooks.is_empty()
                    && rest.len() <= 1
                    && rest
                        .iter()
                        .all(|m| matches!(m, Value::None | Value::Dict(_))) =>
                {
                    let size = ints(size)?;
                    let stride = ints(stride)?;
                    let bytes = (self.load_storage)(key)?;
                    rebuild_tensor(*kind, &bytes, *offset, &size, &stride).map(Value::Tensor)
                }
                _ => Err("_rebuild_tensor_v2 called with unexpected arguments".into()),
            },
            Global::RebuildParameter => match args.as_slice() {
                [Value::Tensor(t), Value::Bool(_), Value::Dict(hooks)] if hooks.is_empty() => {
                    Ok(Value::Tensor(t.clone()))
                }
                _ => Err("_rebuild_parameter called with unexpected arguments".into()),
            },
            other => Err(format!(
                "REDUCE on {other:?} with these arguments is not allowed"
            )),
        }
    }
}

fn global(module: &str, name: &str) -> Result<Value, String> {
    resolve_global(module, name)
        .map(Value::Global)
        .ok_or_else(|| format!("it references `{module}.{name}`, which is not on the allow-list"))
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>, String> {
    if !items.len().is_multiple_of(2) {
        return Err("odd number of dict items".into());
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn dict_insert(target: &mut Value, kv: Vec<(Value, Value)>) -> Result<(), String> {
    let Value::Dict(d) = target else {
        return Err("SETITEM(S) on a non-dict".into());
    };
    for (k, v) in kv {
        match d.iter_mut().find(|(old, _)| *old == k) {
            Some(slot) => slot.1 = v,
            None => d.push((k, v)),
        }
    }
    Ok(())
}

fn ints(t: &[Value]) -> Result<Vec<i64>, String> {
    t.iter()
        .map(|v| match v {
            Value::Int(i) if *i >= 0 => Ok(*i),
            _ => Err("a tensor size/stride is not a non-negative int".to_string()),
        })
        .collect()
}

/// Gathers a strided view of a storage into a contiguous tensor (f32 for floats, i64 for ints).
fn rebuild_tensor(
    kind: StorageKind,
    bytes: &[u8],
    offset: i64,
    size: &[i64],
    stride: &[i64],
) -> Result<Tensor, String> {
    if size.len() != stride.len() || offset < 0 {
        return Err("tensor size and stride disagree".into());
    }
    let elem = kind.size();
    let numel_storage = bytes.len() / elem;
    let numel: usize = size.iter().map(|&d| d as usize).product();
    let max_index = offset as usize
        + size
            .iter()
            .zip(stride)
            .map(|(&d, &s)| (d.max(1) as usize - 1) * s as usize)
            .sum::<usize>();
    if numel > 0 && max_index >= numel_storage {
        return Err(format!(
            "tensor view reaches element {max_index} of a storage of {numel_storage}"
        ));
    }
    // Element indices in row-major order of the view.
    let mut indices = Vec::with_capacity(numel);
    if numel > 0 {
        let mut counter = vec![0i64; size.len()];
        loop {
            let idx = offset + counter.iter().zip(stride).map(|(c, s)| c * s).sum::<i64>();
            indices.push(idx as usize);
            // Increment the multi-index, last dimension fastest.
            let mut d = size.len();
            loop {
                if d == 0 {
                    break;
                }
                d -= 1;
                counter[d] += 1;
                if counter[d] < size[d] {
                    break;
                }
                counter[d] = 0;
            }
            if indices.len() == numel {
                break;
            }
        }
    }
    let at = |i: usize| &bytes[i * elem..(i + 1) * elem];
    let data = match kind {
        StorageKind::Float => TensorData::F32(
            indices
                .iter()
                .map(|&i| f32::from_le_bytes(at(i).try_into().expect("4 bytes")))
                .collect(),
        ),
        StorageKind::Double => TensorData::F32(
            indices
                .iter()
                .map(|&i| f64::from_le_bytes(at(i).try_into().expect("8 bytes")) as f32)
                .collect(),
        ),
        StorageKind::Half => TensorData::F32(
            indices
                .iter()
                .map(|&i| half_to_f32(u16::from_le_bytes(at(i).try_into().expect("2 bytes"))))
                .collect(),
        ),
        StorageKind::Long => TensorData::I64(
            indices
                .iter()
                .map(|&i| i64::from_le_bytes(at(i).try_into().expect("8 bytes")))
                .collect(),
        ),
        StorageKind::Int => TensorData::I64(
            indices
                .iter()
                .map(|&i| i32::from_le_bytes(at(i).try_into().expect("4 bytes")) as i64)
                .collect(),
        ),
    };
    Ok(Tensor {
        shape: size.iter().map(|&d| d as usize).collect(),
        data,
    })
}

/// IEEE 754 binary16 → f32.
fn half_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: value = f · 2^-24.
            let v = f as f32 * f32::powi(2.0, -24);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 112) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// Writes tensors as `torch.save(OrderedDict)` would (protocol 2, uncompressed zip, storages
/// aligned to 64 bytes), so `model.load_state_dict(torch.load(path))` accepts it with
/// `weights_only=True`. The archive prefix is `archive` (torch accepts any single prefix).
pub fn write_state_dict(path: &Path, tensors: &[(String, &Tensor)]) -> Result<(), PthError> {
    let pickle = state_dict_pickle(tensors);
    let write_err = |message: String| PthError::Write {
        path: path.to_path_buf(),
        message,
    };
    let mut zip_bytes = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut zip_bytes);
        let opts = zip::write::FileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .last_modified_time(zip::DateTime::default());
        let mut add = |name: &str, data: &[u8], align: u16| -> Result<(), String> {
            if align > 1 {
                zip.start_file_aligned(name, opts, align)
                    .map_err(|e| e.to_string())?;
            } else {
                zip.start_file(name, opts).map_err(|e| e.to_string())?;
            }
            zip.write_all(data).map_err(|e| e.to_string())
        };
        add("archive/data.pkl", &pickle, 1).map_err(write_err)?;
        add("archive/.format_version", b"1", 1).map_err(write_err)?;
        add("archive/.storage_alignment", b"64", 1).map_err(write_err)?;
        add("archive/byteorder", b"little", 1).map_err(write_err)?;
        for (i, (_, t)) in tensors.iter().enumerate() {
            add(&format!("archive/data/{i}"), &tensor_bytes(t), 64).map_err(write_err)?;
        }
        add("archive/version", b"3\n", 1).map_err(write_err)?;
        zip.finish().map_err(|e| write_err(e.to_string()))?;
    }
    fsutil::write_atomic(path, zip_bytes.get_ref())?;
    Ok(())
}

fn tensor_bytes(t: &Tensor) -> Vec<u8> {
    match &t.data {
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

/// The pickle of `OrderedDict([(name, _rebuild_tensor_v2(...)), …])`, storage `i` = tensor `i`.
fn state_dict_pickle(tensors: &[(String, &Tensor)]) -> Vec<u8> {
    let mut p = PickleWriter::default();
    p.out.extend_from_slice(&[0x80, 2]);
    p.global("collections", "OrderedDict");
    p.out.extend_from_slice(b")R(");
    for (i, (name, t)) in tensors.iter().enumerate() {
        let storage = match t.data {
            TensorData::F32(_) => "FloatStorage",
            TensorData::I64(_) => "LongStorage",
        };
        let numel: usize = t.shape.iter().product();
        p.str(name);
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.out.push(b'(');
        // Persistent id ('storage', torch.<Kind>Storage, key, 'cpu', numel).
        p.out.push(b'(');
        p.str("storage");
        p.global("torch", storage);
        p.str(&i.to_string());
        p.str("cpu");
        p.int(numel as i64);
        p.out.extend_from_slice(b"tQ");
        p.int(0);
        p.tuple(t.shape.iter().map(|&d| d as i64));
        let mut strides = vec![1i64; t.shape.len()];
        for d in (0..t.shape.len().saturating_sub(1)).rev() {
            strides[d] = strides[d + 1] * t.shape[d + 1] as i64;
        }
        p.tuple(strides);
        p.out.push(0x89); // requires_grad = False
        p.global("collections", "OrderedDict");
        p.out.extend_from_slice(b")R"); // backward_hooks = OrderedDict()
        p.out.extend_from_slice(b"tR");
    }
    p.out.extend_from_slice(b"u.");
    p.out
}

#[derive(Default)]
struct PickleWriter {
    out: Vec<u8>,
}

impl PickleWriter {
    fn global(&mut self, module: &str, name: &str) {
        self.out.push(b'c');
        self.out.extend_from_slice(module.as_bytes());
        self.out.push(b'\n');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'\n');
    }

    fn str(&mut self, s: &str) {
        self.out.push(b'X');
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }

    fn int(&mut self, v: i64) {
        if let Ok(small) = i32::try_from(v) {
            self.out.push(b'J');
            self.out.extend_from_slice(&small.to_le_bytes());
        } else {
            self.out.extend_from_slice(&[0x8a, 8]);
            self.out.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn tuple(&mut self, items: impl IntoIterator<Item = i64>) {
        self.out.push(b'(');
        for v in items {
            self.int(v);
        }
        self.out.push(b't');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<(String, Tensor)> {
        vec![
            (
                "a.weight".to_string(),
                Tensor::f32(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.5]),
            ),
            (
                "a.num_batches_tracked".to_string(),
                Tensor {
                    shape: vec![],
                    data: TensorData::I64(vec![42]),
                },
            ),
            ("empty".to_string(), Tensor::f32(vec![0], vec![])),
        ]
    }

    #[test]
    fn round_trip_keeps_order_names_shapes_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.pth");
        let sd = sample();
        let refs: Vec<(String, &Tensor)> = sd.iter().map(|(n, t)| (n.clone(), t)).collect();
        write_state_dict(&p, &refs).unwrap();
        let back = read_state_dict(&p).unwrap();
        assert_eq!(back, sd);
    }

    #[test]
    fn strided_views_are_gathered() {
        // A 2×2 transpose view of storage [0, 1, 2, 3]: rows are (0, 2), (1, 3).
        let bytes: Vec<u8> = [0f32, 1., 2., 3.]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let t = rebuild_tensor(StorageKind::Float, &bytes, 0, &[2, 2], &[1, 2]).unwrap();
        assert_eq!(t.data, TensorData::F32(vec![0., 2., 1., 3.]));
        let err = rebuild_tensor(StorageKind::Float, &bytes, 2, &[2, 2], &[1, 2]).unwrap_err();
        assert!(err.contains("reaches element"), "{err}");
    }

    #[test]
    fn foreign_globals_are_refused_without_running_them() {
        // `cos\nsystem\n(S'echo pwned'\ntR.` — the classic payload, as text opcodes.
        let payload = b"\x80\x02cos\nsystem\nX\x0a\x00\x00\x00echo pwned\x85R.";
        let err = Machine::new(payload, |_| Err("no storages".into()))
            .run()
            .unwrap_err();
        assert!(
            err.contains("`os.system`") && err.contains("allow-list"),
            "{err}"
        );
    }

    #[test]
    fn non_dict_payloads_and_garbage_are_clear_errors() {
        let err = Machine::new(b"\x80\x02K\x05", |_| Err(String::new()))
            .run()
            .unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        let err = Machine::new(b"\x80\x02\x81.", |_| Err(String::new()))
            .run()
            .unwrap_err();
        assert!(err.contains("instantiates"), "{err}");
    }

    #[test]
    fn half_precision_converts() {
        assert_eq!(half_to_f32(0x3c00), 1.0);
        assert_eq!(half_to_f32(0xc000), -2.0);
        assert_eq!(half_to_f32(0x0001), f32::powi(2.0, -24));
    }
}
