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
//! The file is untrusted (it may come from a pull request), so the reader must not let a small file
//! claim a large amount of memory or time. Values live in one arena and the stack, the memo and
//! containers hold indices into it: a memo `GET` shares a value instead of copying it (copying let
//! a 632-byte file that doubles a memoised list 30 times allocate 3.7 GB, issue 11), mutation
//! through the memo behaves as in Python, and nothing walks a value recursively. What remains is
//! capped by [`limits`], each refused with [`PthError::Limit`] before the memory is allocated; every
//! size, offset and stride taken from the file is checked arithmetic, and no buffer is sized from a
//! length the archive declares beyond what the file can hold.
//!
//! Format facts (from PyTorch `torch/serialization.py` and Python's `pickletools`): storages are
//! referenced by `BINPERSID` on the tuple `('storage', <StorageType>, key, location, numel)`;
//! tensors are `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`.

use std::collections::{HashMap, HashSet};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::{Tensor, TensorData};
use crate::fsutil;
use crate::untrusted::text::for_log;

/// What one `.pth` file may make the reader hold. A plain state dict stays far below each (the
/// upstream U-Net: 128 tensors, a 14 KB pickle, 8 MB of weights); a file above one is refused.
pub mod limits {
    /// Bytes of the `data.pkl` entry (a state dict's pickle takes ~110 bytes per tensor).
    pub const PICKLE_BYTES: u64 = 64 << 20;
    /// Values the pickle machine may hold: every push onto its stack and every memo entry counts
    /// one (a state dict uses a few dozen per tensor). Bounds the arena, the stack, the memo and the
    /// containers, whatever shape the pickle gives them.
    pub const PICKLE_VALUES: u64 = 1 << 21;
    /// Bytes of tensor data: storages read from the archive plus the tensors gathered from them.
    /// A model of up to ~250M f32 parameters fits (storage and tensor counted once each).
    pub const TENSOR_BYTES: u64 = 2 << 30;
    /// Bytes of tensor data per byte of the file, the tighter bound for small files. A state
    /// dict's tensors are its storages (1×) gathered as f32/i64 (at most 2×: half and int32 widen);
    /// more than this takes views that overlap or repeat, which `model.state_dict()` does not make.
    pub const TENSOR_BYTES_PER_FILE_BYTE: u64 = 4;
    /// Slack on top of the per-file-byte bound, for tiny files.
    pub const TENSOR_BYTES_SLACK: u64 = 1 << 20;
    /// Dimensions of one tensor (layer weights have at most 5).
    pub const TENSOR_DIMS: u64 = 64;
}

/// Errors reading or writing a `.pth` file; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum PthError {
    // `source` comes from `fs_err`, whose message names the path (the cause prints once).
    #[error("cannot open the state dict; hint: check that the file exists and is readable")]
    Open {
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
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
    #[error(
        "{path} is refused: {what} exceed the reader's limit of {limit}; hint: a plain `model.state_dict()` stays far below it, so the file is damaged or not a state dict (limits: wms::checkpoint::pth::limits)"
    )]
    Limit {
        path: PathBuf,
        what: &'static str,
        limit: u64,
    },
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

    /// Bytes of one element in the storage.
    fn size(self) -> usize {
        match self {
            StorageKind::Float | StorageKind::Int => 4,
            StorageKind::Double | StorageKind::Long => 8,
            StorageKind::Half => 2,
        }
    }

    /// Bytes of one element once gathered (f32 or i64).
    fn gathered_size(self) -> u64 {
        match self {
            StorageKind::Float | StorageKind::Double | StorageKind::Half => 4,
            StorageKind::Long | StorageKind::Int => 8,
        }
    }
}

/// The globals the machine knows. Anything else is refused before it is ever used.
#[derive(Debug, Clone, Copy, PartialEq)]
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

/// Index of a value in the machine's arena.
type Id = usize;

/// Pickle values a plain state dict can contain. Containers hold arena indices, never values, so
/// a value reached twice is stored once and no operation recurses into a value.
#[derive(Debug)]
enum Node {
    None,
    /// Values of bools and floats are never needed, only that they are there.
    Bool,
    Int(i64),
    Float,
    Str(Rc<str>),
    Tuple(Vec<Id>),
    List(Vec<Id>),
    /// Items in insertion order (state dicts are OrderedDicts). Keys are not deduplicated here:
    /// a state dict never repeats one, and [`Machine::into_state_dict`] refuses a repeat.
    Dict(Vec<(Id, Id)>),
    Global(Global),
    Storage {
        kind: StorageKind,
        key: Rc<str>,
    },
    Tensor(Tensor),
}

/// Reads a `torch.save(state_dict)` file: tensors in file order (the module's registration order).
/// `_metadata` (module versions) is dropped; wms infers everything from names and shapes.
pub fn read_state_dict(path: &Path) -> Result<Vec<(String, Tensor)>, PthError> {
    let file = fs_err::File::open(path).map_err(|source| PthError::Open { source })?;
    let file_len = file
        .metadata()
        .map_err(|source| PthError::Open { source })?
        .len();
    let mut archive = Archive {
        path,
        zip: zip::ZipArchive::new(BufReader::new(file)).map_err(|e| PthError::Archive {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?,
        file_len,
    };
    let pkl_name = archive
        .zip
        .file_names()
        .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .map(str::to_string)
        .ok_or_else(|| archive.err("no `<name>/data.pkl` entry".into()))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    // Optional (torch writes it since 1.x); a missing or oversized one is not our business.
    if let Ok(order) = archive.read(&format!("{prefix}byteorder"), 16, "bytes in byteorder", 16)
        && order != b"little"
    {
        return Err(archive.err(format!(
            "byte order {} is not supported",
            shown(&String::from_utf8_lossy(&order))
        )));
    }
    let pickle = archive.read(
        &pkl_name,
        limits::PICKLE_BYTES,
        "bytes in data.pkl",
        limits::PICKLE_BYTES,
    )?;
    let limits = Limits::for_file(file_len);
    let machine = Machine::new(&pickle, limits, |key, max| {
        archive.read(
            &format!("{prefix}data/{key}"),
            max,
            TENSOR_BYTES_WHAT,
            limits.tensor_bytes,
        )
    });
    machine.read().map_err(|e| match e {
        PickleError::Format(message) => PthError::NotStateDict {
            path: path.to_path_buf(),
            message,
        },
        PickleError::Limit { what, limit } => PthError::Limit {
            path: path.to_path_buf(),
            what,
            limit,
        },
        PickleError::Storage(e) => *e,
    })
}

/// The `what` of [`PthError::Limit`] for tensor data.
const TENSOR_BYTES_WHAT: &str =
    "bytes of tensor data (storages read plus tensors built; at most 4× the file size and 2 GiB)";

/// The zip archive of one `.pth` file.
struct Archive<'a> {
    path: &'a Path,
    zip: zip::ZipArchive<BufReader<fs_err::File>>,
    file_len: u64,
}

impl Archive<'_> {
    fn err(&self, message: String) -> PthError {
        PthError::Archive {
            path: self.path.to_path_buf(),
            message,
        }
    }

    /// The bytes of entry `name`, at most `max`; more (declared or found) is refused as too many
    /// `what` for the reader's `limit`. The buffer is never sized beyond what the file can hold.
    fn read(
        &mut self,
        name: &str,
        max: u64,
        what: &'static str,
        limit: u64,
    ) -> Result<Vec<u8>, PthError> {
        let path = self.path;
        let over = || PthError::Limit {
            path: path.to_path_buf(),
            what,
            limit,
        };
        let entry = self.zip.by_name(name).map_err(|e| PthError::Archive {
            path: path.to_path_buf(),
            message: format!("{}: {e}", shown(name)),
        })?;
        if entry.size() > max {
            return Err(over());
        }
        let mut buf = Vec::with_capacity(entry.size().min(self.file_len) as usize);
        entry
            .take(max.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|source| PthError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        if buf.len() as u64 > max {
            return Err(over());
        }
        Ok(buf)
    }
}

/// An archive-supplied string as it appears in an error: escaped, and cut to a readable length.
fn shown(s: &str) -> String {
    const MAX_CHARS: usize = 80;
    match s.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("\"{}…\"", for_log(&s[..cut])),
        None => format!("\"{}\"", for_log(s)),
    }
}

fn describe(v: &Node) -> &'static str {
    match v {
        Node::None => "None",
        Node::Bool => "a bool",
        Node::Int(_) => "an int",
        Node::Float => "a float",
        Node::Str(_) => "a string",
        Node::Tuple(_) => "a tuple",
        Node::List(_) => "a list",
        Node::Dict(_) => "a dict",
        Node::Global(_) => "a class or function",
        Node::Storage { .. } => "a storage",
        Node::Tensor(_) => "a tensor",
    }
}

/// Why the pickle machine stopped.
#[derive(Debug)]
enum PickleError {
    /// Not a plain state dict (or not a pickle at all).
    Format(String),
    /// Over one of [`limits`].
    Limit { what: &'static str, limit: u64 },
    /// Reading a storage from the archive failed; already names the file.
    Storage(Box<PthError>),
}

impl From<String> for PickleError {
    fn from(message: String) -> Self {
        PickleError::Format(message)
    }
}

impl From<&str> for PickleError {
    fn from(message: &str) -> Self {
        PickleError::Format(message.to_string())
    }
}

impl std::fmt::Display for PickleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PickleError::Format(m) => f.write_str(m),
            PickleError::Limit { what, limit } => write!(f, "{what} exceed the limit of {limit}"),
            PickleError::Storage(e) => write!(f, "{e}"),
        }
    }
}

/// The machine's share of [`limits`]; tests lower them.
#[derive(Debug, Clone, Copy)]
struct Limits {
    values: u64,
    tensor_bytes: u64,
}

impl Limits {
    /// [`limits`] as they apply to a file of `file_len` bytes.
    fn for_file(file_len: u64) -> Self {
        Limits {
            values: limits::PICKLE_VALUES,
            tensor_bytes: file_len
                .saturating_mul(limits::TENSOR_BYTES_PER_FILE_BYTE)
                .saturating_add(limits::TENSOR_BYTES_SLACK)
                .min(limits::TENSOR_BYTES),
        }
    }
}

/// Loads the storage `key`, at most `max` bytes; errors name the file.
type StorageLoader<'a> = dyn FnMut(&str, u64) -> Result<Vec<u8>, PthError> + 'a;

/// The pickle machine: an arena of values, a stack and a memo of arena indices, a mark stack.
struct Machine<'a> {
    input: &'a [u8],
    pos: usize,
    nodes: Vec<Node>,
    stack: Vec<Id>,
    marks: Vec<usize>,
    memo: HashMap<u32, Id>,
    /// Storages already read, by key (tied weights share one).
    storages: HashMap<Rc<str>, Rc<Vec<u8>>>,
    limits: Limits,
    /// Stack pushes and memo entries so far (see [`limits::PICKLE_VALUES`]).
    values: u64,
    /// Bytes of storages read and tensors gathered so far (see [`limits::TENSOR_BYTES`]).
    tensor_bytes: u64,
    load_storage: Box<StorageLoader<'a>>,
}

impl<'a> Machine<'a> {
    fn new(
        input: &'a [u8],
        limits: Limits,
        load_storage: impl FnMut(&str, u64) -> Result<Vec<u8>, PthError> + 'a,
    ) -> Self {
        Machine {
            input,
            pos: 0,
            nodes: Vec::new(),
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            storages: HashMap::new(),
            limits,
            values: 0,
            tensor_bytes: 0,
            load_storage: Box::new(load_storage),
        }
    }

    /// Runs the pickle and returns the state dict it builds.
    fn read(mut self) -> Result<Vec<(String, Tensor)>, PickleError> {
        let root = self.run()?;
        self.into_state_dict(root)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.input.len())
            .ok_or("the pickle is truncated")?;
        let s = &self.input[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, PickleError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, PickleError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn line(&mut self) -> Result<String, PickleError> {
        let rest = &self.input[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("the pickle is truncated")?;
        let s = String::from_utf8(rest[..n].to_vec()).map_err(|_| "a name is not UTF-8")?;
        self.pos += n + 1;
        Ok(s)
    }

    fn string(&mut self, n: u64) -> Result<Rc<str>, PickleError> {
        let n = usize::try_from(n).map_err(|_| "the pickle is truncated")?;
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| "a string is not UTF-8")?;
        Ok(Rc::from(s))
    }

    /// Counts one value against [`limits::PICKLE_VALUES`].
    fn count_value(&mut self) -> Result<(), PickleError> {
        self.values += 1;
        if self.values > self.limits.values {
            return Err(PickleError::Limit {
                what: "pickle values (stack pushes and memo entries)",
                limit: self.limits.values,
            });
        }
        Ok(())
    }

    /// Counts `bytes` of tensor data against [`limits::TENSOR_BYTES`].
    fn count_tensor_bytes(&mut self, bytes: u64) -> Result<(), PickleError> {
        match self.tensor_bytes.checked_add(bytes) {
            Some(total) if total <= self.limits.tensor_bytes => {
                self.tensor_bytes = total;
                Ok(())
            }
            _ => Err(self.tensor_limit()),
        }
    }

    fn tensor_limit(&self) -> PickleError {
        PickleError::Limit {
            what: TENSOR_BYTES_WHAT,
            limit: self.limits.tensor_bytes,
        }
    }

    /// Pushes a new value.
    fn push(&mut self, node: Node) -> Result<(), PickleError> {
        self.count_value()?;
        self.nodes.push(node);
        self.stack.push(self.nodes.len() - 1);
        Ok(())
    }

    /// Pushes an existing value (shared, not copied).
    fn push_id(&mut self, id: Id) -> Result<(), PickleError> {
        self.count_value()?;
        self.stack.push(id);
        Ok(())
    }

    fn pop(&mut self) -> Result<Id, PickleError> {
        Ok(self.stack.pop().ok_or("stack underflow")?)
    }

    fn top(&self) -> Result<Id, PickleError> {
        Ok(*self.stack.last().ok_or("stack underflow")?)
    }

    /// Pops everything above the last MARK.
    fn pop_mark(&mut self) -> Result<Vec<Id>, PickleError> {
        let m = self.marks.pop().ok_or("MARK missing")?;
        if m > self.stack.len() {
            return Err("MARK beyond the stack".into());
        }
        Ok(self.stack.split_off(m))
    }

    fn memo_get(&mut self, i: u32) -> Result<(), PickleError> {
        let id = *self
            .memo
            .get(&i)
            .ok_or_else(|| format!("memo entry {i} missing"))?;
        self.push_id(id)
    }

    fn memo_put(&mut self, i: u32) -> Result<(), PickleError> {
        self.count_value()?;
        let id = self.top()?;
        self.memo.insert(i, id);
        Ok(())
    }

    /// Runs the pickle to its STOP and returns the index of the result.
    fn run(&mut self) -> Result<Id, PickleError> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    // PROTO
                    let p = self.u8()?;
                    if p > 5 {
                        return Err(format!("pickle protocol {p} is not supported").into());
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
                    self.push(global(&module, &name)?)?;
                }
                0x93 => {
                    // STACK_GLOBAL
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let g = match (&self.nodes[module], &self.nodes[name]) {
                        (Node::Str(m), Node::Str(n)) => global(m, n)?,
                        _ => return Err("STACK_GLOBAL needs two strings".into()),
                    };
                    self.push(g)?;
                }
                b'(' => {
                    self.count_value()?;
                    self.marks.push(self.stack.len());
                }
                b')' => self.push(Node::Tuple(vec![]))?,
                b']' => self.push(Node::List(vec![]))?,
                b'}' => self.push(Node::Dict(vec![]))?,
                b'N' => self.push(Node::None)?,
                0x88 | 0x89 => self.push(Node::Bool)?,
                b'K' => {
                    let v = self.u8()?;
                    self.push(Node::Int(v.into()))?;
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Node::Int(v.into()))?;
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Node::Int(v.into()))?;
                }
                0x8a => {
                    // LONG1: little-endian two's complement of n bytes.
                    let n = usize::from(self.u8()?);
                    if n > 8 {
                        return Err("integer too large".into());
                    }
                    let b = self.take(n)?;
                    let mut v: i64 = 0;
                    for (i, &byte) in b.iter().enumerate() {
                        v |= i64::from(byte) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.push(Node::Int(v))?;
                }
                b'G' => {
                    self.take(8)?;
                    self.push(Node::Float)?;
                }
                b'X' => {
                    // BINUNICODE
                    let n = self.u32()?;
                    let s = self.string(n.into())?;
                    self.push(Node::Str(s))?;
                }
                0x8c => {
                    // SHORT_BINUNICODE
                    let n = self.u8()?;
                    let s = self.string(n.into())?;
                    self.push(Node::Str(s))?;
                }
                0x8d => {
                    // BINUNICODE8
                    let n = self.u64()?;
                    let s = self.string(n)?;
                    self.push(Node::Str(s))?;
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Node::Tuple(items))?;
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < n {
                        return Err("stack underflow".into());
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push(Node::Tuple(items))?;
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Node::List(items))?;
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let d = pairs(items)?;
                    self.push(Node::Dict(d))?;
                }
                b'a' => {
                    let v = self.pop()?;
                    let top = self.top()?;
                    match &mut self.nodes[top] {
                        Node::List(l) => l.push(v),
                        _ => return Err("APPEND to a non-list".into()),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let top = self.top()?;
                    match &mut self.nodes[top] {
                        Node::List(l) => l.extend(items),
                        _ => return Err("APPENDS to a non-list".into()),
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.dict_insert(vec![(k, v)])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let kv = pairs(items)?;
                    self.dict_insert(kv)?;
                }
                b'q' => {
                    let i = self.u8()?;
                    self.memo_put(i.into())?;
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?;
                }
                0x94 => {
                    // MEMOIZE: the next index. The memo never exceeds the value limit, so it fits.
                    let i = u32::try_from(self.memo.len()).map_err(|_| "the memo is full")?;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.u8()?;
                    self.memo_get(i.into())?;
                }
                b'j' => {
                    let i = self.u32()?;
                    self.memo_get(i)?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = self.persistent_load(pid)?;
                    self.push(storage)?;
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    self.reduce(func, args)?;
                }
                b'b' => {
                    // BUILD: only an OrderedDict's `__dict__` (the state dict's `_metadata`), which
                    // carries module versions we do not need.
                    let state = self.pop()?;
                    let top = self.top()?;
                    match (&self.nodes[top], &self.nodes[state]) {
                        (Node::Dict(_), Node::Dict(_) | Node::None) => {}
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
                    )
                    .into());
                }
            }
        }
    }

    fn dict_insert(&mut self, kv: Vec<(Id, Id)>) -> Result<(), PickleError> {
        let top = self.top()?;
        match &mut self.nodes[top] {
            Node::Dict(d) => {
                d.extend(kv);
                Ok(())
            }
            _ => Err("SETITEM(S) on a non-dict".into()),
        }
    }

    fn persistent_load(&mut self, pid: Id) -> Result<Node, PickleError> {
        let bad = "a persistent id is not `('storage', <Storage>, key, location, numel)`";
        let Node::Tuple(t) = &self.nodes[pid] else {
            return Err("a persistent id is not a tuple".into());
        };
        let &[tag, kind, key, location, numel] = t.as_slice() else {
            return Err(bad.into());
        };
        match (
            &self.nodes[tag],
            &self.nodes[kind],
            &self.nodes[key],
            &self.nodes[location],
            &self.nodes[numel],
        ) {
            (
                Node::Str(tag),
                Node::Global(Global::StorageType(kind)),
                Node::Str(key),
                Node::Str(_),
                Node::Int(_),
            ) if &**tag == "storage" => Ok(Node::Storage {
                kind: *kind,
                key: key.clone(),
            }),
            _ => Err(bad.into()),
        }
    }

    /// Applies an allow-listed global and pushes the result.
    fn reduce(&mut self, func: Id, args: Id) -> Result<(), PickleError> {
        let Node::Global(g) = self.nodes[func] else {
            return Err(format!(
                "REDUCE calls {}, not an allowed global",
                describe(&self.nodes[func])
            )
            .into());
        };
        let Node::Tuple(args) = &self.nodes[args] else {
            return Err("REDUCE arguments are not a tuple".into());
        };
        match g {
            Global::OrderedDict if args.is_empty() => self.push(Node::Dict(vec![])),
            Global::RebuildTensorV2 => {
                let call = self.rebuild_tensor_args(args)?;
                let tensor = self.rebuild(call)?;
                self.push(Node::Tensor(tensor))
            }
            Global::RebuildParameter => match args.as_slice() {
                &[t, requires_grad, hooks]
                    if matches!(self.nodes[t], Node::Tensor(_))
                        && matches!(self.nodes[requires_grad], Node::Bool)
                        && self.is_empty_dict(hooks) =>
                {
                    // The parameter is its tensor: share it.
                    self.push_id(t)
                }
                _ => Err("_rebuild_parameter called with unexpected arguments".into()),
            },
            other => Err(format!("REDUCE on {other:?} with these arguments is not allowed").into()),
        }
    }

    fn is_empty_dict(&self, id: Id) -> bool {
        matches!(&self.nodes[id], Node::Dict(d) if d.is_empty())
    }

    /// Checks `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, meta])`.
    fn rebuild_tensor_args(&self, args: &[Id]) -> Result<RebuildCall, PickleError> {
        let unexpected =
            || PickleError::from("_rebuild_tensor_v2 called with unexpected arguments");
        let [
            storage,
            offset,
            size,
            stride,
            requires_grad,
            hooks,
            rest @ ..,
        ] = args
        else {
            return Err(unexpected());
        };
        let rest_ok = rest.len() <= 1
            && rest
                .iter()
                .all(|&m| matches!(self.nodes[m], Node::None | Node::Dict(_)));
        if !rest_ok
            || !matches!(self.nodes[*requires_grad], Node::Bool)
            || !self.is_empty_dict(*hooks)
        {
            return Err(unexpected());
        }
        let (
            Node::Storage { kind, key },
            Node::Int(offset),
            Node::Tuple(size),
            Node::Tuple(stride),
        ) = (
            &self.nodes[*storage],
            &self.nodes[*offset],
            &self.nodes[*size],
            &self.nodes[*stride],
        )
        else {
            return Err(unexpected());
        };
        Ok(RebuildCall {
            kind: *kind,
            key: key.clone(),
            offset: *offset,
            size: self.dims(size)?,
            stride: self.dims(stride)?,
        })
    }

    /// A size or stride tuple, at most [`limits::TENSOR_DIMS`] long, of non-negative ints.
    fn dims(&self, t: &[Id]) -> Result<Vec<u64>, PickleError> {
        if t.len() as u64 > limits::TENSOR_DIMS {
            return Err(PickleError::Limit {
                what: "dimensions of one tensor",
                limit: limits::TENSOR_DIMS,
            });
        }
        t.iter()
            .map(|&v| match self.nodes[v] {
                Node::Int(i) if i >= 0 => Ok(i as u64),
                _ => Err("a tensor size/stride is not a non-negative int".into()),
            })
            .collect()
    }

    /// Reads the storage (once per key) and gathers the tensor, both within the byte limit.
    fn rebuild(&mut self, call: RebuildCall) -> Result<Tensor, PickleError> {
        let bytes = match self.storages.get(&call.key) {
            Some(b) => b.clone(),
            None => {
                let max = self.limits.tensor_bytes - self.tensor_bytes;
                let b = (self.load_storage)(&call.key, max)
                    .map_err(|e| PickleError::Storage(Box::new(e)))?;
                self.count_tensor_bytes(b.len() as u64)?;
                let b = Rc::new(b);
                self.storages.insert(call.key.clone(), b.clone());
                b
            }
        };
        let max = self.limits.tensor_bytes - self.tensor_bytes;
        let layout = view_layout(
            call.kind,
            bytes.len(),
            call.offset,
            &call.size,
            &call.stride,
        )?;
        let out_bytes = layout
            .numel
            .checked_mul(call.kind.gathered_size())
            .filter(|&b| b <= max)
            .ok_or_else(|| self.tensor_limit())?;
        self.count_tensor_bytes(out_bytes)?;
        Ok(gather(call.kind, &bytes, &layout, &call.size))
    }

    /// The state dict the pickle built: a dict of string keys and tensor values, in order. A tensor
    /// under two keys is copied (and counted) for the second.
    fn into_state_dict(mut self, root: Id) -> Result<Vec<(String, Tensor)>, PickleError> {
        let items = match &mut self.nodes[root] {
            Node::Dict(items) => std::mem::take(items),
            other => {
                return Err(
                    format!("the top-level object is {}, not a dict", describe(other)).into(),
                );
            }
        };
        let mut seen_keys = HashSet::new();
        let mut names = HashSet::new();
        let mut uses: HashMap<Id, usize> = HashMap::new();
        for &(k, v) in &items {
            let Node::Str(name) = &self.nodes[k] else {
                return Err(format!("a key is {}, not a string", describe(&self.nodes[k])).into());
            };
            // The same key value twice is a repeat; distinct key values hold distinct bytes of
            // the pickle, so comparing their text costs at most the pickle's size.
            if !seen_keys.insert(k) || !names.insert(name.clone()) {
                return Err(format!("the key {} appears twice", shown(name)).into());
            }
            if !matches!(self.nodes[v], Node::Tensor(_)) {
                return Err(format!(
                    "entry {} is {}, not a tensor",
                    shown(name),
                    describe(&self.nodes[v])
                )
                .into());
            }
            *uses.entry(v).or_default() += 1;
        }
        let mut out = Vec::with_capacity(items.len());
        for (k, v) in items {
            let Node::Str(name) = &self.nodes[k] else {
                unreachable!("checked above")
            };
            let name = name.to_string();
            let left = uses.get_mut(&v).expect("counted above");
            *left -= 1;
            let tensor = if *left == 0 {
                match std::mem::replace(&mut self.nodes[v], Node::None) {
                    Node::Tensor(t) => t,
                    _ => unreachable!("checked above"),
                }
            } else {
                let Node::Tensor(t) = &self.nodes[v] else {
                    unreachable!("checked above")
                };
                let t = t.clone();
                self.count_tensor_bytes(tensor_size(&t))?;
                t
            };
            out.push((name, tensor));
        }
        Ok(out)
    }
}

/// Bytes a tensor's data takes.
fn tensor_size(t: &Tensor) -> u64 {
    match &t.data {
        TensorData::F32(v) => v.len() as u64 * 4,
        TensorData::I64(v) => v.len() as u64 * 8,
    }
}

/// The checked arguments of one `_rebuild_tensor_v2`.
struct RebuildCall {
    kind: StorageKind,
    key: Rc<str>,
    offset: i64,
    size: Vec<u64>,
    stride: Vec<u64>,
}

fn global(module: &str, name: &str) -> Result<Node, PickleError> {
    resolve_global(module, name)
        .map(Node::Global)
        .ok_or_else(|| {
            format!(
                "it references `{}.{}`, which is not on the allow-list",
                shown_bare(module),
                shown_bare(name)
            )
            .into()
        })
}

/// Like [`shown`], without quotes (for `module.name`).
fn shown_bare(s: &str) -> String {
    let q = shown(s);
    q[1..q.len() - 1].to_string()
}

fn pairs(items: Vec<Id>) -> Result<Vec<(Id, Id)>, PickleError> {
    if !items.len().is_multiple_of(2) {
        return Err("odd number of dict items".into());
    }
    Ok(items.chunks_exact(2).map(|kv| (kv[0], kv[1])).collect())
}

/// Where a strided view's elements lie in its storage, all of it checked against the storage.
#[derive(Debug)]
struct ViewLayout {
    numel: u64,
    offset: usize,
    /// `(size, stride)` of the dimensions longer than 1 (the others never move the index, and
    /// dropping them keeps the gather loop at O(1) per element however many there are).
    dims: Vec<(usize, usize)>,
}

/// Checks a view `(offset, size, stride)` of a storage of `storage_bytes` bytes: every product and
/// sum in checked arithmetic, every element inside the storage.
fn view_layout(
    kind: StorageKind,
    storage_bytes: usize,
    offset: i64,
    size: &[u64],
    stride: &[u64],
) -> Result<ViewLayout, PickleError> {
    if size.len() != stride.len() {
        return Err("tensor size and stride disagree".into());
    }
    let offset = usize::try_from(offset).map_err(|_| "a tensor's storage offset is negative")?;
    let overflow = || PickleError::from("a tensor's size overflows");
    // The shape is kept even when it has no elements, so it must not overflow either.
    size.iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d.max(1)))
        .ok_or_else(overflow)?;
    let numel = size
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d))
        .ok_or_else(overflow)?;
    let numel_storage = storage_bytes / kind.size();
    let mut dims = Vec::new();
    if numel > 0 {
        let mut max_index = offset as u64;
        for (&d, &s) in size.iter().zip(stride) {
            max_index = (d - 1)
                .checked_mul(s)
                .and_then(|reach| max_index.checked_add(reach))
                .ok_or_else(overflow)?;
            if d > 1 {
                // Both fit: d ≤ numel and (d - 1)·s ≤ max_index, and both are below the storage
                // length once the check after this loop passes.
                dims.push((d as usize, s as usize));
            }
        }
        if max_index >= numel_storage as u64 {
            return Err(format!(
                "tensor view reaches element {max_index} of a storage of {numel_storage}"
            )
            .into());
        }
    }
    Ok(ViewLayout {
        numel,
        offset,
        dims,
    })
}

/// Gathers a checked view into a contiguous tensor (f32 for floats, i64 for ints).
fn gather(kind: StorageKind, bytes: &[u8], layout: &ViewLayout, size: &[u64]) -> Tensor {
    let elem = kind.size();
    let at = |i: usize| &bytes[i * elem..(i + 1) * elem];
    let data = match kind {
        StorageKind::Float => TensorData::F32(walk(layout, |i| {
            f32::from_le_bytes(at(i).try_into().expect("4 bytes"))
        })),
        StorageKind::Double => TensorData::F32(walk(layout, |i| {
            f64::from_le_bytes(at(i).try_into().expect("8 bytes")) as f32
        })),
        StorageKind::Half => TensorData::F32(walk(layout, |i| {
            half_to_f32(u16::from_le_bytes(at(i).try_into().expect("2 bytes")))
        })),
        StorageKind::Long => TensorData::I64(walk(layout, |i| {
            i64::from_le_bytes(at(i).try_into().expect("8 bytes"))
        })),
        StorageKind::Int => TensorData::I64(walk(layout, |i| {
            i32::from_le_bytes(at(i).try_into().expect("4 bytes")).into()
        })),
    };
    Tensor {
        shape: size.iter().map(|&d| d as usize).collect(),
        data,
    }
}

/// `read(i)` for each element index of the view, in row-major order (last dimension fastest).
fn walk<T>(layout: &ViewLayout, read: impl Fn(usize) -> T) -> Vec<T> {
    let mut out = Vec::with_capacity(layout.numel as usize);
    if layout.numel == 0 {
        return out;
    }
    let dims = &layout.dims;
    let mut counter = vec![0usize; dims.len()];
    let mut idx = layout.offset;
    loop {
        out.push(read(idx));
        let mut d = dims.len();
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            let (len, stride) = dims[d];
            counter[d] += 1;
            idx += stride;
            if counter[d] < len {
                break;
            }
            idx -= len * stride;
            counter[d] = 0;
        }
    }
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

    use crate::exit::{assert_renders_once, render};
    use crate::onnx::fixtures::SplitMix64;

    /// A missing file: the path comes once, from `fs_err`'s cause, and the hint last.
    #[test]
    fn a_missing_file_names_its_path_once() {
        let missing = Path::new("/nonexistent/wms-pth-test/model.pth");
        let err = read_state_dict(missing).unwrap_err();
        assert!(matches!(err, PthError::Open { .. }), "{err:?}");
        assert_renders_once(&err, 1);
        let shown = missing.display().to_string();
        assert_eq!(render(&err).matches(&shown).count(), 1, "{}", render(&err));
    }

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

    /// Test limits: generous values, 1 MiB of tensor data.
    const SMALL: Limits = Limits {
        values: limits::PICKLE_VALUES,
        tensor_bytes: 1 << 20,
    };

    /// Runs a pickle whose storages are those of [`sample`] (`"0"`, `"1"`, `"2"`).
    fn run_with(pickle: &[u8], limits: Limits) -> Result<Vec<(String, Tensor)>, String> {
        let storages: HashMap<String, Vec<u8>> = sample()
            .iter()
            .enumerate()
            .map(|(i, (_, t))| (i.to_string(), tensor_bytes(t)))
            .collect();
        Machine::new(pickle, limits, |key, max| match storages.get(key) {
            Some(b) if b.len() as u64 <= max => Ok(b.clone()),
            Some(_) => Err(PthError::Limit {
                path: "t.pth".into(),
                what: TENSOR_BYTES_WHAT,
                limit: max,
            }),
            None => Err(PthError::Archive {
                path: "t.pth".into(),
                message: format!("no storage {key}"),
            }),
        })
        .read()
        .map_err(|e| e.to_string())
    }

    fn run(pickle: &[u8]) -> Result<Vec<(String, Tensor)>, String> {
        run_with(pickle, SMALL)
    }

    /// `{"t": _rebuild_tensor_v2(<FloatStorage "0">, offset, size, stride, False, {})}`.
    fn view_pickle(offset: i64, size: &[i64], stride: &[i64]) -> Vec<u8> {
        let mut p = PickleWriter::default();
        p.out.extend_from_slice(&[0x80, 2, b'}']);
        p.str("t");
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.out.extend_from_slice(b"((");
        p.str("storage");
        p.global("torch", "FloatStorage");
        p.str("0");
        p.str("cpu");
        p.int(6);
        p.out.extend_from_slice(b"tQ");
        p.int(offset);
        p.tuple(size.iter().copied());
        p.tuple(stride.iter().copied());
        p.out.extend_from_slice(b"\x89}tRs.");
        p.out
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
        let pickle = state_dict_pickle(&refs);
        assert_eq!(run(&pickle).unwrap(), sd);
    }

    #[test]
    fn strided_views_are_gathered() {
        // A 2×2 transpose view of storage [0, 1, 2, 3]: rows are (0, 2), (1, 3).
        let bytes: Vec<u8> = [0f32, 1., 2., 3.]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let layout = view_layout(StorageKind::Float, bytes.len(), 0, &[2, 2], &[1, 2]).unwrap();
        let t = gather(StorageKind::Float, &bytes, &layout, &[2, 2]);
        assert_eq!(t.data, TensorData::F32(vec![0., 2., 1., 3.]));
        // Dimensions of size 1 never move the index, whatever their stride.
        let layout =
            view_layout(StorageKind::Float, bytes.len(), 1, &[1, 3, 1], &[99, 1, 7]).unwrap();
        let t = gather(StorageKind::Float, &bytes, &layout, &[1, 3, 1]);
        assert_eq!(
            (t.shape, t.data),
            (vec![1, 3, 1], TensorData::F32(vec![1., 2., 3.]))
        );
        let err = view_layout(StorageKind::Float, bytes.len(), 2, &[2, 2], &[1, 2]).unwrap_err();
        assert!(err.to_string().contains("reaches element"), "{err}");
    }

    #[test]
    fn foreign_globals_are_refused_without_running_them() {
        // `cos\nsystem\n(S'echo pwned'\ntR.` — the classic payload, as text opcodes.
        let payload = b"\x80\x02cos\nsystem\nX\x0a\x00\x00\x00echo pwned\x85R.";
        let err = run(payload).unwrap_err();
        assert!(
            err.contains("`os.system`") && err.contains("allow-list"),
            "{err}"
        );
        // A name made to forge log lines is shown escaped, on one line.
        let payload = b"\x80\x02\x8c\x03a\nb\x8c\x04::x\r\x93.";
        let err = run(payload).unwrap_err();
        assert!(err.contains(r"`a\nb.\u{3a}:x\r`"), "{err}");
    }

    #[test]
    fn non_dict_payloads_and_garbage_are_clear_errors() {
        let err = run(b"\x80\x02K\x05").unwrap_err();
        assert!(err.contains("truncated"), "{err}");
        let err = run(b"\x80\x02\x81.").unwrap_err();
        assert!(err.contains("instantiates"), "{err}");
        let err = run(b"\x80\x02K\x05.").unwrap_err();
        assert!(err.contains("top-level object is an int"), "{err}");
        // BINUNICODE8 claiming 2^64 - 1 bytes.
        let err = run(b"\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\xff").unwrap_err();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn a_tensor_under_two_keys_is_read_twice_within_the_limit() {
        let sd = sample();
        let refs: Vec<(String, &Tensor)> = sd.iter().map(|(n, t)| (n.clone(), t)).collect();
        let mut p = state_dict_pickle(&refs[..1]);
        // Memoise the tensor (just before `u.`), then add it again under "b".
        let tail = p.split_off(p.len() - 2);
        p.extend_from_slice(b"q\x07");
        p.extend_from_slice(&tail[..1]);
        p.extend_from_slice(b"X\x01\x00\x00\x00bh\x07s.");
        let back = run(&p).unwrap();
        assert_eq!(back[0].1, back[1].1);
        assert_eq!(back[1].0, "b");
        // 24 bytes of storage + 24 gathered fit in 48; the copy for "b" does not.
        let tight = Limits {
            tensor_bytes: 48,
            ..SMALL
        };
        let err = run_with(&p, tight).unwrap_err();
        assert!(err.contains("bytes of tensor data"), "{err}");
    }

    #[test]
    fn the_value_limit_bounds_stack_memo_and_containers() {
        let mut p = b"\x80\x02](".to_vec();
        p.extend(std::iter::repeat_n(*b"h\x00", 5000).flatten());
        p.extend_from_slice(b"l.");
        let p = [&b"\x80\x02]q\x00"[..], &p[3..]].concat();
        let tight = Limits {
            values: 1000,
            ..SMALL
        };
        let err = run_with(&p, tight).unwrap_err();
        assert!(
            err.contains("pickle values") && err.contains("limit of 1000"),
            "{err}"
        );
    }

    #[test]
    fn sizes_offsets_and_strides_from_the_file_are_checked() {
        // Stride 0: a 6-element storage viewed as 2^40 elements (4 TiB gathered).
        let err = run(&view_pickle(0, &[1 << 40], &[0])).unwrap_err();
        assert!(err.contains("bytes of tensor data"), "{err}");
        // numel overflows u64.
        let err = run(&view_pickle(0, &[1 << 40, 1 << 40], &[0, 0])).unwrap_err();
        assert!(err.contains("size overflows"), "{err}");
        // So does an empty tensor whose other dimensions overflow.
        let err = run(&view_pickle(0, &[0, 1 << 40, 1 << 40], &[0, 0, 0])).unwrap_err();
        assert!(err.contains("size overflows"), "{err}");
        // offset + (size - 1) · stride overflows.
        let err = run(&view_pickle(i64::MAX, &[3], &[i64::MAX])).unwrap_err();
        assert!(err.contains("size overflows"), "{err}");
        let err = run(&view_pickle(-1, &[1], &[1])).unwrap_err();
        assert!(err.contains("offset is negative"), "{err}");
        let err = run(&view_pickle(6, &[1], &[1])).unwrap_err();
        assert!(err.contains("reaches element 6 of a storage of 6"), "{err}");
        let err = run(&view_pickle(0, &[1; 65], &[1; 65])).unwrap_err();
        assert!(err.contains("dimensions of one tensor"), "{err}");
        // Many dimensions of size 1 cost nothing per element.
        let t = run(&view_pickle(5, &[1; 64], &[1 << 40; 64])).unwrap();
        assert_eq!(t[0].1.data, TensorData::F32(vec![-6.5]));
        // An in-bounds strided view still reads.
        let t = run(&view_pickle(1, &[2, 2], &[3, 1])).unwrap();
        assert_eq!(t[0].1.data, TensorData::F32(vec![2., 3., 5., -6.5]));
    }

    #[test]
    fn a_repeated_key_is_refused() {
        let sd = sample();
        let refs = [(sd[0].0.clone(), &sd[0].1), (sd[0].0.clone(), &sd[1].1)];
        let err = run(&state_dict_pickle(&refs)).unwrap_err();
        assert!(err.contains("\"a.weight\" appears twice"), "{err}");
    }

    #[test]
    fn an_oversized_zip_entry_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.pth");
        let sd = sample();
        let refs: Vec<(String, &Tensor)> = sd.iter().map(|(n, t)| (n.clone(), t)).collect();
        write_state_dict(&p, &refs).unwrap();
        // Declare data.pkl as 4 GiB - 1 in the central directory (offset 24 of its record).
        let mut bytes = fs_err::read(&p).unwrap();
        let cd = bytes
            .windows(4)
            .position(|w| w == b"PK\x01\x02")
            .expect("central directory");
        bytes[cd + 24..cd + 28].copy_from_slice(&u32::MAX.to_le_bytes());
        fs_err::write(&p, &bytes).unwrap();
        let err = read_state_dict(&p).unwrap_err().to_string();
        assert!(
            err.contains("m.pth") && err.contains("bytes in data.pkl") && err.contains("limit"),
            "{err}"
        );
    }

    #[test]
    fn half_precision_converts() {
        assert_eq!(half_to_f32(0x3c00), 1.0);
        assert_eq!(half_to_f32(0xc000), -2.0);
        assert_eq!(half_to_f32(0x0001), f32::powi(2.0, -24));
    }

    /// Opcodes with plausible arguments, for [`pickle_machine_survives_random_and_mutated_input`].
    fn random_op(rng: &mut SplitMix64, out: &mut Vec<u8>) {
        let pick = |rng: &mut SplitMix64, n: usize| (rng.next_u64() % n as u64) as usize;
        let names = [
            "collections\nOrderedDict\n",
            "torch._utils\n_rebuild_tensor_v2\n",
            "torch._utils\n_rebuild_parameter\n",
            "torch\nFloatStorage\n",
            "torch\nHalfStorage\n",
            "torch\nLongStorage\n",
        ];
        let strs = ["storage", "0", "1", "2", "cpu", "a.weight", ""];
        match pick(rng, 24) {
            0 => out.push(b'c'),
            1 => {
                out.push(b'c');
                out.extend_from_slice(names[pick(rng, names.len())].as_bytes());
            }
            2 => {
                let s = strs[pick(rng, strs.len())];
                out.push(b'X');
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            3 => out.extend_from_slice(&[0x8c, 1, b'0']),
            4 => out.extend_from_slice(&[b'K', rng.next_u64() as u8]),
            5 => {
                out.push(b'J');
                out.extend_from_slice(&(rng.next_u64() as u32).to_le_bytes());
            }
            6 => {
                let n = pick(rng, 10) as u8;
                out.extend_from_slice(&[0x8a, n]);
                out.extend((0..n).map(|_| rng.next_u64() as u8));
            }
            7 => out.extend_from_slice(&[b'q', pick(rng, 4) as u8]),
            8 => out.extend_from_slice(&[b'h', pick(rng, 4) as u8]),
            9 => out.push(0x94),
            10 => {
                out.push(b'r');
                out.extend_from_slice(&(pick(rng, 4) as u32).to_le_bytes());
            }
            11 => {
                out.push(b'j');
                out.extend_from_slice(&(rng.next_u64() as u32).to_le_bytes());
            }
            _ => {
                let ops = b"()]}N\x88\x89tld\x85\x86\x87aesuQRb.\x93";
                out.push(ops[pick(rng, ops.len())]);
            }
        }
    }

    /// A valid pickle changed the ways hostile files change them: bits flipped, bytes replaced,
    /// cut short, a length or count field set huge, an opcode inserted.
    fn mutate(rng: &mut SplitMix64, valid: &[u8]) -> Vec<u8> {
        let mut b = valid.to_vec();
        for _ in 0..1 + rng.next_u64() % 3 {
            let at = (rng.next_u64() % b.len().max(1) as u64) as usize;
            match rng.next_u64() % 5 {
                0 => b[at] ^= 1 << (rng.next_u64() % 8),
                1 => b[at] = rng.next_u64() as u8,
                2 => b.truncate(at),
                3 => {
                    let huge = [0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff];
                    let n = [2, 4, 8][(rng.next_u64() % 3) as usize].min(b.len() - at);
                    b[at..at + n].copy_from_slice(&huge[..n]);
                }
                _ => {
                    let mut op = Vec::new();
                    random_op(rng, &mut op);
                    let at = at.min(b.len());
                    b.splice(at..at, op);
                }
            }
            if b.is_empty() {
                break;
            }
        }
        b
    }

    #[test]
    fn pickle_machine_survives_random_and_mutated_input() {
        let start = std::time::Instant::now();
        let mut rng = SplitMix64::new(11);
        let sd = sample();
        let refs: Vec<(String, &Tensor)> = sd.iter().map(|(n, t)| (n.clone(), t)).collect();
        let valid = state_dict_pickle(&refs);
        let mut outcomes = [0usize; 2];
        for case in 0..6000 {
            let pickle = match case % 3 {
                0 => {
                    let mut p = vec![0x80, 2];
                    for _ in 0..rng.next_u64() % 80 {
                        random_op(&mut rng, &mut p);
                    }
                    p.push(b'.');
                    p
                }
                1 => mutate(&mut rng, &valid),
                _ => (0..rng.next_u64() % 64)
                    .map(|_| rng.next_u64() as u8)
                    .collect(),
            };
            // A panic fails the test; an error is the expected outcome for almost all.
            outcomes[usize::from(run(&pickle).is_ok())] += 1;
        }
        assert!(outcomes[0] > 5000, "{outcomes:?}");
        assert!(start.elapsed().as_secs() < 10, "{:?}", start.elapsed());
    }
}
