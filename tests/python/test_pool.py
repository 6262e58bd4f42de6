"""lris.HostPool through NumPy, in CI without a GPU: a checkpoint written by the reference
package put in shared memory once and found byte for byte by another process, copied out as one
batch, the segment gone with the last user, and every error."""

import gc
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

import lris

from checkpoints import NUMPY_DTYPES, random_array


def unique(what):
    return f"pytest-{os.getpid()}-{what}"


def segment(name):
    return f"/dev/shm/lris-pool-{name}"


@pytest.fixture()
def model(tmp_path):
    arrays = {f"t.{n}": random_array(dt, (21, 13), i) for i, (n, dt) in enumerate(NUMPY_DTYPES.items())}
    arrays["scalar"] = np.array(2.5, dtype=np.float32)
    arrays["empty"] = np.zeros((0, 5), dtype=np.int16)
    path = tmp_path / "model.safetensors"
    save_file(arrays, str(path))
    return path, arrays


def test_filled_once_and_found_by_another_process(model):
    path, arrays = model
    name = unique("once")
    pool = lris.HostPool.of(name, path)
    assert os.path.exists(segment(name))
    info = pool.info()
    assert info["tensors"] == len(arrays) and info["filling"] == 0 and info["users"] == 1
    for n, a in arrays.items():
        got = np.from_dlpack(pool.find(n))
        assert got.dtype == a.dtype and got.shape == a.shape and np.array_equal(got, a), n
        pool.verify(n)
    assert set(pool.tensors()) == set(arrays)
    again = pool.populate(path)  # nothing left to read
    assert again["loaded"] == 0 and again["present"] == len(arrays)
    # Another process attaches and finds the bytes without the file.
    os.rename(path, str(path) + ".moved")
    code = (f"import lris, numpy as np; p = lris.HostPool({name!r}); "
            f"a = np.from_dlpack(p.find('t.float32')); "
            f"print(a.dtype, a.shape, float(a.sum()), p.info()['users'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ), check=True).stdout.split()
    assert out[:3] == ["float32", "(21,", "13)"]
    assert float(out[3]) == pytest.approx(float(arrays["t.float32"].sum()), rel=1e-6)
    assert out[4] == "2"  # this process and that one
    assert any(i["name"] == name for i in lris.HostPool.list())
    copied = pool.load("cpu", names=["t.int64", "scalar"])
    assert list(copied) == ["t.int64", "scalar"]
    assert np.array_equal(np.from_dlpack(copied["t.int64"]), arrays["t.int64"])
    view = np.from_dlpack(pool.find("t.uint8"))
    if view.flags.writeable:  # a NumPy that asks for no versioned capsule, without the flag
        assert np.lib.NumpyVersion(np.__version__) < "2.1.0"
    else:
        with pytest.raises(ValueError, match="read-only"):
            view[0] = 1  # every process's copy: not through this array
    copy = np.from_dlpack(pool.find("t.uint8"), copy=True)
    copy[...] = 0  # a copy of its own may be written
    assert repr(pool).startswith(f"lris.HostPool({name!r}, tensors=")
    pool.close()
    assert repr(pool) == "lris.HostPool(closed)"
    del pool
    gc.collect()
    assert os.path.exists(segment(name))  # the view keeps it mapped in this process
    assert np.array_equal(view, arrays["t.uint8"])
    del view, got
    gc.collect()
    assert not os.path.exists(segment(name))  # the last user left


def test_persistent_pools_and_drop(model):
    path, arrays = model
    name = unique("persistent")
    try:
        with lris.HostPool.of(name, path, persistent=True) as pool:
            assert pool.info()["persistent"]
        gc.collect()
        assert os.path.exists(segment(name))
        with lris.HostPool(name) as attached:  # attach only
            assert attached.find("t.bool") is not None
        assert lris.HostPool.drop(name)
        assert not os.path.exists(segment(name))
        assert not lris.HostPool.drop(name)
    finally:
        lris.HostPool.drop(name)


def test_progress_and_select(model):
    path, arrays = model
    seen = []
    with lris.HostPool(unique("select"), "1M") as pool:
        r = pool.populate(path, select=r"^t\.(int|uint)8$", progress=lambda d, t: seen.append((d, t)))
        assert r["loaded"] == 2
        assert set(pool.tensors()) == {"t.int8", "t.uint8"}
        assert seen and seen[-1][0] == seen[-1][1]


def test_errors_name_the_pool_and_the_tensor(model, tmp_path):
    path, arrays = model
    with pytest.raises(lris.IoError, match="no such pool"):
        lris.HostPool(unique("missing"))
    with pytest.raises(lris.InvalidArgument, match="not a pool name"):
        lris.HostPool("bad/name", "1M")
    with pytest.raises(lris.InvalidArgument, match="bytes"):
        lris.HostPool(unique("x"), "lots")
    with lris.HostPool(unique("small"), 4096) as pool:
        with pytest.raises(lris.OutOfMemory, match=r"model.safetensors needs \d+ tensors more and "
                                                   r"\d+ bytes; the pool has room for 16384 "
                                                   r"tensors more and 4096 bytes \(nothing was "
                                                   r"claimed\)"):
            pool.populate(path)
        assert pool.info()["filling"] == 0
        with pytest.raises(lris.IoError, match="nope.safetensors"):
            pool.populate(tmp_path / "nope.safetensors")
        with pytest.raises(lris.InvalidArgument, match="no ready tensor \"t.int8\""):
            pool.verify("t.int8")
        assert pool.find("t.int8") is None
        with pytest.raises(lris.Unsupported, match="tpu"):
            pool.load("tpu:0")
    pool.close()
    with pytest.raises(lris.InvalidArgument, match="closed"):
        pool.info()


def test_a_cache_streams_units_from_the_pool(tmp_path):
    rng = np.random.default_rng(5)
    arrays = {}
    for layer in range(6):
        arrays[f"model.layers.{layer}.w"] = rng.standard_normal((64, 96)).astype(np.float32)
        arrays[f"model.layers.{layer}.b"] = rng.standard_normal((96,)).astype(np.float32)
    arrays["model.norm"] = np.ones(96, dtype=np.float32)
    path = tmp_path / "layers.safetensors"
    save_file(arrays, str(path))
    with lris.HostPool.of(unique("units"), path) as pool:
        unit_bytes = 64 * 96 * 4 + 4096  # w, and b on a page of its own
        with lris.Cache("cpu", budget=3 * unit_bytes) as cache:  # 3 of 6 layers fit
            ids = cache.add_pool(pool, r"^(model\.layers\.\d+)\.")
            assert [cache.units[i] for i in ids] == [f"model.layers.{k}" for k in range(6)]
            assert {t[0] for t in cache.tensors(ids[2])} == {"model.layers.2.w", "model.layers.2.b"}
            cache.order(ids)
            for _ in range(3):
                for k, u in enumerate(ids):
                    with cache.acquire(u) as lease:
                        assert np.array_equal(np.from_dlpack(lease[f"model.layers.{k}.w"]),
                                              arrays[f"model.layers.{k}.w"])
                        assert np.array_equal(np.from_dlpack(lease["model.layers.%d.b" % k]),
                                              arrays[f"model.layers.{k}.b"])
            s = cache.stats()
            assert s["pinned_host_bytes"] == 0  # the pool's memory, not a copy of the cache's
            assert s["evictions"] > 0
            with pytest.raises(lris.InvalidArgument, match="no capture group"):
                cache.add_pool(pool, r"^model")
            with pytest.raises(lris.InvalidArgument, match=r"group: bad regular expression \"\(\(\""):
                cache.add_pool(pool, r"((")
