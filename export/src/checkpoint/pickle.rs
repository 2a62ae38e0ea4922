//! A restricted, non-executing unpickler.
//!
//! It runs the pickle stack machine over the opcodes that torch checkpoints use
//! (protocol 2, plus the cheap protocol 0 and 3-5 opcodes) but never imports or
//! calls anything: `GLOBAL`/`STACK_GLOBAL` resolve only against a fixed allowlist
//! and produce an inert [`GlobalRef`]; `REDUCE`, `NEWOBJ` and `BUILD` of those
//! globals build our own representation ([`Value`] and [`Obj`]). Any other global
//! is refused with an error naming it.
//!
//! Mutable containers (lists, dicts, sets, instances) live in an arena
//! ([`Unpickled::objs`]) and are referred to by index, so memo sharing behaves as
//! in Python (a dict memoized before `SETITEMS` is seen complete through `BINGET`)
//! and cycles cannot leak memory.

use std::collections::HashMap;
use std::ops::Deref;
use std::rc::Rc;

use anyhow::{Result, anyhow};

use super::DType;

/// The allowlisted globals, by what they do for us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GlobalKind {
    /// `collections.OrderedDict`, `builtins.dict`
    Dict,
    /// `collections.defaultdict`
    DefaultDict,
    /// Lightning's `AttributeDict` (a dict subclass)
    AttributeDict,
    /// `argparse.Namespace`
    Namespace,
    /// `torch._utils._rebuild_tensor_v2`
    RebuildTensorV2,
    /// `torch._utils._rebuild_parameter`
    RebuildParameter,
    /// `torch._utils._rebuild_parameter_with_state`
    RebuildParameterWithState,
    /// `torch._tensor._rebuild_from_type_v2`
    RebuildFromTypeV2,
    /// `torch.Tensor`, `torch.nn.parameter.Parameter`: only ever an argument
    TensorType,
    /// `torch.<X>Storage`; `None` for a storage type we cannot decode
    Storage(Option<DType>),
    /// `torch.Size` (a tuple subclass)
    TorchSize,
    /// `_codecs.encode` (how protocol 2 pickles `bytes`)
    CodecsEncode,
    /// `builtins.set`
    Set,
    /// `builtins.frozenset`
    FrozenSet,
    /// `builtins.list`
    List,
    /// `builtins.tuple`
    Tuple,
    /// `builtins.bytearray`, `builtins.bytes`
    Bytes,
    /// `builtins.object`: only ever an argument of `copyreg._reconstructor`
    Object,
    /// `copyreg._reconstructor` (protocol 0/1 object reconstruction)
    Reconstructor,
    /// `pathlib.*Path`
    Path,
    /// `numpy.core.multiarray.scalar`, `numpy._core.multiarray.scalar`
    NumpyScalar,
    /// `numpy.dtype`
    NumpyDtype,
}

/// A resolved, inert global: what it is and the dotted name the pickle used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GlobalRef {
    pub kind: GlobalKind,
    pub name: String,
}

/// A tensor storage, as named by a persistent id
/// `('storage', storage_type, key, location, numel)`. The location is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StorageRef {
    /// `None` when the storage type is one we cannot decode.
    pub dtype: Option<DType>,
    /// The storage type's dotted name, e.g. `torch.FloatStorage`.
    pub type_name: String,
    /// The record key: the storage lives in `<archive>/data/<key>`.
    pub key: String,
    /// Number of elements the pickle declares.
    pub numel: u64,
}

/// A tensor view onto a storage (`_rebuild_tensor_v2` arguments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TensorRef {
    pub storage: Rc<StorageRef>,
    pub offset: u64,
    pub size: Vec<u64>,
    pub stride: Vec<u64>,
}

/// Index of a mutable object in [`Unpickled::objs`].
pub(crate) type ObjId = usize;

/// An unpickled value. Immutable values are held inline (cheap to clone);
/// mutable containers are arena references.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer that does not fit in i64: little-endian two's complement bytes.
    BigInt(Rc<[u8]>),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Tuple),
    Obj(ObjId),
    Global(Rc<GlobalRef>),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
}

/// Most levels tuples may nest. Tuples are the one value held inline (lists, dicts and
/// instances live in the arena), so this bounds the depth of every value; torch
/// checkpoints nest a few levels.
pub(crate) const MAX_NESTING: u32 = 256;

/// An immutable tuple, with its nesting depth (1 for a tuple of non-tuples).
#[derive(Debug, Clone)]
pub(crate) struct Tuple {
    items: Rc<[Value]>,
    depth: u32,
}

impl Tuple {
    /// `None` when the tuple would nest deeper than [`MAX_NESTING`].
    fn new(items: Vec<Value>) -> Option<Self> {
        let depth = 1 + items.iter().map(Value::nesting).max().unwrap_or(0);
        (depth <= MAX_NESTING).then(|| Tuple {
            items: Rc::from(items),
            depth,
        })
    }
}

impl Deref for Tuple {
    type Target = [Value];

    fn deref(&self) -> &[Value] {
        &self.items
    }
}

impl Drop for Tuple {
    /// Takes nested tuples apart one level at a time, so that dropping a value never
    /// recurses, however deep it is.
    fn drop(&mut self) {
        if !self.items.iter().any(|v| matches!(v, Value::Tuple(_))) {
            return;
        }
        let mut pending = vec![std::mem::take(&mut self.items)];
        while let Some(mut items) = pending.pop() {
            // Shared tuples are left to their other owners.
            if let Some(items) = Rc::get_mut(&mut items) {
                for v in items.iter_mut() {
                    if let Value::Tuple(t) = v {
                        pending.push(std::mem::take(&mut t.items));
                    }
                }
            }
        }
    }
}

impl Value {
    /// How many tuples deep the value is (0 for anything but a tuple).
    fn nesting(&self) -> u32 {
        match self {
            Value::Tuple(t) => t.depth,
            _ => 0,
        }
    }

    /// A short description of the value's kind, for error messages.
    pub(crate) fn kind(&self, objs: &[Obj]) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(_) => "bool".into(),
            Value::Int(_) | Value::BigInt(_) => "int".into(),
            Value::Float(_) => "float".into(),
            Value::Str(_) => "str".into(),
            Value::Bytes(_) => "bytes".into(),
            Value::Tuple(_) => "tuple".into(),
            Value::Obj(id) => match objs.get(*id) {
                Some(Obj::List(_)) => "list".into(),
                Some(Obj::Set(_)) => "set".into(),
                Some(Obj::Dict(d)) => d.class.clone(),
                Some(Obj::Instance(i)) => format!("{} object", i.class.name),
                None => "dangling object".into(),
            },
            Value::Global(g) => format!("global '{}'", g.name),
            Value::Storage(_) => "storage".into(),
            Value::Tensor(_) => "tensor".into(),
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// The hashable subset of keys, for dict de-duplication (Python semantics:
/// `True == 1`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    None,
    Int(i64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
}

fn hash_key(v: &Value) -> Option<Key> {
    match v {
        Value::None => Some(Key::None),
        Value::Bool(b) => Some(Key::Int(i64::from(*b))),
        Value::Int(i) => Some(Key::Int(*i)),
        Value::Str(s) => Some(Key::Str(s.clone())),
        Value::Bytes(b) => Some(Key::Bytes(b.clone())),
        _ => None,
    }
}

/// A dict or dict subclass (`OrderedDict`, `AttributeDict`, `defaultdict`).
#[derive(Debug, Clone, Default)]
pub(crate) struct DictObj {
    /// Dotted class name, e.g. `collections.OrderedDict`.
    pub class: String,
    pub entries: Vec<(Value, Value)>,
    index: HashMap<Key, usize>,
    /// Instance state applied by `BUILD` (e.g. an `OrderedDict`'s `_metadata`); unused.
    pub attrs: Option<Value>,
}

impl DictObj {
    fn new(class: &str) -> Self {
        DictObj {
            class: class.to_string(),
            ..Default::default()
        }
    }

    fn insert(&mut self, k: Value, v: Value) {
        if let Some(h) = hash_key(&k) {
            if let Some(&i) = self.index.get(&h) {
                self.entries[i].1 = v;
                return;
            }
            self.index.insert(h, self.entries.len());
        }
        self.entries.push((k, v));
    }

    /// Looks up a string key.
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        let i = *self.index.get(&Key::Str(Rc::from(key)))?;
        self.entries.get(i).map(|(_, v)| v)
    }
}

/// An instance of an allowlisted class that is not a container
/// (`argparse.Namespace`, `numpy.dtype`, ...).
#[derive(Debug, Clone)]
pub(crate) struct Instance {
    pub class: Rc<GlobalRef>,
    pub args: Vec<Value>,
    /// The state given to `BUILD`, if any.
    pub state: Option<Value>,
}

/// A mutable object in the arena.
#[derive(Debug, Clone)]
pub(crate) enum Obj {
    List(Vec<Value>),
    Set(Vec<Value>),
    Dict(DictObj),
    Instance(Instance),
}

/// The result of unpickling: the root value and the object arena it refers to.
#[derive(Debug)]
pub(crate) struct Unpickled {
    pub root: Value,
    pub objs: Vec<Obj>,
}

impl Unpickled {
    /// The dict behind a value, if it is a dict or dict subclass.
    pub(crate) fn dict(&self, v: &Value) -> Option<&DictObj> {
        match v {
            Value::Obj(id) => match self.objs.get(*id) {
                Some(Obj::Dict(d)) => Some(d),
                _ => None,
            },
            _ => None,
        }
    }

    /// The instance behind a value, if it is one.
    pub(crate) fn instance(&self, v: &Value) -> Option<&Instance> {
        match v {
            Value::Obj(id) => match self.objs.get(*id) {
                Some(Obj::Instance(i)) => Some(i),
                _ => None,
            },
            _ => None,
        }
    }

    /// The attribute dicts of an instance (`BUILD` state: a dict, or a
    /// `(dict, slots dict)` pair), in order.
    pub(crate) fn instance_attrs(&self, inst: &Instance) -> Vec<&DictObj> {
        let mut out = Vec::new();
        match &inst.state {
            Some(Value::Tuple(t)) => {
                for part in t.iter() {
                    if let Some(d) = self.dict(part) {
                        out.push(d);
                    }
                }
            }
            Some(v) => {
                if let Some(d) = self.dict(v) {
                    out.push(d);
                }
            }
            None => {}
        }
        out
    }
}

/// Unpickles `data`. `source` names the pickle in error messages (e.g. `data.pkl`).
pub(crate) fn unpickle(data: &[u8], source: &str) -> Result<Unpickled> {
    let mut m = Machine {
        data,
        pos: 0,
        op_start: 0,
        op: 0,
        source,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        objs: Vec::new(),
        copied: 0,
    };
    let root = m.run()?;
    Ok(Unpickled { root, objs: m.objs })
}

fn op_name(op: u8) -> &'static str {
    match op {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => "an unknown opcode",
    }
}

/// Resolves a global against the allowlist.
fn resolve_global(module: &str, name: &str) -> Option<GlobalKind> {
    use GlobalKind as G;
    let kind = match (module, name) {
        ("collections", "OrderedDict") | ("builtins", "dict") | ("__builtin__", "dict") => G::Dict,
        ("collections", "defaultdict") => G::DefaultDict,
        ("pytorch_lightning.utilities.parsing", "AttributeDict")
        | ("lightning_fabric.utilities.data", "AttributeDict")
        | ("lightning.pytorch.utilities.parsing", "AttributeDict")
        | ("lightning.fabric.utilities.data", "AttributeDict") => G::AttributeDict,
        ("argparse", "Namespace") => G::Namespace,
        ("torch._utils", "_rebuild_tensor_v2") => G::RebuildTensorV2,
        ("torch._utils", "_rebuild_parameter") => G::RebuildParameter,
        ("torch._utils", "_rebuild_parameter_with_state") => G::RebuildParameterWithState,
        ("torch._tensor", "_rebuild_from_type_v2") => G::RebuildFromTypeV2,
        ("torch", "Tensor") | ("torch.nn.parameter", "Parameter") => G::TensorType,
        ("torch", "FloatStorage") => G::Storage(Some(DType::F32)),
        ("torch", "HalfStorage") => G::Storage(Some(DType::F16)),
        ("torch", "BFloat16Storage") => G::Storage(Some(DType::BF16)),
        ("torch", "DoubleStorage") => G::Storage(Some(DType::F64)),
        ("torch", "LongStorage") => G::Storage(Some(DType::I64)),
        ("torch", "IntStorage") => G::Storage(Some(DType::I32)),
        ("torch", "ByteStorage") => G::Storage(Some(DType::U8)),
        ("torch", "BoolStorage") => G::Storage(Some(DType::Bool)),
        // Other storage types (ShortStorage, ComplexFloatStorage, ...) are as
        // inert as these; a tensor using one is refused only if it is needed.
        ("torch", n)
            if n.len() > "Storage".len()
                && n.ends_with("Storage")
                && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
        {
            G::Storage(None)
        }
        ("torch", "Size") => G::TorchSize,
        ("_codecs", "encode") => G::CodecsEncode,
        ("builtins", "set") | ("__builtin__", "set") => G::Set,
        ("builtins", "frozenset") | ("__builtin__", "frozenset") => G::FrozenSet,
        ("builtins", "list") | ("__builtin__", "list") => G::List,
        ("builtins", "tuple") | ("__builtin__", "tuple") => G::Tuple,
        ("builtins", "bytearray") | ("builtins", "bytes") | ("__builtin__", "bytearray") => G::Bytes,
        ("builtins", "object") | ("__builtin__", "object") => G::Object,
        ("copyreg", "_reconstructor") | ("copy_reg", "_reconstructor") => G::Reconstructor,
        ("pathlib", "Path" | "PosixPath" | "WindowsPath" | "PurePath" | "PurePosixPath" | "PureWindowsPath") => G::Path,
        ("numpy.core.multiarray", "scalar") | ("numpy._core.multiarray", "scalar") => G::NumpyScalar,
        ("numpy", "dtype") => G::NumpyDtype,
        _ => return None,
    };
    Some(kind)
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    op_start: usize,
    op: u8,
    source: &'a str,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
    objs: Vec<Obj>,
    /// Values copied so far by REDUCE of container constructors; bounded so
    /// that a small pickle cannot make us copy without end.
    copied: usize,
}

impl Machine<'_> {
    fn malformed(&self, msg: impl std::fmt::Display) -> anyhow::Error {
        anyhow!(
            "{} is malformed: {} ({} at byte {})",
            self.source,
            msg,
            op_name(self.op),
            self.op_start
        )
    }

    fn truncated(&self) -> anyhow::Error {
        anyhow!(
            "{} is truncated: it ends at byte {} inside {} at byte {}",
            self.source,
            self.data.len(),
            op_name(self.op),
            self.op_start
        )
    }

    fn take(&mut self, n: u64) -> Result<&[u8]> {
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            return Err(self.truncated());
        }
        let n = n as usize;
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let s = self.take(N as u64)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take_array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take_array()?))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take_array()?))
    }

    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_le_bytes(self.take_array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take_array()?))
    }

    /// A `\n`-terminated line (text opcodes), without the newline.
    fn line(&mut self) -> Result<&[u8]> {
        let rest = &self.data[self.pos..];
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return Err(self.truncated());
        };
        self.pos += n + 1;
        Ok(&rest[..n])
    }

    fn line_str(&mut self) -> Result<String> {
        let line = self.line()?.to_vec();
        String::from_utf8(line).map_err(|_| self.malformed("text argument is not UTF-8"))
    }

    fn string(&mut self, n: u64) -> Result<Value> {
        let bytes = self.take(n)?;
        Ok(Value::Str(Rc::from(String::from_utf8_lossy(bytes).as_ref())))
    }

    fn bytes(&mut self, n: u64) -> Result<Value> {
        let bytes = self.take(n)?;
        Ok(Value::Bytes(Rc::from(bytes)))
    }

    /// The stack may not be popped below the innermost MARK.
    fn fence(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn push(&mut self, v: Value) {
        self.stack.push(v);
    }

    fn pop(&mut self) -> Result<Value> {
        if self.stack.len() <= self.fence() {
            return Err(self.malformed("stack underflow"));
        }
        self.stack.pop().ok_or_else(|| self.malformed("stack underflow"))
    }

    fn top(&self) -> Result<&Value> {
        if self.stack.len() <= self.fence() {
            return Err(self.malformed("stack underflow"));
        }
        self.stack.last().ok_or_else(|| self.malformed("stack underflow"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let Some(m) = self.marks.pop() else {
            return Err(self.malformed("no MARK on the stack"));
        };
        if m > self.stack.len() {
            return Err(self.malformed("MARK above the stack top"));
        }
        Ok(self.stack.split_off(m))
    }

    fn tuple(&self, items: Vec<Value>) -> Result<Value> {
        Tuple::new(items).map(Value::Tuple).ok_or_else(|| {
            self.malformed(format_args!(
                "its values nest more than {MAX_NESTING} levels deep, far deeper than a checkpoint's; refusing"
            ))
        })
    }

    fn new_obj(&mut self, o: Obj) -> Value {
        self.objs.push(o);
        Value::Obj(self.objs.len() - 1)
    }

    fn memo_put(&mut self, idx: u64) -> Result<()> {
        let v = self.top()?.clone();
        self.memo.insert(idx, v);
        Ok(())
    }

    fn memo_get(&mut self, idx: u64) -> Result<()> {
        let v = self
            .memo
            .get(&idx)
            .cloned()
            .ok_or_else(|| self.malformed(format_args!("memo key {idx} was never stored")))?;
        self.push(v);
        Ok(())
    }

    fn parse_decimal<T: std::str::FromStr>(&self, line: &[u8]) -> Result<T> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| self.malformed("bad decimal argument"))
    }

    fn run(&mut self) -> Result<Value> {
        loop {
            self.op_start = self.pos;
            let Some(&op) = self.data.get(self.pos) else {
                return Err(anyhow!(
                    "{} is truncated: it ends at byte {} without a STOP opcode",
                    self.source,
                    self.data.len()
                ));
            };
            self.op = op;
            self.pos += 1;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(self.malformed(format_args!(
                            "pickle protocol {proto} is newer than any this reader knows (0-5)"
                        )));
                    }
                }
                // FRAME only groups the opcodes that follow; they are read inline.
                0x95 => {
                    self.u64()?;
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    if self.stack.len() > self.fence() {
                        self.stack.pop();
                    } else {
                        self.pop_mark()?;
                    }
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.push(v);
                }
                // Numbers.
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'J' => {
                    let v = self.i32()?;
                    self.push(Value::Int(v.into()));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v.into()));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(v.into()));
                }
                0x8a => {
                    let n = self.u8()?;
                    let v = self.long(n.into())?;
                    self.push(v);
                }
                0x8b => {
                    let n = self.i32()?;
                    if n < 0 {
                        return Err(self.malformed("negative LONG4 length"));
                    }
                    let v = self.long(n as u64)?;
                    self.push(v);
                }
                b'I' => {
                    let line = self.line()?.to_vec();
                    let v = match line.as_slice() {
                        b"00" => Value::Bool(false),
                        b"01" => Value::Bool(true),
                        l => Value::Int(self.parse_decimal(l)?),
                    };
                    self.push(v);
                }
                b'L' => {
                    let mut line = self.line()?.to_vec();
                    if line.last() == Some(&b'L') {
                        line.pop();
                    }
                    let v = self.parse_decimal(&line)?;
                    self.push(Value::Int(v));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take_array()?);
                    self.push(Value::Float(v));
                }
                b'F' => {
                    let line = self.line()?.to_vec();
                    let v = self.parse_decimal(&line)?;
                    self.push(Value::Float(v));
                }
                // Strings and bytes.
                b'X' => {
                    let n = self.u32()?;
                    let v = self.string(n.into())?;
                    self.push(v);
                }
                0x8c => {
                    let n = self.u8()?;
                    let v = self.string(n.into())?;
                    self.push(v);
                }
                0x8d => {
                    let n = self.u64()?;
                    let v = self.string(n)?;
                    self.push(v);
                }
                // Python 2 `str`: torch loads them as UTF-8 text.
                b'T' => {
                    let n = self.i32()?;
                    if n < 0 {
                        return Err(self.malformed("negative BINSTRING length"));
                    }
                    let v = self.string(n as u64)?;
                    self.push(v);
                }
                b'U' => {
                    let n = self.u8()?;
                    let v = self.string(n.into())?;
                    self.push(v);
                }
                b'B' => {
                    let n = self.u32()?;
                    let v = self.bytes(n.into())?;
                    self.push(v);
                }
                b'C' => {
                    let n = self.u8()?;
                    let v = self.bytes(n.into())?;
                    self.push(v);
                }
                0x8e | 0x96 => {
                    let n = self.u64()?;
                    let v = self.bytes(n)?;
                    self.push(v);
                }
                // Containers.
                b')' => {
                    let v = self.tuple(Vec::new())?;
                    self.push(v);
                }
                b't' => {
                    let items = self.pop_mark()?;
                    let v = self.tuple(items)?;
                    self.push(v);
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < self.fence() + n {
                        return Err(self.malformed("stack underflow"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    let v = self.tuple(items)?;
                    self.push(v);
                }
                b']' => {
                    let v = self.new_obj(Obj::List(Vec::new()));
                    self.push(v);
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    let v = self.new_obj(Obj::List(items));
                    self.push(v);
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b'}' => {
                    let v = self.new_obj(Obj::Dict(DictObj::new("dict")));
                    self.push(v);
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let v = self.new_obj(Obj::Dict(DictObj::new("dict")));
                    self.push(v);
                    self.set_items(items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                0x8f => {
                    let v = self.new_obj(Obj::Set(Vec::new()));
                    self.push(v);
                }
                0x90 => {
                    let items = self.pop_mark()?;
                    let target = self.top()?.clone();
                    match target {
                        Value::Obj(id) if matches!(self.objs.get(id), Some(Obj::Set(_))) => {
                            if let Some(Obj::Set(s)) = self.objs.get_mut(id) {
                                s.extend(items);
                            }
                        }
                        other => {
                            let k = other.kind(&self.objs);
                            return Err(self.malformed(format_args!("ADDITEMS on a {k}")));
                        }
                    }
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    let v = self.new_obj(Obj::Set(items));
                    self.push(v);
                }
                // Memo.
                b'q' => {
                    let i = self.u8()?;
                    self.memo_put(i.into())?;
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i.into())?;
                }
                b'p' => {
                    let line = self.line()?.to_vec();
                    let i = self.parse_decimal(&line)?;
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = self.memo.len() as u64;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.u8()?;
                    self.memo_get(i.into())?;
                }
                b'j' => {
                    let i = self.u32()?;
                    self.memo_get(i.into())?;
                }
                b'g' => {
                    let line = self.line()?.to_vec();
                    let i = self.parse_decimal(&line)?;
                    self.memo_get(i)?;
                }
                // Globals and object construction.
                b'c' => {
                    let module = self.line_str()?;
                    let name = self.line_str()?;
                    let g = self.global(&module, &name)?;
                    self.push(g);
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Some(module), Some(name)) = (module.as_str(), name.as_str()) else {
                        return Err(self.malformed("STACK_GLOBAL needs two strings"));
                    };
                    let g = self.global(module, name)?;
                    self.push(g);
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let Value::Tuple(args) = args else {
                        let k = args.kind(&self.objs);
                        return Err(self.malformed(format_args!("REDUCE arguments are a {k}")));
                    };
                    let v = self.call(&func, &args)?;
                    self.push(v);
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let Value::Tuple(args) = args else {
                        return Err(self.malformed("NEWOBJ arguments are not a tuple"));
                    };
                    let v = self.instantiate(&cls, &args)?;
                    self.push(v);
                }
                0x92 => {
                    let kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let Value::Tuple(args) = args else {
                        return Err(self.malformed("NEWOBJ_EX arguments are not a tuple"));
                    };
                    let no_kwargs = match &kwargs {
                        Value::Obj(id) => {
                            matches!(self.objs.get(*id), Some(Obj::Dict(d)) if d.entries.is_empty())
                        }
                        Value::None => true,
                        _ => false,
                    };
                    if !no_kwargs {
                        return Err(self.malformed("NEWOBJ_EX with keyword arguments"));
                    }
                    let v = self.instantiate(&cls, &args)?;
                    self.push(v);
                }
                b'b' => {
                    let state = self.pop()?;
                    let target = self.top()?.clone();
                    self.build(&target, state)?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent_load(&pid)?;
                    self.push(v);
                }
                b'P' => {
                    let line = self.line()?.to_vec();
                    let pid = Value::Str(Rc::from(String::from_utf8_lossy(&line).as_ref()));
                    let v = self.persistent_load(&pid)?;
                    self.push(v);
                }
                b'S' | b'V' | b'i' | b'o' | 0x82..=0x84 | 0x97 | 0x98 => {
                    return Err(self.malformed("this opcode never appears in a torch checkpoint"));
                }
                _ => {
                    return Err(self.malformed(format_args!("unknown opcode 0x{op:02x}")));
                }
            }
        }
    }

    /// LONG1/LONG4: little-endian two's complement.
    fn long(&mut self, n: u64) -> Result<Value> {
        let bytes = self.take(n)?;
        if bytes.is_empty() {
            return Ok(Value::Int(0));
        }
        let negative = bytes[bytes.len() - 1] & 0x80 != 0;
        let fill = if negative { 0xff } else { 0 };
        // Drop redundant sign bytes, then see whether it fits in i64.
        let mut len = bytes.len();
        while len > 1 && bytes[len - 1] == fill && (bytes[len - 2] & 0x80 != 0) == negative {
            len -= 1;
        }
        if len <= 8 {
            let mut a = [fill; 8];
            a[..len].copy_from_slice(&bytes[..len]);
            Ok(Value::Int(i64::from_le_bytes(a)))
        } else {
            Ok(Value::BigInt(Rc::from(&bytes[..len])))
        }
    }

    fn global(&self, module: &str, name: &str) -> Result<Value> {
        match resolve_global(module, name) {
            Some(kind) => Ok(Value::Global(Rc::new(GlobalRef {
                kind,
                name: format!("{module}.{name}"),
            }))),
            None => Err(anyhow!(
                "{} names global '{}.{}', which a checkpoint never needs; refusing to load",
                self.source,
                module.escape_debug(),
                name.escape_debug()
            )),
        }
    }

    fn append(&mut self, items: Vec<Value>) -> Result<()> {
        let target = self.top()?.clone();
        if let Value::Obj(id) = target
            && let Some(Obj::List(l)) = self.objs.get_mut(id)
        {
            l.extend(items);
            return Ok(());
        }
        let k = target.kind(&self.objs);
        Err(self.malformed(format_args!("cannot append to a {k}")))
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<()> {
        if !items.len().is_multiple_of(2) {
            return Err(self.malformed("odd number of items for a dict"));
        }
        let target = self.top()?.clone();
        if let Value::Obj(id) = target
            && let Some(Obj::Dict(d)) = self.objs.get_mut(id)
        {
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                d.insert(k, v);
            }
            return Ok(());
        }
        let k = target.kind(&self.objs);
        Err(self.malformed(format_args!("cannot set items on a {k}")))
    }

    /// Accounts for `n` copied values.
    fn charge(&mut self, n: usize) -> Result<()> {
        let limit = self.data.len().saturating_mul(16).saturating_add(1 << 16);
        self.copied = self.copied.saturating_add(n);
        if self.copied > limit {
            return Err(self.malformed(format_args!(
                "it copies more than {limit} values, far more than its size allows; refusing"
            )));
        }
        Ok(())
    }

    /// Items of a list, tuple or set argument (copied, and charged for).
    fn iter_items(&mut self, v: &Value) -> Result<Option<Vec<Value>>> {
        let items = match v {
            Value::Tuple(t) => t.to_vec(),
            Value::Obj(id) => match self.objs.get(*id) {
                Some(Obj::List(l) | Obj::Set(l)) => l.clone(),
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        self.charge(items.len())?;
        Ok(Some(items))
    }

    fn bad_call(&self, g: &GlobalRef, why: &str) -> anyhow::Error {
        self.malformed(format_args!("cannot apply '{}' here: {why}", g.name))
    }

    fn new_dict(&mut self, g: &GlobalRef, init: Option<&Value>) -> Result<Value> {
        let mut d = DictObj::new(&g.name);
        if let Some(init) = init {
            if let Some(src) = match init {
                Value::Obj(id) => match self.objs.get(*id) {
                    Some(Obj::Dict(src)) => Some(src.entries.clone()),
                    _ => None,
                },
                _ => None,
            } {
                self.charge(src.len())?;
                for (k, v) in src {
                    d.insert(k, v);
                }
            } else {
                let pairs = self
                    .iter_items(init)?
                    .ok_or_else(|| self.bad_call(g, "expected an iterable of pairs"))?;
                for p in pairs {
                    match p {
                        Value::Tuple(kv) if kv.len() == 2 => d.insert(kv[0].clone(), kv[1].clone()),
                        _ => return Err(self.bad_call(g, "expected an iterable of pairs")),
                    }
                }
            }
        }
        Ok(self.new_obj(Obj::Dict(d)))
    }

    /// `REDUCE`: apply an allowlisted callable to its arguments.
    fn call(&mut self, func: &Value, args: &[Value]) -> Result<Value> {
        use GlobalKind as G;
        let Value::Global(g) = func else {
            let k = func.kind(&self.objs);
            return Err(self.malformed(format_args!("REDUCE calls a {k}")));
        };
        match g.kind {
            G::RebuildTensorV2 => self.rebuild_tensor(g, args),
            G::RebuildParameter | G::RebuildParameterWithState => match args.first() {
                Some(t @ Value::Tensor(_)) => Ok(t.clone()),
                _ => Err(self.bad_call(g, "the first argument is not a tensor")),
            },
            G::RebuildFromTypeV2 => {
                // (func, new_type, args, state): we only care about func(*args).
                let (Some(Value::Global(f)), Some(Value::Tuple(inner))) = (args.first(), args.get(2)) else {
                    return Err(self.bad_call(g, "expected (func, type, args, state)"));
                };
                if !matches!(
                    f.kind,
                    G::RebuildTensorV2 | G::RebuildParameter | G::RebuildParameterWithState
                ) {
                    return Err(self.bad_call(g, "it wraps something other than a tensor"));
                }
                let f = Value::Global(f.clone());
                let inner = inner.clone();
                self.call(&f, &inner)
            }
            G::Dict | G::AttributeDict => match args {
                [] => self.new_dict(g, None),
                [init] => self.new_dict(g, Some(init)),
                _ => Err(self.bad_call(g, "too many arguments")),
            },
            G::DefaultDict => match args {
                [] | [_] => self.new_dict(g, None),
                [_, init] => self.new_dict(g, Some(init)),
                _ => Err(self.bad_call(g, "too many arguments")),
            },
            G::Namespace | G::Object => {
                if args.is_empty() {
                    self.instantiate(func, args)
                } else {
                    Err(self.bad_call(g, "unexpected arguments"))
                }
            }
            G::Set | G::FrozenSet | G::List | G::Tuple | G::TorchSize => {
                let items = match args {
                    [] => Vec::new(),
                    [it] => self
                        .iter_items(it)?
                        .ok_or_else(|| self.bad_call(g, "the argument is not a sequence"))?,
                    _ => return Err(self.bad_call(g, "too many arguments")),
                };
                Ok(match g.kind {
                    G::Set | G::FrozenSet => self.new_obj(Obj::Set(items)),
                    G::List => self.new_obj(Obj::List(items)),
                    _ => self.tuple(items)?,
                })
            }
            G::Bytes => match args {
                [] => Ok(Value::Bytes(Rc::from(Vec::new()))),
                [Value::Bytes(b)] => Ok(Value::Bytes(b.clone())),
                [Value::Str(s), Value::Str(enc), ..] => self.encode(g, s, enc),
                _ => Err(self.bad_call(g, "unsupported arguments")),
            },
            G::CodecsEncode => match args {
                [Value::Str(s)] => self.encode(g, s, "utf-8"),
                [Value::Str(s), Value::Str(enc), ..] => self.encode(g, s, enc),
                _ => Err(self.bad_call(g, "expected (str, encoding)")),
            },
            G::Reconstructor => {
                // copyreg._reconstructor(cls, base, state)
                let (Some(cls), Some(state)) = (args.first(), args.get(2)) else {
                    return Err(self.bad_call(g, "expected (cls, base, state)"));
                };
                let obj = self.instantiate(cls, &[])?;
                if !matches!(state, Value::None) {
                    let entries = self.dict_entries(state);
                    self.charge(entries.as_ref().map_or(0, Vec::len))?;
                    match (&obj, entries) {
                        (Value::Obj(id), Some(entries)) => {
                            if let Some(Obj::Dict(d)) = self.objs.get_mut(*id) {
                                for (k, v) in entries {
                                    d.insert(k, v);
                                }
                            }
                        }
                        _ => return Err(self.bad_call(g, "unsupported base state")),
                    }
                }
                Ok(obj)
            }
            G::Path => {
                let mut out = String::new();
                for a in args {
                    let Value::Str(part) = a else {
                        return Err(self.bad_call(g, "path parts must be strings"));
                    };
                    if !out.is_empty() && !out.ends_with('/') {
                        out.push('/');
                    }
                    out.push_str(part);
                }
                Ok(Value::Str(Rc::from(out)))
            }
            G::NumpyDtype => Ok(self.new_obj(Obj::Instance(Instance {
                class: g.clone(),
                args: args.to_vec(),
                state: None,
            }))),
            G::NumpyScalar => {
                let (Some(dtype), Some(Value::Bytes(raw))) = (args.first(), args.get(1)) else {
                    return Err(self.bad_call(g, "expected (dtype, bytes)"));
                };
                Ok(self.numpy_scalar(dtype, raw).unwrap_or_else(|| {
                    let inst = Instance {
                        class: g.clone(),
                        args: args.to_vec(),
                        state: None,
                    };
                    self.new_obj(Obj::Instance(inst))
                }))
            }
            G::TensorType | G::Storage(_) => Err(self.bad_call(g, "it is never called")),
        }
    }

    fn dict_entries(&self, v: &Value) -> Option<Vec<(Value, Value)>> {
        match v {
            Value::Obj(id) => match self.objs.get(*id)? {
                Obj::Dict(d) => Some(d.entries.clone()),
                _ => None,
            },
            _ => None,
        }
    }

    fn encode(&self, g: &GlobalRef, s: &str, encoding: &str) -> Result<Value> {
        match encoding.to_ascii_lowercase().replace('_', "-").as_str() {
            "latin1" | "latin-1" | "iso-8859-1" => {
                let mut out = Vec::with_capacity(s.len());
                for c in s.chars() {
                    let b = u8::try_from(u32::from(c)).map_err(|_| self.bad_call(g, "character outside latin-1"))?;
                    out.push(b);
                }
                Ok(Value::Bytes(Rc::from(out)))
            }
            "utf8" | "utf-8" | "ascii" => Ok(Value::Bytes(Rc::from(s.as_bytes()))),
            _ => Err(self.bad_call(g, "unsupported encoding")),
        }
    }

    /// Decodes a numpy scalar of a plain numeric dtype; `None` if it is not one.
    fn numpy_scalar(&self, dtype: &Value, raw: &[u8]) -> Option<Value> {
        let Value::Obj(id) = dtype else { return None };
        let Some(Obj::Instance(inst)) = self.objs.get(*id) else {
            return None;
        };
        let spec = inst.args.first()?.as_str()?;
        // BUILD state of a numpy dtype: (version, byteorder, ...)
        let big = match &inst.state {
            Some(Value::Tuple(t)) => t.get(1).and_then(Value::as_str) == Some(">"),
            _ => false,
        };
        let mut bytes = raw.to_vec();
        if big {
            bytes.reverse();
        }
        let int = |signed: bool| -> Option<Value> {
            if bytes.is_empty() || bytes.len() > 8 {
                return None;
            }
            let neg = signed && bytes[bytes.len() - 1] & 0x80 != 0;
            let mut a = [if neg { 0xff } else { 0 }; 8];
            a[..bytes.len()].copy_from_slice(&bytes);
            let v = i64::from_le_bytes(a);
            if !signed && bytes.len() == 8 && v < 0 {
                return None;
            }
            Some(Value::Int(v))
        };
        match (spec, bytes.len()) {
            ("f8", 8) => Some(Value::Float(f64::from_le_bytes(bytes.try_into().ok()?))),
            ("f4", 4) => Some(Value::Float(f32::from_le_bytes(bytes.try_into().ok()?).into())),
            ("b1", 1) => Some(Value::Bool(bytes[0] != 0)),
            ("i1", 1) | ("i2", 2) | ("i4", 4) | ("i8", 8) => int(true),
            ("u1", 1) | ("u2", 2) | ("u4", 4) | ("u8", 8) => int(false),
            _ => None,
        }
    }

    /// `NEWOBJ`: `cls.__new__(cls, *args)` for allowlisted classes.
    fn instantiate(&mut self, cls: &Value, args: &[Value]) -> Result<Value> {
        use GlobalKind as G;
        let Value::Global(g) = cls else {
            let k = cls.kind(&self.objs);
            return Err(self.malformed(format_args!("cannot instantiate a {k}")));
        };
        match g.kind {
            G::Namespace | G::Object => Ok(self.new_obj(Obj::Instance(Instance {
                class: g.clone(),
                args: Vec::new(),
                state: None,
            }))),
            // dict.__new__ ignores its arguments; items arrive via SETITEMS.
            G::Dict | G::AttributeDict | G::DefaultDict => self.new_dict(g, None),
            G::Set | G::List => Ok(self.new_obj(if g.kind == G::Set {
                Obj::Set(Vec::new())
            } else {
                Obj::List(Vec::new())
            })),
            G::FrozenSet | G::Tuple | G::TorchSize | G::Path | G::Bytes => self.call(cls, args),
            _ => Err(self.bad_call(g, "it is not a class a checkpoint instantiates")),
        }
    }

    /// `BUILD`: apply `state` to `target`.
    fn build(&mut self, target: &Value, state: Value) -> Result<()> {
        let k = target.kind(&self.objs);
        if let Value::Obj(id) = target {
            match self.objs.get_mut(*id) {
                Some(Obj::Instance(inst)) => {
                    inst.state = Some(state);
                    return Ok(());
                }
                Some(Obj::Dict(d)) => {
                    d.attrs = Some(state);
                    return Ok(());
                }
                _ => {}
            }
        }
        Err(self.malformed(format_args!("BUILD cannot set the state of a {k}")))
    }

    /// `BINPERSID`: torch's `('storage', storage_type, key, location, numel)`.
    fn persistent_load(&mut self, pid: &Value) -> Result<Value> {
        let Value::Tuple(t) = pid else {
            let k = pid.kind(&self.objs);
            return Err(self.malformed(format_args!(
                "persistent id is a {k}, not a ('storage', type, key, location, numel) tuple"
            )));
        };
        let [tag, ty, key, _location, numel] = &t[..] else {
            return Err(self.malformed(format_args!(
                "persistent id has {} fields, not 5 ('storage', type, key, location, numel)",
                t.len()
            )));
        };
        if tag.as_str() != Some("storage") {
            return Err(self.malformed("persistent id is not a 'storage' reference"));
        }
        let Value::Global(g) = ty else {
            return Err(self.malformed("persistent id's storage type is not a storage global"));
        };
        let GlobalKind::Storage(dtype) = g.kind else {
            return Err(self.malformed(format_args!(
                "persistent id's storage type is '{}', not a storage type",
                g.name
            )));
        };
        let key = match key {
            Value::Str(s) => s.to_string(),
            Value::Int(i) => i.to_string(),
            _ => return Err(self.malformed("persistent id's storage key is not a string")),
        };
        let &Value::Int(numel) = numel else {
            return Err(self.malformed("persistent id's element count is not an integer"));
        };
        let numel = u64::try_from(numel).map_err(|_| self.malformed("persistent id's element count is negative"))?;
        Ok(Value::Storage(Rc::new(StorageRef {
            dtype,
            type_name: g.name.clone(),
            key,
            numel,
        })))
    }

    fn ints(&self, v: &Value, what: &str) -> Result<Vec<u64>> {
        let Value::Tuple(t) = v else {
            return Err(self.malformed(format_args!("tensor {what} is not a tuple")));
        };
        t.iter()
            .map(|x| match x {
                Value::Int(i) => {
                    u64::try_from(*i).map_err(|_| self.malformed(format_args!("tensor {what} is negative")))
                }
                _ => Err(self.malformed(format_args!("tensor {what} holds a non-integer"))),
            })
            .collect()
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
    /// backward_hooks[, metadata])`
    fn rebuild_tensor(&self, g: &GlobalRef, args: &[Value]) -> Result<Value> {
        if !(4..=7).contains(&args.len()) {
            return Err(self.bad_call(g, "expected (storage, offset, size, stride, ...)"));
        }
        let Value::Storage(storage) = &args[0] else {
            return Err(self.bad_call(g, "the first argument is not a storage"));
        };
        let &Value::Int(offset) = &args[1] else {
            return Err(self.bad_call(g, "the storage offset is not an integer"));
        };
        let offset = u64::try_from(offset).map_err(|_| self.bad_call(g, "the storage offset is negative"))?;
        let size = self.ints(&args[2], "size")?;
        let stride = self.ints(&args[3], "stride")?;
        if size.len() != stride.len() {
            return Err(self.bad_call(g, "size and stride differ in length"));
        }
        Ok(Value::Tensor(Rc::new(TensorRef {
            storage: storage.clone(),
            offset,
            size,
            stride,
        })))
    }
}

/// A tiny pickle writer for tests.
#[cfg(test)]
pub(crate) mod build {
    pub(crate) struct P(pub Vec<u8>);

    impl P {
        pub fn new() -> Self {
            P(vec![0x80, 2])
        }
        pub fn op(mut self, b: u8) -> Self {
            self.0.push(b);
            self
        }
        pub fn raw(mut self, b: &[u8]) -> Self {
            self.0.extend_from_slice(b);
            self
        }
        pub fn global(self, module: &str, name: &str) -> Self {
            self.op(b'c')
                .raw(module.as_bytes())
                .op(b'\n')
                .raw(name.as_bytes())
                .op(b'\n')
        }
        pub fn str(self, s: &str) -> Self {
            let n = (s.len() as u32).to_le_bytes();
            self.op(b'X').raw(&n).raw(s.as_bytes())
        }
        pub fn int(self, i: i32) -> Self {
            self.op(b'J').raw(&i.to_le_bytes())
        }
        pub fn float(self, f: f64) -> Self {
            self.op(b'G').raw(&f.to_be_bytes())
        }
        pub fn mark(self) -> Self {
            self.op(b'(')
        }
        pub fn tuple(self) -> Self {
            self.op(b't')
        }
        pub fn empty_tuple(self) -> Self {
            self.op(b')')
        }
        pub fn empty_dict(self) -> Self {
            self.op(b'}')
        }
        pub fn empty_list(self) -> Self {
            self.op(b']')
        }
        pub fn reduce(self) -> Self {
            self.op(b'R')
        }
        pub fn setitems(self) -> Self {
            self.op(b'u')
        }
        pub fn put(self, i: u8) -> Self {
            self.op(b'q').op(i)
        }
        pub fn get(self, i: u8) -> Self {
            self.op(b'h').op(i)
        }
        pub fn stop(self) -> Vec<u8> {
            self.op(b'.').0
        }
        /// Pushes `_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`.
        /// `storage`: (type, key, location, numel); `view`: (offset, size, stride).
        pub fn tensor(self, storage: (&str, &str, &str, i32), view: (i32, &[i32], &[i32])) -> Self {
            let (storage_type, key, location, numel) = storage;
            let (offset, size, stride) = view;
            let mut p = self
                .global("torch._utils", "_rebuild_tensor_v2")
                .mark()
                .mark()
                .str("storage")
                .global("torch", storage_type)
                .str(key)
                .str(location)
                .int(numel)
                .tuple()
                .op(b'Q')
                .int(offset)
                .mark();
            for &s in size {
                p = p.int(s);
            }
            p = p.tuple().mark();
            for &s in stride {
                p = p.int(s);
            }
            p.tuple()
                .op(0x89)
                .global("collections", "OrderedDict")
                .empty_tuple()
                .reduce()
                .tuple()
                .reduce()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::build::P;
    use super::*;

    fn err(data: &[u8]) -> String {
        format!("{:#}", unpickle(data, "data.pkl").unwrap_err())
    }

    #[test]
    fn foreign_global_is_refused_by_name() {
        // cos\nsystem\n + ('ls',) + REDUCE
        let data = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R.";
        let e = err(data);
        assert!(e.contains("'os.system'"), "{e}");
        assert!(e.contains("data.pkl"), "{e}");
        assert!(e.contains("refusing to load"), "{e}");
    }

    #[test]
    fn foreign_stack_global_is_refused_by_name() {
        let data = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93X\x01\x00\x00\x001\x85R.";
        let e = err(data);
        assert!(e.contains("'builtins.eval'"), "{e}");
        // Near-misses of allowlisted names are refused too.
        let e = err(&P::new().global("torch", "load").stop());
        assert!(e.contains("'torch.load'"), "{e}");
        let e = err(&P::new().global("torch._utils", "_rebuild_tensor_v2x").stop());
        assert!(e.contains("_rebuild_tensor_v2x"), "{e}");
        let e = err(&P::new().global("torch", "Storage").stop());
        assert!(e.contains("'torch.Storage'"), "{e}");
    }

    #[test]
    fn every_prefix_of_a_pickle_is_an_error_not_a_panic() {
        let data = P::new()
            .empty_dict()
            .put(0)
            .mark()
            .str("w")
            .tensor(("FloatStorage", "0", "cpu", 4), (0, &[2, 2], &[2, 1]))
            .str("x")
            .float(1.5)
            .setitems()
            .stop();
        assert!(unpickle(&data, "data.pkl").is_ok());
        for n in 0..data.len() {
            let e = unpickle(&data[..n], "data.pkl").unwrap_err().to_string();
            assert!(e.contains("truncated"), "prefix {n}: {e}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        // Deterministic byte mutations of a valid pickle.
        let data = P::new()
            .empty_dict()
            .put(0)
            .mark()
            .str("w")
            .tensor(("HalfStorage", "0", "cuda:0", 4), (1, &[3], &[1]))
            .str("args")
            .global("argparse", "Namespace")
            .empty_tuple()
            .op(0x81)
            .empty_dict()
            .mark()
            .str("a")
            .int(1)
            .setitems()
            .op(b'b')
            .setitems()
            .stop();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut d = data.clone();
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed % d.len() as u64) as usize;
                d[i] = (seed >> 32) as u8;
            }
            let _ = unpickle(&d, "data.pkl");
        }
    }

    #[test]
    fn memo_shares_mutable_objects() {
        // d = {}; memo[0] = d; l = [d]; d['k'] = 1; return (l, d) via memo
        let data = P::new()
            .empty_dict()
            .put(0)
            .empty_list()
            .get(0)
            .op(b'a')
            .put(1)
            .get(0)
            .str("k")
            .int(1)
            .op(b's')
            .op(b'0')
            .get(1)
            .stop();
        let u = unpickle(&data, "t").unwrap();
        let Value::Obj(l) = u.root else { panic!() };
        let Obj::List(items) = &u.objs[l] else { panic!() };
        let d = u.dict(&items[0]).unwrap();
        assert!(matches!(d.get("k"), Some(Value::Int(1))));
    }

    #[test]
    fn protocol_4_opcodes() {
        let mut data = vec![0x80, 4, 0x95];
        let body: Vec<u8> = [
            &[0x8c, 11][..],
            b"collections",
            &[0x94, 0x8c, 11],
            b"OrderedDict",
            &[0x94, 0x93, 0x94, b')', b'R', 0x94],
            // key 'a' -> b'\x01\x02' (SHORT_BINBYTES)
            &[0x8c, 1, b'a', 0x94, b'C', 2, 1, 2],
            b"s",
            // key 'b' -> {1, 2} (EMPTY_SET, MARK, ..., ADDITEMS)
            &[0x8c, 1, b'b', 0x8f, b'(', b'K', 1, b'K', 2, 0x90, b's'],
            // key 'c' -> -129 (LONG1 2 bytes)
            &[0x8c, 1, b'c', 0x8a, 2, 0x7f, 0xff, b's'],
            // key 'd' -> 2**64 (LONG1 9 bytes)
            &[0x8c, 1, b'd', 0x8a, 9, 0, 0, 0, 0, 0, 0, 0, 0, 1, b's'],
            // key 'e' -> BINUNICODE8 'xy'
            &[0x8c, 1, b'e', 0x8d, 2, 0, 0, 0, 0, 0, 0, 0, b'x', b'y', b's'],
            // key 'f' -> memo get 2 (the OrderedDict global)
            &[0x8c, 1, b'f', b'h', 2, b's'],
            b".",
        ]
        .concat();
        data.extend_from_slice(&(body.len() as u64).to_le_bytes());
        data.extend_from_slice(&body);
        let u = unpickle(&data, "t").unwrap();
        let d = u.dict(&u.root).unwrap();
        assert_eq!(d.class, "collections.OrderedDict");
        assert!(matches!(d.get("a"), Some(Value::Bytes(b)) if b[..] == [1, 2]));
        let Some(Value::Obj(s)) = d.get("b") else { panic!() };
        assert!(matches!(&u.objs[*s], Obj::Set(v) if v.len() == 2));
        assert!(matches!(d.get("c"), Some(Value::Int(-129))));
        assert!(matches!(d.get("d"), Some(Value::BigInt(_))));
        assert!(matches!(d.get("e"), Some(Value::Str(s)) if &**s == "xy"));
        assert!(matches!(d.get("f"), Some(Value::Global(g)) if g.name == "collections.OrderedDict"));
    }

    #[test]
    fn tensor_and_namespace_shapes() {
        let data = P::new()
            .mark()
            .tensor(("LongStorage", "7", "cuda:0", 12), (2, &[2, 3], &[1, 2]))
            .global("argparse", "Namespace")
            .empty_tuple()
            .op(0x81)
            .empty_dict()
            .str("heads")
            .int(2)
            .op(b's')
            .op(b'b')
            .tuple()
            .stop();
        let u = unpickle(&data, "t").unwrap();
        let Value::Tuple(t) = &u.root else { panic!() };
        let Value::Tensor(tr) = &t[0] else { panic!() };
        assert_eq!(tr.storage.key, "7");
        assert_eq!(tr.storage.dtype, Some(DType::I64));
        assert_eq!(tr.storage.numel, 12);
        assert_eq!((tr.offset, &tr.size[..], &tr.stride[..]), (2, &[2, 3][..], &[1, 2][..]));
        let inst = u.instance(&t[1]).unwrap();
        assert_eq!(inst.class.name, "argparse.Namespace");
        let attrs = u.instance_attrs(inst);
        assert!(matches!(attrs[0].get("heads"), Some(Value::Int(2))));
    }

    #[test]
    fn copy_bombs_are_refused() {
        // l = [None] * 4096; then set(l) 100k times: ~700 kB of pickle asking
        // for 400M copied values.
        let mut p = P::new().empty_list().mark();
        for _ in 0..4096 {
            p = p.op(b'N');
        }
        p = p.op(b'e').put(0).global("builtins", "set").put(1).op(b'0');
        for _ in 0..100_000 {
            p = p.get(1).get(0).op(0x85).reduce().op(b'0');
        }
        let e = err(&p.stop());
        assert!(e.contains("copies more than"), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused_by_its_limit() {
        // 200,000 nested one-element tuples in a 200 kB pickle: once an abort (the stack
        // overflowed while the nested values were dropped), now an error naming the limit.
        for levels in [200_000, 100_000, MAX_NESTING as usize + 1] {
            let mut p = P::new().op(b'N');
            for _ in 0..levels {
                p = p.op(0x85);
            }
            let e = err(&p.stop());
            assert!(
                e.contains(&format!("more than {MAX_NESTING} levels deep")),
                "{levels}: {e}"
            );
        }
        // The same through MARK ... TUPLE.
        let mut p = P::new();
        for _ in 0..1000 {
            p = p.mark();
        }
        p = p.op(b'N');
        for _ in 0..1000 {
            p = p.tuple();
        }
        let e = err(&p.stop());
        assert!(e.contains("levels deep"), "{e}");
        let mut p = P::new().op(b'N');
        for _ in 0..MAX_NESTING {
            p = p.op(0x85);
        }
        let u = unpickle(&p.stop(), "t").unwrap();
        assert_eq!(u.root.nesting(), MAX_NESTING);
    }

    #[test]
    fn dropping_deep_tuples_never_recurses() {
        // Built past the reader's limit on purpose, on a small stack: a recursive drop
        // of a million levels would overflow it.
        std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(|| {
                let mut v = Value::None;
                for _ in 0..1_000_000 {
                    v = Value::Tuple(Tuple {
                        items: Rc::from(vec![v]),
                        depth: 0,
                    });
                }
                let shared = v.clone();
                drop(v);
                assert!(matches!(&shared, Value::Tuple(t) if t.len() == 1));
                drop(shared);
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn malformed_structures_are_errors() {
        // SETITEMS on a list.
        let e = err(&P::new().empty_list().mark().str("a").int(1).setitems().stop());
        assert!(e.contains("cannot set items on a list"), "{e}");
        // Pop through a MARK.
        let e = err(&P::new().int(1).mark().op(b'R').stop());
        assert!(e.contains("stack underflow"), "{e}");
        // Memo miss.
        let e = err(&P::new().get(9).stop());
        assert!(e.contains("memo key 9"), "{e}");
        // Unknown storage type is inert but a storage; persistent id of the wrong shape.
        let e = err(&P::new().mark().str("storage").tuple().op(b'Q').stop());
        assert!(e.contains("persistent id has 1 fields"), "{e}");
        // Newer protocol.
        let e = err(&[0x80, 6, b'N', b'.']);
        assert!(e.contains("protocol 6"), "{e}");
        // An allowlisted global used in a way a checkpoint never does.
        let e = err(&P::new().global("torch", "FloatStorage").empty_tuple().reduce().stop());
        assert!(e.contains("torch.FloatStorage"), "{e}");
    }
}
