"""lris.load into a GPU handed to PyTorch through DLPack: every dtype, zero copy, tensors used on
a non-default torch stream right after the load, memory that outlives the loader. Skipped where
torch, a CUDA GPU or LRIS's CUDA backend is missing (CI has none of them)."""

import gc

import numpy as np
import pytest

import lris

from checkpoints import NUMPY_DTYPES, random_array, write_raw

torch = pytest.importorskip("torch")
if not torch.cuda.is_available() or not lris.info()["devices"]:
    pytest.skip("no CUDA GPU for torch and LRIS", allow_module_level=True)

from safetensors.torch import load_file  # noqa: E402  (torch is there)

import lris.torch  # noqa: E402


@pytest.fixture(scope="module")
def every_dtype(tmp_path_factory):
    path = tmp_path_factory.mktemp("cuda") / "every.safetensors"
    rng = np.random.default_rng(3)
    raw = {}
    for i, (name, dt) in enumerate(NUMPY_DTYPES.items()):
        a = random_array(dt, (33, 17), i)
        raw[f"t.{name}"] = ({"bool": "BOOL", "uint8": "U8", "int8": "I8", "int16": "I16",
                             "uint16": "U16", "float16": "F16", "int32": "I32",
                             "uint32": "U32", "float32": "F32", "int64": "I64",
                             "uint64": "U64", "float64": "F64"}[name], a.shape, a.tobytes())
    for dtype, bits in [("BF16", 16), ("F8_E4M3", 8), ("F8_E5M2", 8)]:
        raw[f"t.{dtype}"] = (dtype, (64, 9), rng.integers(0, 256, size=64 * 9 * bits // 8,
                                                          dtype=np.uint8).tobytes())
    write_raw(path, raw)
    return path, raw


def test_every_dtype_to_cuda_matches_the_reference(every_dtype):
    path, raw = every_dtype
    tensors = lris.load(path, device="cuda:0")
    reference = load_file(str(path), device="cuda:0")
    assert set(tensors) == set(raw)
    for name, t in tensors.items():
        assert t.device == "cuda:0"
        assert t.tobytes() == raw[name][2]
        x = torch.from_dlpack(t)
        assert x.device == torch.device("cuda:0")
        assert x.dtype == reference[name].dtype, name
        assert torch.equal(x.view(torch.uint8), reference[name].view(torch.uint8)), name


@pytest.mark.parametrize("device", ["cuda:0", "cpu"])
def test_torch_load_gives_views_of_one_block(every_dtype, device):
    path, raw = every_dtype
    tensors = lris.torch.load(path, device=device)
    reference = load_file(str(path), device=device)
    assert list(tensors) == list(raw)
    storages = {t.untyped_storage().data_ptr() for t in tensors.values()}
    assert len(storages) == 1  # one import, every tensor a view of it
    for name, t in tensors.items():
        assert t.device == torch.device(device) and t.dtype == reference[name].dtype, name
        assert t.is_contiguous()
        assert torch.equal(t.view(torch.uint8), reference[name].view(torch.uint8)), name
    keep = tensors["t.float64"]
    del tensors
    gc.collect()  # the block lives while a view does
    assert torch.equal(keep, reference["t.float64"])
    sub = lris.torch.load(path, device=device, select=["t.int8", "t.BF16"], dtype="float32")
    assert sub["t.BF16"].dtype == torch.float32
    torch.testing.assert_close(sub["t.BF16"], reference["t.BF16"].float(), rtol=0, atol=0,
                               equal_nan=True)  # random bits: NaNs among them


def test_from_dlpack_is_zero_copy_and_outlives_the_loader(every_dtype):
    path, raw = every_dtype
    t = lris.load(path, device="cuda:0", select=["t.float32"])["t.float32"]
    a, b = torch.from_dlpack(t), torch.from_dlpack(t)
    assert a.data_ptr() == b.data_ptr()  # the same memory: no copy
    a[0, 0] = 123.0
    assert b[0, 0].item() == 123.0
    c = torch.from_dlpack(t.__dlpack__(stream=None, copy=True))
    assert c.data_ptr() != a.data_ptr() and torch.equal(c, a)
    del t
    gc.collect()
    want = torch.from_numpy(np.frombuffer(raw["t.float32"][2], np.float32).reshape(33, 17).copy())
    want[0, 0] = 123.0
    assert torch.equal(b.cpu(), want)  # still valid: b holds the lease


def test_used_on_a_side_stream_right_after_load(every_dtype):
    path, raw = every_dtype
    want = torch.from_numpy(np.frombuffer(raw["t.int64"][2], np.int64).reshape(33, 17).copy())
    want_sum = int(want.sum())
    side = torch.cuda.Stream()
    mismatches = 0
    for i in range(1000):
        with torch.cuda.stream(side):
            # The lris.Tensor and its dict are gone at once; x holds the memory.
            x = torch.from_dlpack(lris.load(path, device="cuda:0", select=["t.int64"])["t.int64"])
            s = (x * 1).sum()
        side.synchronize()
        mismatches += int(s.item() != want_sum)
    assert mismatches == 0


def test_cuda_errors(every_dtype):
    path, _ = every_dtype
    with pytest.raises(lris.InvalidArgument, match="device 1000"):
        lris.load(path, device="cuda:1000")
    t = lris.load(path, device="cuda:0", select=["t.int8"])["t.int8"]
    assert t.__dlpack_device__() == (2, 0)  # kDLCUDA
    with pytest.raises(BufferError, match=r"on DLPack device \(2, 0\); a copy to DLPack device \(1, 0\)"):
        t.__dlpack__(dl_device=(1, 0))


def test_load_into_a_models_cuda_tensors(every_dtype):
    path, raw = every_dtype
    reference = load_file(str(path), device="cuda:0")
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):  # the destinations are written on another stream first
        mine = {n: torch.full_like(t, 1) for n, t in reference.items()}
    torch.cuda.current_stream().wait_stream(side)  # as torch asks of work across streams
    done = lris.load_into(mine, path)  # waits for the current stream's work, through DLPack
    assert done["loaded"] == len(raw)
    for n, t in reference.items():
        assert torch.equal(mine[n].view(torch.uint8), t.view(torch.uint8)), n


def test_copy_host_to_gpu_and_back():
    src = torch.randn(1000, 513)  # pageable host memory: through the staging ring
    dev = torch.empty_like(src, device="cuda:0")
    assert lris.copy(dev, src)["bytes"] == src.numel() * 4
    assert torch.equal(dev.cpu(), src)
    back = np.zeros((1000, 513), np.float32)
    lris.copy(back, dev)
    assert torch.equal(torch.from_numpy(back), src)
    other = torch.empty_like(dev)
    lris.copy(other, dev)
    assert torch.equal(other, dev)


def test_a_host_pool_pinned_and_copied_to_the_gpu(every_dtype):
    path, raw = every_dtype
    import os
    with lris.HostPool.of(f"pytest-{os.getpid()}-cuda", path) as pool:
        pin = pool.pin("cuda:0")
        assert pin["pinned"], pin["why"]
        assert pin["segments"] == 1 and pin["bytes"] >= pool.info()["used_bytes"]
        on_gpu = pool.load("cuda:0")
        reference = load_file(str(path), device="cuda:0")
        assert set(on_gpu) == set(raw)
        for name, t in on_gpu.items():
            assert t.device == "cuda:0"
            x = torch.from_dlpack(t)
            assert torch.equal(x.view(torch.uint8), reference[name].view(torch.uint8)), name
