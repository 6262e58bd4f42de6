"""Checkpoints for the Python tests: random arrays of every NumPy dtype the reference package
writes, and safetensors files written by hand for the dtypes NumPy cannot name."""

import json
import struct

import numpy as np

# NumPy dtypes the reference package writes, and LRIS's names for them.
NUMPY_DTYPES = {
    "bool": np.bool_, "uint8": np.uint8, "int8": np.int8, "int16": np.int16,
    "uint16": np.uint16, "float16": np.float16, "int32": np.int32, "uint32": np.uint32,
    "float32": np.float32, "int64": np.int64, "uint64": np.uint64, "float64": np.float64,
}


def random_array(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    if dtype is np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return rng.standard_normal(size=shape).astype(dtype)


def write_raw(path, tensors, metadata=None):
    """A safetensors file written by hand: {name: (dtype string, shape, raw bytes)}."""
    header, offset, data = {}, 0, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        data += raw
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)
