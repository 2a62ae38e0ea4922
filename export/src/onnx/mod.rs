//! ONNX output: our `prost` declarations of the ONNX protobuf messages
//! ([`proto`]) and writing a model to disk ([`write`](mod@write)).

pub mod proto;
pub mod write;

pub use proto::{
    AttributeProto, AttributeType, DataLocation, DataType, Dim, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
pub use write::{
    EXTERNAL_DATA_ALIGN, EXTERNAL_DATA_THRESHOLD, EXTERNAL_TENSOR_MIN_BYTES, SaveReport, load, save,
    save_with_threshold,
};
