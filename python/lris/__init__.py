"""LRIS: checkpoints loaded at the speed of the disk or the page cache, handed to NumPy,
PyTorch and CuPy through DLPack without a copy.

    import lris, numpy as np
    tensors = lris.load("model.safetensors")          # {name: lris.Tensor}
    w = np.from_dlpack(tensors["lm_head.weight"])     # no copy; valid while w lives

A tensor's memory belongs to the tensor (and to every array made from it through DLPack):
it is freed when the last of them is gone, never reused meanwhile. Errors are lris.Error
subclasses carrying LRIS's message (the file, tensor and offset at fault).
"""

from . import _lris
from ._lris import (
    Cancelled,
    DeviceError,
    DeviceLost,
    Error,
    FormatError,
    IntegrityError,
    InvalidArgument,
    IoError,
    OutOfMemory,
    Tensor,
    Unsupported,
    broker_status,
    copy,
    info,
    inspect,
    load_into,
)

__all__ = [
    "Cancelled", "DeviceError", "DeviceLost", "Error", "FormatError", "IntegrityError",
    "InvalidArgument", "IoError", "OutOfMemory", "Tensor", "Unsupported", "broker_status", "copy",
    "info", "inspect",
    "load", "load_into",
]
__version__ = info()["version"]


def _tqdm_progress(path):
    """A callback that draws a tqdm bar, or None when tqdm is not installed."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None, None
    bar = tqdm(total=0, unit="B", unit_scale=True, desc=f"lris.load {path}")

    def update(done, total):
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)
        return True

    return update, bar


def load(path, device="cpu", select=None, dtype=None, verify=False, progress=None):
    """Loads a .safetensors file or a sharded model directory into `device` ("cpu", "cuda:N").

    select: a regular expression searched in each name, or a list of exact names.
    dtype: floating-point tensors are converted to it as they load ("bfloat16", "float32"...).
    verify: every byte read again from the files and compared after the load
    (lris.IntegrityError names the tensor, file, offset and first byte that differs).
    progress: a callable(bytes_done, bytes_total) -> bool (False cancels: lris.Cancelled), or
    True for a tqdm bar when tqdm is installed.
    Returns {name: lris.Tensor} in checkpoint order.
    """
    bar = None
    if progress is True:
        progress, bar = _tqdm_progress(path)
    elif progress is False:
        progress = None
    try:
        return _lris.load(path, device=device, select=select, dtype=dtype, verify=verify,
                          progress=progress)
    finally:
        if bar is not None:
            bar.close()
