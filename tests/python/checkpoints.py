"""Checkpoints for the Python tests: random arrays of every NumPy dtype the reference package
writes, safetensors files written by hand for the dtypes NumPy cannot name, one of many chunks,
and Python code run in a process of its own."""

import json
import os
import struct
import subprocess
import sys

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


def many_chunks(path):
    """32 float32 tensors of 2 MiB, tensor wI all I: a load long enough to be caught while it
    reads."""
    from safetensors.numpy import save_file
    save_file({f"w{i}": np.full((512, 1024), i, np.float32) for i in range(32)}, str(path))
    return path


def run_python(code):
    """`code` in a fresh interpreter with this one's module path: the CompletedProcess."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))


def run_without_leaks(code):
    """`code` in a fresh interpreter: it must end well, and nanobind, which reports at the
    interpreter's exit every instance of the module still alive, must report none."""
    out = run_python(code + '\nimport gc\ngc.collect()\nprint("done", flush=True)\n')
    assert out.returncode == 0, out.stderr
    assert "done" in out.stdout
    assert "leaked" not in out.stderr, out.stderr[:2000]
