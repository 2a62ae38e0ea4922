//! The ONNX protobuf messages we write, declared by hand with `prost` derives.
//!
//! Field numbers, wire types and labels follow `onnx/onnx-ml.proto` (ONNX 1.17 and
//! later; checked against onnx 1.23). The schema is proto2, so every singular
//! scalar is `Option<_>` (presence is kept on the wire exactly as the C++
//! reader expects, e.g. an `INT` attribute whose value is 0 still carries `i`),
//! and repeated scalars are unpacked unless onnx.proto says `[packed = true]`.
//! Reading a singular field through the accessor prost generates
//! (`tensor.name()`, `attr.r#type()`) gives the proto default when it is unset.
//!
//! Nested types live in snake-case modules named after their parent, as
//! `prost-build` would lay them out (`tensor_proto::DataType`,
//! `type_proto::Tensor`, `tensor_shape_proto::Dimension`).
//!
//! Left out, because we never write them: `TrainingInfoProto`, the sharding and
//! device-configuration messages, `TensorAnnotation`, `TypeProto.Opaque`.
//! `prost` drops unknown fields when decoding, so [`load`](super::write::load)ing a model
//! that uses them loses those fields.

// ---------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------

/// `onnx.ModelProto`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ModelProto {
    #[prost(int64, optional, tag = "1")]
    pub ir_version: Option<i64>,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    #[prost(string, optional, tag = "2")]
    pub producer_name: Option<String>,
    #[prost(string, optional, tag = "3")]
    pub producer_version: Option<String>,
    #[prost(string, optional, tag = "4")]
    pub domain: Option<String>,
    #[prost(int64, optional, tag = "5")]
    pub model_version: Option<i64>,
    #[prost(string, optional, tag = "6")]
    pub doc_string: Option<String>,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
    #[prost(message, repeated, tag = "25")]
    pub functions: Vec<FunctionProto>,
}

/// `onnx.OperatorSetIdProto`. The default domain (`ai.onnx`) is the empty string.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct OperatorSetIdProto {
    #[prost(string, optional, tag = "1")]
    pub domain: Option<String>,
    #[prost(int64, optional, tag = "2")]
    pub version: Option<i64>,
}

/// `onnx.StringStringEntryProto`.
#[derive(Clone, PartialEq, Eq, Hash, ::prost::Message)]
pub struct StringStringEntryProto {
    #[prost(string, optional, tag = "1")]
    pub key: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

/// `onnx.GraphProto`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "15")]
    pub sparse_initializer: Vec<SparseTensorProto>,
    #[prost(string, optional, tag = "10")]
    pub doc_string: Option<String>,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "13")]
    pub value_info: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "16")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// `onnx.NodeProto`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, optional, tag = "3")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "4")]
    pub op_type: Option<String>,
    #[prost(string, optional, tag = "7")]
    pub domain: Option<String>,
    #[prost(string, optional, tag = "8")]
    pub overload: Option<String>,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    #[prost(string, optional, tag = "6")]
    pub doc_string: Option<String>,
    #[prost(message, repeated, tag = "9")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// `onnx.AttributeProto`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct AttributeProto {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "21")]
    pub ref_attr_name: Option<String>,
    #[prost(string, optional, tag = "13")]
    pub doc_string: Option<String>,
    #[prost(enumeration = "attribute_proto::AttributeType", optional, tag = "20")]
    pub r#type: Option<i32>,
    #[prost(float, optional, tag = "2")]
    pub f: Option<f32>,
    #[prost(int64, optional, tag = "3")]
    pub i: Option<i64>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub s: Option<Vec<u8>>,
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    #[prost(message, optional, tag = "6")]
    pub g: Option<GraphProto>,
    #[prost(message, optional, tag = "22")]
    pub sparse_tensor: Option<SparseTensorProto>,
    #[prost(message, optional, tag = "14")]
    pub tp: Option<TypeProto>,
    #[prost(float, repeated, packed = "false", tag = "7")]
    pub floats: Vec<f32>,
    #[prost(int64, repeated, packed = "false", tag = "8")]
    pub ints: Vec<i64>,
    #[prost(bytes = "vec", repeated, tag = "9")]
    pub strings: Vec<Vec<u8>>,
    #[prost(message, repeated, tag = "10")]
    pub tensors: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    pub graphs: Vec<GraphProto>,
    #[prost(message, repeated, tag = "23")]
    pub sparse_tensors: Vec<SparseTensorProto>,
    #[prost(message, repeated, tag = "15")]
    pub type_protos: Vec<TypeProto>,
}

/// Nested types of [`AttributeProto`].
pub mod attribute_proto {
    /// `onnx.AttributeProto.AttributeType`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Enumeration)]
    #[repr(i32)]
    pub enum AttributeType {
        Undefined = 0,
        Float = 1,
        Int = 2,
        String = 3,
        Tensor = 4,
        Graph = 5,
        SparseTensor = 11,
        TypeProto = 13,
        Floats = 6,
        Ints = 7,
        Strings = 8,
        Tensors = 9,
        Graphs = 10,
        SparseTensors = 12,
        TypeProtos = 14,
    }
}

/// `onnx.TensorProto`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct TensorProto {
    #[prost(int64, repeated, packed = "false", tag = "1")]
    pub dims: Vec<i64>,
    /// A [`tensor_proto::DataType`] value (declared `int32` in onnx.proto).
    #[prost(int32, optional, tag = "2")]
    pub data_type: Option<i32>,
    #[prost(message, optional, tag = "3")]
    pub segment: Option<tensor_proto::Segment>,
    #[prost(float, repeated, packed = "true", tag = "4")]
    pub float_data: Vec<f32>,
    #[prost(int32, repeated, packed = "true", tag = "5")]
    pub int32_data: Vec<i32>,
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub string_data: Vec<Vec<u8>>,
    #[prost(int64, repeated, packed = "true", tag = "7")]
    pub int64_data: Vec<i64>,
    #[prost(string, optional, tag = "8")]
    pub name: Option<String>,
    #[prost(string, optional, tag = "12")]
    pub doc_string: Option<String>,
    /// Little-endian, row-major element bytes.
    #[prost(bytes = "vec", optional, tag = "9")]
    pub raw_data: Option<Vec<u8>>,
    /// `location`, `offset`, `length` (and optionally `checksum`) when
    /// `data_location` is `EXTERNAL`.
    #[prost(message, repeated, tag = "13")]
    pub external_data: Vec<StringStringEntryProto>,
    #[prost(enumeration = "tensor_proto::DataLocation", optional, tag = "14")]
    pub data_location: Option<i32>,
    #[prost(double, repeated, packed = "true", tag = "10")]
    pub double_data: Vec<f64>,
    #[prost(uint64, repeated, packed = "true", tag = "11")]
    pub uint64_data: Vec<u64>,
    #[prost(message, repeated, tag = "16")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// Nested types of [`TensorProto`].
pub mod tensor_proto {
    /// `onnx.TensorProto.Segment`.
    #[derive(Clone, Copy, PartialEq, ::prost::Message)]
    pub struct Segment {
        #[prost(int64, optional, tag = "1")]
        pub begin: Option<i64>,
        #[prost(int64, optional, tag = "2")]
        pub end: Option<i64>,
    }

    /// `onnx.TensorProto.DataType`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Enumeration)]
    #[repr(i32)]
    pub enum DataType {
        Undefined = 0,
        Float = 1,
        Uint8 = 2,
        Int8 = 3,
        Uint16 = 4,
        Int16 = 5,
        Int32 = 6,
        Int64 = 7,
        String = 8,
        Bool = 9,
        Float16 = 10,
        Double = 11,
        Uint32 = 12,
        Uint64 = 13,
        Complex64 = 14,
        Complex128 = 15,
        Bfloat16 = 16,
        Float8e4m3fn = 17,
        Float8e4m3fnuz = 18,
        Float8e5m2 = 19,
        Float8e5m2fnuz = 20,
        Uint4 = 21,
        Int4 = 22,
        Float4e2m1 = 23,
        Float8e8m0 = 24,
        Uint2 = 25,
        Int2 = 26,
        Float6e2m3 = 27,
        Float6e3m2 = 28,
    }

    /// `onnx.TensorProto.DataLocation`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Enumeration)]
    #[repr(i32)]
    pub enum DataLocation {
        Default = 0,
        External = 1,
    }
}

/// `onnx.SparseTensorProto`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct SparseTensorProto {
    #[prost(message, optional, tag = "1")]
    pub values: Option<TensorProto>,
    #[prost(message, optional, tag = "2")]
    pub indices: Option<TensorProto>,
    #[prost(int64, repeated, packed = "false", tag = "3")]
    pub dims: Vec<i64>,
}

/// `onnx.ValueInfoProto`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ValueInfoProto {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
    #[prost(string, optional, tag = "3")]
    pub doc_string: Option<String>,
    #[prost(message, repeated, tag = "4")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// `onnx.TypeProto`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct TypeProto {
    #[prost(oneof = "type_proto::Value", tags = "1, 4, 5, 9, 8")]
    pub value: Option<type_proto::Value>,
    #[prost(string, optional, tag = "6")]
    pub denotation: Option<String>,
}

/// Nested types of [`TypeProto`].
pub mod type_proto {
    /// `onnx.TypeProto.Tensor`.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Tensor {
        /// A [`super::tensor_proto::DataType`] value.
        #[prost(int32, optional, tag = "1")]
        pub elem_type: Option<i32>,
        #[prost(message, optional, tag = "2")]
        pub shape: Option<super::TensorShapeProto>,
    }

    /// `onnx.TypeProto.Sequence`.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Sequence {
        #[prost(message, optional, boxed, tag = "1")]
        pub elem_type: Option<Box<super::TypeProto>>,
    }

    /// `onnx.TypeProto.Map`.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Map {
        #[prost(int32, optional, tag = "1")]
        pub key_type: Option<i32>,
        #[prost(message, optional, boxed, tag = "2")]
        pub value_type: Option<Box<super::TypeProto>>,
    }

    /// `onnx.TypeProto.Optional`.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Optional {
        #[prost(message, optional, boxed, tag = "1")]
        pub elem_type: Option<Box<super::TypeProto>>,
    }

    /// `onnx.TypeProto.SparseTensor`.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct SparseTensor {
        #[prost(int32, optional, tag = "1")]
        pub elem_type: Option<i32>,
        #[prost(message, optional, tag = "2")]
        pub shape: Option<super::TensorShapeProto>,
    }

    /// The `value` oneof of `onnx.TypeProto`.
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Value {
        #[prost(message, tag = "1")]
        TensorType(Tensor),
        #[prost(message, tag = "4")]
        SequenceType(Sequence),
        #[prost(message, tag = "5")]
        MapType(Map),
        #[prost(message, tag = "9")]
        OptionalType(Optional),
        #[prost(message, tag = "8")]
        SparseTensorType(SparseTensor),
    }
}

/// `onnx.TensorShapeProto`.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<tensor_shape_proto::Dimension>,
}

/// Nested types of [`TensorShapeProto`].
pub mod tensor_shape_proto {
    /// `onnx.TensorShapeProto.Dimension`.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Dimension {
        #[prost(oneof = "dimension::Value", tags = "1, 2")]
        pub value: Option<dimension::Value>,
        #[prost(string, optional, tag = "3")]
        pub denotation: Option<String>,
    }

    /// Nested types of [`Dimension`].
    pub mod dimension {
        /// The `value` oneof of `onnx.TensorShapeProto.Dimension`.
        #[derive(Clone, PartialEq, Eq, Hash, ::prost::Oneof)]
        pub enum Value {
            #[prost(int64, tag = "1")]
            DimValue(i64),
            #[prost(string, tag = "2")]
            DimParam(String),
        }
    }
}

/// `onnx.FunctionProto` (model-local functions).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct FunctionProto {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(string, repeated, tag = "4")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "5")]
    pub output: Vec<String>,
    #[prost(string, repeated, tag = "6")]
    pub attribute: Vec<String>,
    #[prost(message, repeated, tag = "11")]
    pub attribute_proto: Vec<AttributeProto>,
    #[prost(message, repeated, tag = "7")]
    pub node: Vec<NodeProto>,
    #[prost(string, optional, tag = "8")]
    pub doc_string: Option<String>,
    #[prost(message, repeated, tag = "9")]
    pub opset_import: Vec<OperatorSetIdProto>,
    #[prost(string, optional, tag = "10")]
    pub domain: Option<String>,
    #[prost(string, optional, tag = "13")]
    pub overload: Option<String>,
    #[prost(message, repeated, tag = "12")]
    pub value_info: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

// ---------------------------------------------------------------------------
// Constructors
// ---------------------------------------------------------------------------

pub use attribute_proto::AttributeType;
pub use tensor_proto::{DataLocation, DataType};

/// One dimension of a declared tensor shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A known extent.
    Fixed(i64),
    /// A symbolic extent (`dim_param`), e.g. `"batch"`.
    Named(String),
}

impl Dim {
    /// A symbolic dimension.
    pub fn named(name: impl Into<String>) -> Self {
        Dim::Named(name.into())
    }
}

impl From<i64> for Dim {
    fn from(v: i64) -> Self {
        Dim::Fixed(v)
    }
}

impl From<&str> for Dim {
    fn from(v: &str) -> Self {
        Dim::Named(v.to_owned())
    }
}

impl From<&Dim> for tensor_shape_proto::Dimension {
    fn from(d: &Dim) -> Self {
        use tensor_shape_proto::dimension::Value;
        let value = match d {
            Dim::Fixed(v) => Value::DimValue(*v),
            Dim::Named(s) => Value::DimParam(s.clone()),
        };
        tensor_shape_proto::Dimension {
            value: Some(value),
            denotation: None,
        }
    }
}

impl DataType {
    /// Bytes per element for the fixed-width types; `None` for strings,
    /// sub-byte types and `Undefined`.
    pub fn byte_size(self) -> Option<usize> {
        use DataType as D;
        Some(match self {
            D::Float | D::Int32 | D::Uint32 => 4,
            D::Uint8
            | D::Int8
            | D::Bool
            | D::Float8e4m3fn
            | D::Float8e4m3fnuz
            | D::Float8e5m2
            | D::Float8e5m2fnuz
            | D::Float8e8m0 => 1,
            D::Uint16 | D::Int16 | D::Float16 | D::Bfloat16 => 2,
            D::Int64 | D::Double | D::Uint64 | D::Complex64 => 8,
            D::Complex128 => 16,
            D::Undefined
            | D::String
            | D::Uint4
            | D::Int4
            | D::Float4e2m1
            | D::Uint2
            | D::Int2
            | D::Float6e2m3
            | D::Float6e3m2 => return None,
        })
    }
}

impl ModelProto {
    /// A model around `graph`, with the given IR version and opset imports
    /// (`("", 23)` is the default `ai.onnx` domain).
    pub fn new(ir_version: i64, opsets: &[(&str, i64)], graph: GraphProto) -> Self {
        ModelProto {
            ir_version: Some(ir_version),
            opset_import: opsets.iter().map(|(d, v)| OperatorSetIdProto::new(*d, *v)).collect(),
            graph: Some(graph),
            ..Default::default()
        }
    }

    /// Sets `producer_name` and `producer_version`.
    pub fn with_producer(mut self, name: impl Into<String>, version: impl Into<String>) -> Self {
        self.producer_name = Some(name.into());
        self.producer_version = Some(version.into());
        self
    }

    /// Sets a `metadata_props` entry, replacing an existing one with the same key.
    pub fn set_metadata(&mut self, key: impl Into<String>, value: impl Into<String>) {
        set_entry(&mut self.metadata_props, key.into(), value.into());
    }

    /// The value of a `metadata_props` entry.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata_props.iter().find(|e| e.key() == key).map(|e| e.value())
    }

    /// The opset version imported for `domain` (`""` for `ai.onnx`).
    pub fn opset(&self, domain: &str) -> Option<i64> {
        let same = |d: &str| d == domain || (is_default_domain(d) && is_default_domain(domain));
        self.opset_import.iter().find(|o| same(o.domain())).map(|o| o.version())
    }
}

fn is_default_domain(d: &str) -> bool {
    d.is_empty() || d == "ai.onnx"
}

fn set_entry(entries: &mut Vec<StringStringEntryProto>, key: String, value: String) {
    match entries.iter_mut().find(|e| e.key() == key) {
        Some(e) => e.value = Some(value),
        None => entries.push(StringStringEntryProto::new(key, value)),
    }
}

impl OperatorSetIdProto {
    pub fn new(domain: impl Into<String>, version: i64) -> Self {
        OperatorSetIdProto {
            domain: Some(domain.into()),
            version: Some(version),
        }
    }
}

impl StringStringEntryProto {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        StringStringEntryProto {
            key: Some(key.into()),
            value: Some(value.into()),
        }
    }
}

impl GraphProto {
    /// An empty graph called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        GraphProto {
            name: Some(name.into()),
            ..Default::default()
        }
    }
}

impl NodeProto {
    /// A node of the default domain.
    pub fn new<I, O>(op_type: &str, name: impl Into<String>, inputs: I, outputs: O) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
        O: IntoIterator,
        O::Item: Into<String>,
    {
        NodeProto {
            input: inputs.into_iter().map(Into::into).collect(),
            output: outputs.into_iter().map(Into::into).collect(),
            name: Some(name.into()),
            op_type: Some(op_type.to_owned()),
            ..Default::default()
        }
    }

    /// Sets the operator domain, e.g. `"com.microsoft"`.
    pub fn with_domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }
}

impl AttributeProto {
    fn typed(name: impl Into<String>, ty: AttributeType) -> Self {
        AttributeProto {
            name: Some(name.into()),
            r#type: Some(ty as i32),
            ..Default::default()
        }
    }

    pub fn int(name: impl Into<String>, v: i64) -> Self {
        AttributeProto {
            i: Some(v),
            ..Self::typed(name, AttributeType::Int)
        }
    }

    pub fn float(name: impl Into<String>, v: f32) -> Self {
        AttributeProto {
            f: Some(v),
            ..Self::typed(name, AttributeType::Float)
        }
    }

    pub fn string(name: impl Into<String>, v: impl Into<String>) -> Self {
        AttributeProto {
            s: Some(v.into().into_bytes()),
            ..Self::typed(name, AttributeType::String)
        }
    }

    pub fn ints(name: impl Into<String>, v: &[i64]) -> Self {
        AttributeProto {
            ints: v.to_vec(),
            ..Self::typed(name, AttributeType::Ints)
        }
    }

    pub fn floats(name: impl Into<String>, v: &[f32]) -> Self {
        AttributeProto {
            floats: v.to_vec(),
            ..Self::typed(name, AttributeType::Floats)
        }
    }

    pub fn strings<S: AsRef<str>>(name: impl Into<String>, v: &[S]) -> Self {
        AttributeProto {
            strings: v.iter().map(|s| s.as_ref().as_bytes().to_vec()).collect(),
            ..Self::typed(name, AttributeType::Strings)
        }
    }

    pub fn tensor(name: impl Into<String>, t: TensorProto) -> Self {
        AttributeProto {
            t: Some(t),
            ..Self::typed(name, AttributeType::Tensor)
        }
    }

    pub fn graph(name: impl Into<String>, g: GraphProto) -> Self {
        AttributeProto {
            g: Some(g),
            ..Self::typed(name, AttributeType::Graph)
        }
    }
}

impl TensorProto {
    /// A tensor whose elements are given as little-endian bytes in `raw_data`.
    ///
    /// Panics if `raw.len()` does not match `dims` for a fixed-width `data_type`.
    pub fn from_raw(name: impl Into<String>, dims: &[i64], data_type: DataType, raw: Vec<u8>) -> Self {
        if let Some(size) = data_type.byte_size() {
            let n: i64 = dims.iter().product();
            assert_eq!(
                raw.len() as u64,
                n as u64 * size as u64,
                "tensor dims {dims:?} of {data_type:?} do not match {} data bytes",
                raw.len()
            );
        }
        TensorProto {
            dims: dims.to_vec(),
            data_type: Some(data_type as i32),
            name: Some(name.into()),
            raw_data: Some(raw),
            ..Default::default()
        }
    }

    pub fn from_f32(name: impl Into<String>, dims: &[i64], data: &[f32]) -> Self {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self::from_raw(name, dims, DataType::Float, raw)
    }

    pub fn from_i64(name: impl Into<String>, dims: &[i64], data: &[i64]) -> Self {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self::from_raw(name, dims, DataType::Int64, raw)
    }

    pub fn from_u8(name: impl Into<String>, dims: &[i64], data: &[u8]) -> Self {
        Self::from_raw(name, dims, DataType::Uint8, data.to_vec())
    }

    /// The element type, `Undefined` when unset or unknown.
    pub fn elem_type(&self) -> DataType {
        DataType::try_from(self.data_type()).unwrap_or(DataType::Undefined)
    }

    /// Whether the data lives in an external file.
    pub fn is_external(&self) -> bool {
        self.data_location() == DataLocation::External
    }

    /// The value of an `external_data` entry (`location`, `offset`, `length`).
    pub fn external_entry(&self, key: &str) -> Option<&str> {
        self.external_data.iter().find(|e| e.key() == key).map(|e| e.value())
    }

    /// Bytes of element data held in this message (raw or typed fields);
    /// 0 for external tensors.
    pub fn payload_len(&self) -> u64 {
        let raw = self.raw_data.as_ref().map_or(0, |r| r.len() as u64);
        let strings: u64 = self.string_data.iter().map(|s| s.len() as u64).sum();
        raw + strings
            + 4 * (self.float_data.len() + self.int32_data.len()) as u64
            + 8 * (self.int64_data.len() + self.double_data.len() + self.uint64_data.len()) as u64
    }
}

impl ValueInfoProto {
    /// A tensor value of `elem_type` with the given shape.
    pub fn tensor(name: impl Into<String>, elem_type: DataType, dims: &[Dim]) -> Self {
        let tensor = type_proto::Tensor {
            elem_type: Some(elem_type as i32),
            shape: Some(TensorShapeProto {
                dim: dims.iter().map(Into::into).collect(),
            }),
        };
        ValueInfoProto {
            name: Some(name.into()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(tensor)),
                denotation: None,
            }),
            ..Default::default()
        }
    }

    /// The tensor type, if this value is a tensor.
    pub fn tensor_type(&self) -> Option<&type_proto::Tensor> {
        match self.r#type.as_ref()?.value.as_ref()? {
            type_proto::Value::TensorType(t) => Some(t),
            _ => None,
        }
    }

    /// The declared shape of a tensor value, as [`Dim`]s (an unset dimension
    /// reads as `Named("")`).
    pub fn dims(&self) -> Option<Vec<Dim>> {
        use tensor_shape_proto::dimension::Value;
        let shape = self.tensor_type()?.shape.as_ref()?;
        Some(
            shape
                .dim
                .iter()
                .map(|d| match &d.value {
                    Some(Value::DimValue(v)) => Dim::Fixed(*v),
                    Some(Value::DimParam(s)) => Dim::Named(s.clone()),
                    None => Dim::Named(String::new()),
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn attribute_zero_values_keep_presence() {
        // proto2: an INT attribute of 0 must still carry field 3 on the wire.
        let a = AttributeProto::int("axis", 0);
        let bytes = a.encode_to_vec();
        // name (tag 1, len 4, "axis"), i (tag 3 varint 0), type (tag 20 varint 2)
        assert!(bytes.windows(2).any(|w| w == [0x18, 0x00]), "{bytes:02x?}");
        let back = AttributeProto::decode(bytes.as_slice()).unwrap();
        assert_eq!(back.i, Some(0));
        assert_eq!(back.r#type(), AttributeType::Int);
        assert_eq!(back, a);
    }

    #[test]
    fn wire_layout_matches_onnx_proto() {
        // dims are unpacked in onnx.proto (proto2 default): tag 1 varint per value.
        let t = TensorProto {
            dims: vec![2, 3],
            ..Default::default()
        };
        assert_eq!(t.encode_to_vec(), vec![0x08, 2, 0x08, 3]);
        // float_data is [packed = true]: tag 4, length-delimited.
        let t = TensorProto {
            float_data: vec![1.0],
            ..Default::default()
        };
        assert_eq!(t.encode_to_vec(), vec![0x22, 4, 0, 0, 0x80, 0x3f]);
        // AttributeProto.type is field 20 (varint): key = 20 << 3 = 160 -> a0 01.
        let a = AttributeProto {
            r#type: Some(AttributeType::Floats as i32),
            ..Default::default()
        };
        assert_eq!(a.encode_to_vec(), vec![0xa0, 0x01, 6]);
        // ModelProto.opset_import is field 8, metadata_props field 14.
        let mut m = ModelProto {
            opset_import: vec![OperatorSetIdProto::new("", 23)],
            ..Default::default()
        };
        m.set_metadata("k", "v");
        assert_eq!(
            m.encode_to_vec(),
            vec![0x42, 4, 0x0a, 0, 0x10, 23, 0x72, 6, 0x0a, 1, b'k', 0x12, 1, b'v']
        );
        // TensorProto.data_location is field 14, external_data field 13.
        let t = TensorProto {
            data_location: Some(DataLocation::External as i32),
            ..Default::default()
        };
        assert_eq!(t.encode_to_vec(), vec![0x70, 1]);
    }

    #[test]
    fn constructors() {
        let t = TensorProto::from_f32("w", &[2], &[1.0, -2.0]);
        assert_eq!(t.raw_data.as_deref(), Some(&[0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0][..]));
        assert_eq!(t.elem_type(), DataType::Float);
        assert_eq!(t.payload_len(), 8);
        let t = TensorProto::from_i64("s", &[1], &[-1]);
        assert_eq!(t.raw_data.as_deref(), Some(&[0xff; 8][..]));
        let t = TensorProto::from_u8("u", &[3], &[1, 2, 3]);
        assert_eq!(t.data_type, Some(DataType::Uint8 as i32));

        let v = ValueInfoProto::tensor("x", DataType::Float, &[Dim::named("batch"), Dim::Fixed(4)]);
        assert_eq!(v.dims(), Some(vec![Dim::named("batch"), Dim::Fixed(4)]));
        assert_eq!(v.tensor_type().unwrap().elem_type, Some(1));

        let a = AttributeProto::strings("names", &["a", "b"]);
        assert_eq!(a.strings, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(AttributeProto::string("mode", "x").s.as_deref(), Some(&b"x"[..]));

        let mut m = ModelProto::new(10, &[("", 23), ("com.microsoft", 1)], GraphProto::new("g"));
        m.set_metadata("kind", "vq");
        m.set_metadata("kind", "vae");
        assert_eq!(m.metadata("kind"), Some("vae"));
        assert_eq!(m.metadata_props.len(), 1);
        assert_eq!(m.opset("ai.onnx"), Some(23));
        assert_eq!(m.opset("com.microsoft"), Some(1));
        assert_eq!(m.opset("ai.onnx.ml"), None);
    }

    #[test]
    #[should_panic(expected = "do not match")]
    fn from_raw_checks_length() {
        TensorProto::from_f32("w", &[2, 2], &[1.0]);
    }
}
