"""Checkpoints for the Python tests: random arrays of every NumPy dtype the reference package
writes, safetensors files written by hand for the dtypes NumPy cannot name, one of many chunks,
one of holes whose load takes long, Python code run in a process of its own, and arrays over
memory the process may not write."""

import ctypes
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


def holes(path, tensors=32, mib=64):
    """`tensors` float32 tensors of `mib` MiB each, all zeros, written as a hole (the file
    takes no room on the disk): 2 GiB by default, a load long enough to be caught at any
    moment of its first 50 ms."""
    size = mib << 20
    header = {f"w{i}": {"dtype": "F32", "shape": [size // 4],
                        "data_offsets": [i * size, (i + 1) * size]} for i in range(tensors)}
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        f.truncate(8 + len(h) + tensors * size)
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


class Mapping:
    """Pages of this process's own through libc's mmap: read-only, or unmapped again, and an
    array over them that says it may be written (as another library's tensor over such memory
    may): only the kernel refuses the writes."""

    _libc = ctypes.CDLL(None, use_errno=True)
    _libc.mmap.restype = ctypes.c_void_p
    _libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                           ctypes.c_int, ctypes.c_long]
    _libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]

    def __init__(self, shape, dtype, unmapped=False):
        self.size = max(4096, int(np.prod(shape)) * np.dtype(dtype).itemsize)
        # PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS
        self.address = self._libc.mmap(None, self.size, 1, 0x22, -1, 0)
        assert self.address not in (None, ctypes.c_void_p(-1).value)
        if unmapped:
            assert self._libc.munmap(self.address, self.size) == 0
        self.mapped = not unmapped
        self.__array_interface__ = {"shape": tuple(shape), "typestr": np.dtype(dtype).str,
                                    "data": (self.address, False), "version": 3}

    def close(self):
        if self.mapped:
            self._libc.munmap(self.address, self.size)
            self.mapped = False


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int), ("device_id", ctypes.c_int)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class _DLManaged(ctypes.Structure):
    pass


_DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(_DLManaged))
_DLManaged._fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p),
                       ("deleter", _DELETER)]
_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype = ctypes.py_object
_capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


class Producer:
    """A DLPack producer as a broken library may write one: its __dlpack_device__ gives `device`
    as is, and its capsule holds a float32 tensor (of `lanes` lanes) over 64 floats of its own
    with `shape` and `ndim` as given (no shape at all with null_shape). It keeps what the
    capsules point at."""

    def __init__(self, shape=(3, 4), ndim=None, null_shape=False, device=(1, 0), lanes=1):
        self.shape, self.device, self.null_shape = tuple(shape), device, null_shape
        self.lanes = lanes
        self.ndim = len(self.shape) if ndim is None else ndim
        self.buffer = np.zeros(64, np.float32)
        self.kept = []

    def __dlpack_device__(self):
        return self.device

    def __dlpack__(self, *args, **kwargs):
        dims = (ctypes.c_int64 * max(1, len(self.shape)))(*self.shape)
        m = _DLManaged()
        m.dl_tensor.data = self.buffer.ctypes.data
        m.dl_tensor.device = _DLDevice(1, 0)
        m.dl_tensor.ndim = self.ndim
        m.dl_tensor.dtype = _DLDataType(2, 32, self.lanes)
        m.dl_tensor.shape = ctypes.cast(None if self.null_shape else dims,
                                        ctypes.POINTER(ctypes.c_int64))
        m.deleter = _DELETER(0)
        self.kept += [dims, m]
        return _capsule_new(ctypes.addressof(m), b"dltensor", None)

