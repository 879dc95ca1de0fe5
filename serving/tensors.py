"""NumPy <-> `TensorProto` for Predict requests and responses (the subset the LEM signatures use, fast).

`to_tensor_proto` / `encode_tensor` write `tensor_content` (raw little-endian bytes) for numeric arrays and
`string_val` for bytes, like `tf.make_tensor_proto`, without its per-call overhead; `from_tensor_proto` reads
both the packed and the repeated-field encodings and raises `ValueError` on anything inconsistent (the server
turns that into INVALID_ARGUMENT).

No TensorFlow: new messages are the thin `serving.protos.TensorProto`; `encode_tensor` fills any TensorProto
in place (TensorFlow's too, e.g. a field of a TF Serving response) and the readers take either.
"""
from __future__ import annotations

import numpy as np

from serving import protos
from serving.protos import (DT_BOOL, DT_DOUBLE, DT_FLOAT, DT_HALF, DT_INT8, DT_INT16, DT_INT32, DT_INT64,
                            DT_STRING, DT_UINT8, DT_UINT16)

_NUMPY_TO_DTYPE = {
    np.dtype(np.float32): DT_FLOAT, np.dtype(np.float64): DT_DOUBLE,
    np.dtype(np.int32): DT_INT32, np.dtype(np.int64): DT_INT64,
    np.dtype(np.float16): DT_HALF, np.dtype(np.bool_): DT_BOOL,
    np.dtype(np.uint8): DT_UINT8, np.dtype(np.int8): DT_INT8,
    np.dtype(np.int16): DT_INT16, np.dtype(np.uint16): DT_UINT16,
}
_DTYPE_TO_NUMPY = {v: k for k, v in _NUMPY_TO_DTYPE.items()}
# repeated field holding the values when tensor_content is empty
_VAL_FIELD = {
    DT_FLOAT: "float_val", DT_DOUBLE: "double_val", DT_INT32: "int_val",
    DT_INT16: "int_val", DT_INT8: "int_val", DT_UINT8: "int_val",
    DT_UINT16: "int_val", DT_INT64: "int64_val", DT_BOOL: "bool_val",
    DT_HALF: "half_val",
}


#: gRPC message size limit (bytes) of both ends: `lems serve` (receive and send) and `LemClient` (its channel).
#: TF Serving's own server accepts messages up to 2 GiB; gRPC's default 4 MiB would refuse a `serving_default`
#: request above ~1,870 windows of 468 bars and its 4,096-window answer (20 MB). 64 MiB holds both at the
#: paper's sizes (request ~7.5 kB, answer ~5 kB per window); the servers cap the batch to what fits.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def grpc_options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> list:
    """gRPC channel/server options raising the send and receive message limits to `max_message_bytes`."""
    return [("grpc.max_send_message_length", int(max_message_bytes)),
            ("grpc.max_receive_message_length", int(max_message_bytes))]


def itemsize(dtype_enum: int) -> int:
    """Bytes per element of a numeric TF dtype (0 for strings and unknown dtypes)."""
    np_dtype = _DTYPE_TO_NUMPY.get(dtype_enum)
    return 0 if np_dtype is None else np_dtype.itemsize


def declared_shape(proto) -> tuple:
    """The shape a TensorProto (thin or TensorFlow's) declares, read without decoding anything; ValueError on
    unknown rank or a negative dimension."""
    if proto.tensor_shape.unknown_rank:
        raise ValueError("tensor has unknown rank")
    shape = tuple(int(d.size) for d in proto.tensor_shape.dim)
    if any(d < 0 for d in shape):
        raise ValueError(f"tensor has a negative dimension: {list(shape)}")
    return shape


def dtype_name(dtype_enum: int) -> str:
    """'DT_FLOAT' etc. for messages."""
    try:
        return protos.DataType.Name(dtype_enum)
    except ValueError:
        return f"DataType({dtype_enum})"


def to_tensor_proto(value, dtype=None):
    """NumPy array (numeric, or bytes/str objects for DT_STRING) -> a new thin `serving.protos.TensorProto`."""
    return encode_tensor(value, protos.TensorProto(), dtype)


def encode_tensor(value, out, dtype=None):
    """Write NumPy array `value` into the TensorProto `out` (thin or TensorFlow's, e.g.
    `response.outputs[name]`), replacing what it held; returns `out`."""
    arr = np.asarray(value, dtype=dtype)
    if arr.dtype.kind not in ("S", "O", "U") and arr.dtype not in _NUMPY_TO_DTYPE:
        raise ValueError(f"unsupported dtype {arr.dtype}")
    out.Clear()
    out.tensor_shape.SetInParent()           # present even for a scalar (no dims), as tf.make_tensor_proto does
    dims = out.tensor_shape.dim
    for d in arr.shape:
        dims.add().size = int(d)
    if arr.dtype.kind in ("S", "O", "U"):
        out.dtype = DT_STRING
        out.string_val.extend(v.encode() if isinstance(v, str) else bytes(v) for v in arr.reshape(-1))
        return out
    out.dtype = _NUMPY_TO_DTYPE[arr.dtype]
    out.tensor_content = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    return out


def from_tensor_proto(proto, max_bytes: int | None = None) -> np.ndarray:
    """TensorProto (thin or TensorFlow's) -> NumPy array; ValueError when shape and values disagree, the dtype is
    unsupported or (with `max_bytes`) the declared shape needs more than `max_bytes` once decoded -- checked
    before anything is allocated (the one-value "fill" encoding would otherwise expand a tiny message to any
    size)."""
    shape = declared_shape(proto)
    count = 1
    for d in shape:        # Python ints: no overflow for shapes like [2**40, 140]
        count *= d
    if max_bytes is not None and count * max(itemsize(proto.dtype), 1) > max_bytes:
        raise ValueError(f"declared shape {list(shape)} of {dtype_name(proto.dtype)} needs "
                         f"{count * max(itemsize(proto.dtype), 1):,} bytes, above the limit of {max_bytes:,}")
    if proto.dtype == DT_STRING:
        vals = list(proto.string_val)
        if len(vals) == count:
            return np.array(vals, dtype=object).reshape(shape)
        if len(vals) == 1 and count > 0:
            return np.array(vals * count, dtype=object).reshape(shape)
        raise ValueError(f"DT_STRING tensor of shape {list(shape)} needs {count} values, got {len(vals)}")
    if proto.dtype not in _DTYPE_TO_NUMPY:
        raise ValueError(f"unsupported tensor dtype {dtype_name(proto.dtype)}")
    np_dtype = _DTYPE_TO_NUMPY[proto.dtype]
    if proto.tensor_content:
        if len(proto.tensor_content) != count * np_dtype.itemsize:
            raise ValueError(f"tensor_content holds {len(proto.tensor_content)} bytes; shape {list(shape)} of "
                             f"{dtype_name(proto.dtype)} needs {count * np_dtype.itemsize}")
        return np.frombuffer(proto.tensor_content, dtype=np_dtype.newbyteorder("<")).astype(np_dtype).reshape(shape)
    vals = getattr(proto, _VAL_FIELD[proto.dtype])
    if proto.dtype == DT_HALF:
        flat = np.asarray(list(vals), np.uint16).view(np.float16)
    else:
        flat = np.asarray(list(vals), dtype=np_dtype)
    if flat.size == count:
        return flat.reshape(shape)
    if flat.size == 1 and count > 0:    # TF's "fill" encoding: one value for the whole tensor
        return np.full(shape, flat[0], dtype=np_dtype)
    if count == 0 and flat.size == 0:
        return np.zeros(shape, np_dtype)
    raise ValueError(f"{dtype_name(proto.dtype)} tensor of shape {list(shape)} needs {count} values, got "
                     f"{flat.size}")
