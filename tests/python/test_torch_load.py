"""lris.torch.load on the CPU: every dtype as views of one block, made while the bytes are read
and handed out once they are all there; errors before and after the block is placed, a Ctrl-C,
nothing left behind. Skipped where torch is missing (CI has none; test_load_start.py covers the
load underneath without torch)."""

import _thread
import gc
import threading
import time

import numpy as np
import pytest

import lris

from checkpoints import NUMPY_DTYPES, many_chunks, random_array, run_without_leaks, write_raw

torch = pytest.importorskip("torch")

from safetensors.torch import load_file  # noqa: E402  (torch is there)

import lris.torch  # noqa: E402


@pytest.fixture(scope="module")
def every_dtype(tmp_path_factory):
    path = tmp_path_factory.mktemp("torch") / "every.safetensors"
    raw = {}
    names = {"bool": "BOOL", "uint8": "U8", "int8": "I8", "int16": "I16", "uint16": "U16",
             "float16": "F16", "int32": "I32", "uint32": "U32", "float32": "F32",
             "int64": "I64", "uint64": "U64", "float64": "F64"}
    for i, (name, dt) in enumerate(NUMPY_DTYPES.items()):
        a = random_array(dt, (33, 17), i)
        raw[f"t.{name}"] = (names[name], a.shape, a.tobytes())
    rng = np.random.default_rng(5)
    for dtype, bits in [("BF16", 16), ("F8_E4M3", 8), ("F8_E5M2", 8)]:
        raw[f"t.{dtype}"] = (dtype, (64, 9), rng.integers(0, 256, size=64 * 9 * bits // 8,
                                                          dtype=np.uint8).tobytes())
    raw["t.scalar"] = ("F32", (), np.float32(2.5).tobytes())
    raw["t.empty"] = ("F32", (0, 4), b"")
    write_raw(path, raw)
    return path, raw


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    return many_chunks(tmp_path_factory.mktemp("torch") / "big.safetensors")


def test_every_dtype_as_views_of_one_block_in_checkpoint_order(every_dtype):
    path, raw = every_dtype
    tensors = lris.torch.load(path, device="cpu")
    reference = load_file(str(path))
    assert list(tensors) == list(raw)
    storages = {t.untyped_storage().data_ptr() for t in tensors.values() if t.numel()}
    assert len(storages) == 1
    for name, t in tensors.items():
        assert t.dtype == reference[name].dtype and t.shape == reference[name].shape, name
        assert torch.equal(t.view(torch.uint8) if t.dim() else t.reshape(1).view(torch.uint8),
                           reference[name].view(torch.uint8) if t.dim()
                           else reference[name].reshape(1).view(torch.uint8)), name
    keep = tensors["t.float64"]
    del tensors
    gc.collect()  # the block lives while a view does
    assert torch.equal(keep, reference["t.float64"])


def test_hand_off_times_its_views(big):
    times = {}
    tensors = lris.torch._hand_off(lris._lris.load_start(big, device="cpu"), times)
    assert 0 < times["views"] < 10
    for i in range(32):
        assert torch.all(tensors[f"w{i}"] == i)


def test_errors_before_and_after_the_block_is_placed(big, tmp_path):
    # Before: no block to give; placed() raises the load's error, naming the file.
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(lris.Error, match="missing.safetensors"):
        lris.torch.load(missing, device="cpu")
    with pytest.raises(lris.Error, match="missing.safetensors"):
        lris._lris.load_start(missing, device="cpu").placed()
    with pytest.raises(lris.InvalidArgument, match="device number"):
        lris.torch.load(big, device="cpu:x")

    # After: the views are made, the reads fail; the error comes from wait() and no tensor is
    # handed out.
    class Boom(Exception):
        pass

    def fail(done, total):
        raise Boom("from the callback")

    with pytest.raises(Boom, match="from the callback"):
        lris.torch.load(big, device="cpu", progress=fail)
    with pytest.raises(lris.Cancelled):
        lris.torch.load(big, device="cpu", progress=lambda done, total: False)
    # A load dropped without wait(): it finishes on its own thread and lets the block go.
    for _ in range(3):
        lris._lris.load_start(big, device="cpu")
    pending = lris._lris.load_start(big, device="cpu")
    pending.placed()
    del pending
    gc.collect()
    assert torch.all(lris.torch.load(big, device="cpu")["w31"] == 31)


def test_ctrl_c_cancels_the_load(big):
    # A Ctrl-C (interrupt_main) while lris.torch.load waits, giving its progress to a slow
    # callable: the load stops at its next chunk and KeyboardInterrupt comes at once.
    timer = threading.Timer(0.05, _thread.interrupt_main)
    start = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        lris.torch.load(big, device="cpu", progress=lambda d, t: time.sleep(0.05) or True)
    assert time.monotonic() - start < 1.0
    timer.join()
    assert torch.all(lris.torch.load(big, device="cpu")["w7"] == 7)


def test_failed_and_interrupted_loads_leave_nothing_behind(big):
    # An exception kept with a load would hold the frames it went through, and through them
    # the load and its block (test_load_start.py does the same for load_start and lris.load).
    run_without_leaks(f"""
import _thread, threading, time
import torch
import lris, lris.torch
path = {str(big)!r}
def fail(done, total):
    raise ValueError("from the callback")
for _ in range(2):
    try:
        lris.torch.load(path, device="cpu", progress=fail)
    except ValueError:
        pass
try:
    lris.torch.load(path, device="cpu", progress=lambda d, t: False)
except lris.Cancelled:
    pass
threading.Timer(0.05, _thread.interrupt_main).start()
try:
    lris.torch.load(path, device="cpu", progress=lambda d, t: time.sleep(0.05) or True)
except KeyboardInterrupt:
    pass
""")
