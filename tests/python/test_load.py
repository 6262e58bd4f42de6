"""lris.load, lris.inspect and lris.Tensor on the CPU through NumPy, without torch: the bytes
against the reference safetensors package, every dtype, scalar and empty tensors, sharded
checkpoints, DLPack hand-off whose memory outlives the loader, and every error."""

import ctypes
import errno
import gc
import json
import struct
import weakref

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import lris

from checkpoints import NUMPY_DTYPES, Mapping, Producer, random_array, write_raw


@pytest.fixture
def reference_file(tmp_path):
    arrays = {f"t.{name}": random_array(dt, (3, 5), i) for i, (name, dt) in
              enumerate(NUMPY_DTYPES.items())}
    path = tmp_path / "all.safetensors"
    save_file(arrays, str(path), metadata={"format": "np"})
    return path, arrays


def test_every_numpy_dtype_matches_the_reference(reference_file):
    path, arrays = reference_file
    reference = load_file(str(path))
    tensors = lris.load(path)
    assert set(tensors) == set(arrays)
    for name, t in tensors.items():
        want = reference[name]
        assert t.dtype == name[2:]
        assert t.shape == want.shape
        assert t.device == "cpu"
        assert t.nbytes == want.nbytes
        assert t.tobytes() == want.tobytes()
        got = np.from_dlpack(t)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_dtypes_numpy_cannot_name_come_back_byte_for_byte(tmp_path):
    rng = np.random.default_rng(5)
    raw = {}
    for dtype, bits in [("BF16", 16), ("F8_E4M3", 8), ("F8_E5M2", 8), ("F8_E8M0", 8),
                        ("F8_E4M3FNUZ", 8), ("F8_E5M2FNUZ", 8), ("C64", 64)]:
        n = 4 * 6 * bits // 8
        raw[dtype] = (dtype, (4, 6), rng.integers(0, 256, size=n, dtype=np.uint8).tobytes())
    path = tmp_path / "narrow.safetensors"
    write_raw(path, raw)
    tensors = lris.load(path)
    names = {"BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
             "F8_E8M0": "float8_e8m0fnu", "F8_E4M3FNUZ": "float8_e4m3fnuz",
             "F8_E5M2FNUZ": "float8_e5m2fnuz", "C64": "complex64"}
    for name, (_, shape, data) in raw.items():
        assert tensors[name].dtype == names[name]
        assert tensors[name].shape == shape
        assert tensors[name].tobytes() == data


def test_scalar_and_empty_tensors(tmp_path):
    arrays = {"scalar": np.array(3.5, dtype=np.float32), "empty": np.zeros((0, 4), np.int32),
              "one": np.array([7], dtype=np.int64)}
    path = tmp_path / "edges.safetensors"
    save_file(arrays, str(path))
    tensors = lris.load(path)
    assert tensors["scalar"].shape == ()
    assert np.from_dlpack(tensors["scalar"]) == np.float32(3.5)
    assert tensors["empty"].shape == (0, 4)
    assert tensors["empty"].nbytes == 0
    assert tensors["empty"].tobytes() == b""
    assert np.from_dlpack(tensors["empty"]).shape == (0, 4)
    assert np.from_dlpack(tensors["one"]).tolist() == [7]


def test_a_sharded_directory_through_its_index(tmp_path):
    a = {"layers.0.w": random_array(np.float32, (8, 8), 1)}
    b = {"layers.1.w": random_array(np.float32, (8, 8), 2), "norm": np.ones(8, np.float16)}
    save_file(a, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file(b, str(tmp_path / "model-00002-of-00002.safetensors"))
    weight_map = {k: "model-00001-of-00002.safetensors" for k in a}
    weight_map.update({k: "model-00002-of-00002.safetensors" for k in b})
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}))
    tensors = lris.load(tmp_path)
    assert sorted(tensors) == ["layers.0.w", "layers.1.w", "norm"]
    for name, want in {**a, **b}.items():
        np.testing.assert_array_equal(np.from_dlpack(tensors[name]), want)
    info = lris.inspect(tmp_path)
    assert len(info["shards"]) == 2
    assert info["tensors"]["norm"] == {"dtype": "float16", "shape": (8,), "nbytes": 16,
                                       "shard": 1, "offset": info["tensors"]["norm"]["offset"]}
    assert info["data_bytes"] == 2 * 256 + 16


def test_verify_reads_the_files_again(reference_file):
    path, arrays = reference_file
    tensors = lris.load(path, verify=True)
    for name, a in arrays.items():
        np.testing.assert_array_equal(np.from_dlpack(tensors[name]), a)
    assert lris.load(path, dtype="float32", select=r"float", verify=True)["t.float16"].dtype == "float32"


def test_select_and_convert(reference_file):
    path, arrays = reference_file
    picked = lris.load(path, select=r"float(32|64)$")
    assert sorted(picked) == ["t.float32", "t.float64"]
    assert sorted(lris.load(path, select=["t.int8", "t.bool"])) == ["t.bool", "t.int8"]
    exact = tmp = path.parent / "exact.safetensors"
    values = np.array([1.0, -2.5, 0.15625, 2.0**100], dtype=np.float32)  # exact in bfloat16
    save_file({"x": values}, str(tmp))
    x = lris.load(exact, dtype="bfloat16")["x"]
    assert x.dtype == "bfloat16"
    top_halves = (values.view(np.uint32) >> 16).astype(np.uint16)
    assert x.tobytes() == top_halves.tobytes()


def test_memory_outlives_the_loader_and_the_tensor(reference_file):
    path, arrays = reference_file
    kept = []
    for _ in range(20):
        tensors = lris.load(path)
        kept.append(np.from_dlpack(tensors["t.float64"]))
        del tensors
        gc.collect()
    for a in kept:
        np.testing.assert_array_equal(a, arrays["t.float64"])
    a = kept[0]
    a[0, 0] = 42.0  # writable, and the copy below is apart from it
    copy = np.from_dlpack(lris.load(path)["t.float64"], copy=True)
    copy[0, 0] = -1.0
    assert a[0, 0] == 42.0


def capsule_name(capsule):
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype = ctypes.c_char_p
    get_name.argtypes = [ctypes.py_object]
    return get_name(capsule).decode()


def test_dlpack_capsules_and_devices(reference_file):
    path, _ = reference_file
    t = lris.load(path, select=["t.int32"])["t.int32"]
    assert t.__dlpack_device__() == (1, 0)  # kDLCPU
    assert capsule_name(t.__dlpack__()) == "dltensor"
    assert capsule_name(t.__dlpack__(max_version=(1, 0))) == "dltensor_versioned"
    assert capsule_name(t.__dlpack__(stream=-1, max_version=(0, 8))) == "dltensor"
    with pytest.raises(BufferError, match="stream 7 for host memory"):
        t.__dlpack__(stream=7)
    with pytest.raises(BufferError, match=r"on DLPack device \(1, 0\); a copy to DLPack device \(2, 0\)"):
        t.__dlpack__(dl_device=(2, 0))
    # Arguments of the wrong kind: named, with what they were.
    for kwargs, message in [({"stream": "x"}, "stream is 'x', not None or an int"),
                            ({"max_version": (1,)}, r"max_version is \(1,\), not \(major, minor\)"),
                            ({"dl_device": "x"}, "dl_device is 'x', not"),
                            ({"copy": 1}, "copy is 1, not None or a bool")]:
        with pytest.raises(TypeError, match=r'lris.Tensor "t.int32".__dlpack__: ' + message):
            t.__dlpack__(**kwargs)
    with pytest.raises(TypeError, match="an item of select is 5, not a str"):
        lris.load(path, select=["t.int32", 5])
    assert "t.int32" in repr(t) and "shape=(3, 5)" in repr(t)


def test_progress_is_reported_and_can_cancel(tmp_path):
    # Big enough for many chunks: a cancel takes effect before the last one starts.
    path = tmp_path / "big.safetensors"
    save_file({f"w{i}": np.full((1024, 1024), i, np.float32) for i in range(24)}, str(path))
    seen = []
    lris.load(path, progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1][0] == seen[-1][1] > 0
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
    assert len(seen) > 2
    with pytest.raises(lris.Cancelled, match="cancel"):
        lris.load(path, progress=lambda done, total: False)
    # Any value, taken as `if value:` would: falsy ones cancel, truthy ones go on.
    for falsy in (0, "", np.bool_(False), []):
        with pytest.raises(lris.Cancelled, match="cancel"):
            lris.load(path, progress=lambda done, total, v=falsy: v)
    for truthy in (1, "yes", np.bool_(True), [0]):
        assert len(lris.load(path, progress=lambda done, total, v=truthy: v)) == 24

    class NoTruth:
        def __bool__(self):
            raise ValueError("no truth value")

    with pytest.raises(ValueError, match="no truth value"):
        lris.load(path, progress=lambda done, total: NoTruth())

    class Boom(Exception):
        pass

    def fail(done, total):
        raise Boom("from the callback")

    with pytest.raises(Boom, match="from the callback"):
        lris.load(path, progress=fail)
    assert lris.load(path, progress=True)  # a bar where tqdm is installed, else nothing


def test_errors_name_what_is_at_fault(tmp_path, reference_file):
    path, _ = reference_file
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(lris.IoError) as e:
        lris.load(missing)
    assert e.value.errno == errno.ENOENT and str(missing) in str(e.value)
    assert isinstance(e.value, OSError) and isinstance(e.value, lris.Error)

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", 10) + b"not json!!")
    with pytest.raises(lris.FormatError, match="bad.safetensors") as e:
        lris.load(bad)
    assert isinstance(e.value, ValueError)
    with pytest.raises(lris.FormatError, match="bad.safetensors"):
        lris.inspect(bad)

    past = tmp_path / "past.safetensors"
    write_raw(past, {"w": ("F32", (4,), b"\0" * 8)})  # 16 bytes declared, 8 there
    with pytest.raises(lris.FormatError, match="w"):
        lris.load(past)

    with pytest.raises(lris.InvalidArgument, match='dtype "float7" is not one LRIS knows'):
        lris.load(path, dtype="float7")
    with pytest.raises(lris.Unsupported, match="tensors convert to BF16, F16 or F32 as they load, "
                                               "not to F64"):
        lris.load(path, dtype="float64")
    with pytest.raises(lris.InvalidArgument, match="the device number is not a number"):
        lris.load(path, device="cpu:x")
    with pytest.raises(lris.Unsupported, match=r'device="tpu:0"\): not a device of this build'):
        lris.load(path, device="tpu:0")
    with pytest.raises(lris.InvalidArgument, match="select is an empty list"):
        lris.load(path, select=[])
    with pytest.raises(lris.Error, match="nope"):
        lris.load(path, select=["nope"])


def test_load_into_fills_the_callers_arrays(reference_file):
    path, arrays = reference_file
    mine = {name: np.zeros_like(a) for name, a in arrays.items()}
    ids = {name: id(a) for name, a in mine.items()}
    done = lris.load_into(mine, path)
    assert done["loaded"] == len(arrays) and done["missing"] == [] and done["unexpected"] == []
    assert done["bytes"] == sum(a.nbytes for a in arrays.values())
    for name, a in arrays.items():
        assert id(mine[name]) == ids[name]  # the same objects, filled
        np.testing.assert_array_equal(mine[name], a)
    # Not strict: the names both have; the rest reported.
    some = {"t.int8": np.zeros((3, 5), np.int8), "extra": np.zeros(2, np.int8)}
    done = lris.load_into(some, path, strict=False)
    assert done["loaded"] == 1 and done["missing"] == ["extra"]
    assert len(done["unexpected"]) == len(arrays) - 1
    np.testing.assert_array_equal(some["t.int8"], arrays["t.int8"])


def test_load_into_errors_name_the_tensor(reference_file):
    path, arrays = reference_file
    with pytest.raises(lris.InvalidArgument, match=r'strict\): 0 destinations .* 11 checkpoint tensors without'):
        lris.load_into({"t.int8": np.zeros((3, 5), np.int8)}, path)
    with pytest.raises(lris.InvalidArgument, match=r'1 destination the checkpoint lacks: "nope"'):
        lris.load_into({**{n: np.zeros_like(a) for n, a in arrays.items()}, "nope": np.zeros(1)}, path)
    bad_shape = {"t.int8": np.zeros((5, 3), np.int8)}
    with pytest.raises(lris.InvalidArgument, match=r'"t.int8" has shape \(3, 5\); its destination \(5, 3\)'):
        lris.load_into(bad_shape, path, strict=False)
    bad_type = {"t.int8": np.zeros((3, 5), np.uint8)}
    with pytest.raises(lris.InvalidArgument, match=r'"t.int8" is int8; its destination holds DLPack type \(code 1, 8 bits\)'):
        lris.load_into(bad_type, path, strict=False)
    strided = {"t.int8": np.zeros((3, 10), np.int8)[:, ::2]}
    with pytest.raises(lris.InvalidArgument, match='"t.int8" is not contiguous'):
        lris.load_into(strided, path, strict=False)
    with pytest.raises(TypeError, match=r"all.safetensors: a destination's name is 5, not a str"):
        lris.load_into({5: np.zeros((3, 5), np.int8)}, path, strict=False)
    with pytest.raises(lris.InvalidArgument, match=r'"t.int8" \(list\) has no __dlpack__'):
        lris.load_into({"t.int8": [0] * 15}, path, strict=False)
    untouched = np.full((3, 5), 7, np.int8)
    with pytest.raises(lris.InvalidArgument):
        lris.load_into({"t.int8": untouched, "t.int16": np.zeros((1,), np.int16)}, path, strict=False)
    assert (untouched == 7).all()  # checked before anything is read


def test_memory_the_process_may_not_write_is_refused_before_any_read(reference_file):
    path, arrays = reference_file
    ro = Mapping((3, 5), np.int8)
    try:
        dst = {n: np.zeros_like(a) for n, a in arrays.items()}
        dst["t.int8"] = np.asarray(ro)
        assert dst["t.int8"].flags.writeable  # the array says so; the pages do not
        with pytest.raises(lris.InvalidArgument,
                           match=r'lris.load_into .*all.safetensors: the memory of "t.int8" \(15 '
                                 r'bytes at 0x[0-9a-f]+\) is not memory this process may write, '
                                 r'from 0x[0-9a-f]+ on \(read-only or unmapped\)'):
            lris.load_into(dst, path)
        assert all(not a.any() for n, a in dst.items() if n != "t.int8")  # nothing read
        src = np.ones((3, 5), np.int8)
        with pytest.raises(lris.InvalidArgument, match=r'lris.copy: the memory of "dst" .* may write'):
            lris.copy(np.asarray(ro), src)
        gone = Mapping((3, 5), np.int8, unmapped=True)
        with pytest.raises(lris.InvalidArgument,
                           match=r'lris.copy: the memory of "src" .* may read, .* \(unmapped\)'):
            lris.copy(np.zeros((3, 5), np.int8), np.asarray(gone))
        lris.copy(src, np.asarray(ro))  # read-only memory may be read
        assert not src.any()
    finally:
        dst = None
        ro.close()


def test_broken_dlpack_producers_are_refused_by_name(reference_file):
    path, _ = reference_file
    cases = [
        (Producer(device=()), r"__dlpack_device__\(\) gave \(\), not a pair of ints"),
        (Producer(device=(1,)), r"__dlpack_device__\(\) gave \(1,\), not a pair of ints"),
        (Producer(device=None), r"__dlpack_device__\(\) gave None"),
        (Producer(device=(2 ** 70, 0)), r"__dlpack_device__\(\) gave \(1180591620717411303424, 0\)"),
        (Producer(ndim=-1), "its DLPack tensor has -1 dimensions"),
        (Producer(ndim=2 ** 30), "its DLPack tensor has 1073741824 dimensions"),
        (Producer(null_shape=True), "its DLPack tensor has 2 dimensions and no shape"),
        (Producer(shape=(-1, 4)), r"its DLPack shape \(-1, 4\) has a negative size"),
        (Producer(shape=(2 ** 40, 2 ** 30)), r"its DLPack shape \(1099511627776, 1073741824\) of 32-bit "
                                             "elements is more bytes than memory has"),
    ]
    for producer, message in cases:
        with pytest.raises(lris.InvalidArgument, match=r'lris.load_into: the object for "t.int8" '
                                                       r"\(.*Producer\): " + message):
            lris.load_into({"t.int8": producer}, path, strict=False)
        with pytest.raises(lris.InvalidArgument, match=r'lris.copy: the object for "dst" .*' + message):
            lris.copy(producer, np.zeros((3, 4), np.float32))
        with lris.Cache("cpu", budget="1M") as cache:
            with pytest.raises(lris.InvalidArgument, match=r'Cache.add: the object for "w" .*' + message):
                cache.add("u", {"w": producer})
    assert lris.load_into({"t.float32": Producer(shape=(3, 5), device=[1, 0])}, path, strict=False)["loaded"] == 1
    with pytest.raises(lris.InvalidArgument, match=r"dst holds DLPack type \(code 2, 32 bits, 2 lanes\), "
                                                   r"src \(code 2, 32 bits\)"):
        lris.copy(Producer(shape=(2, 2), lanes=2), np.zeros((2, 2), np.float32))
    with pytest.raises(lris.InvalidArgument, match=r'"t.float32" is float32; its destination holds '
                                                   r"DLPack type \(code 2, 32 bits, 2 lanes\)"):
        lris.load_into({"t.float32": Producer(shape=(3, 5), lanes=2)}, path, strict=False)


def test_load_into_releases_every_capsule_it_takes(reference_file):
    """A mapping whose keys() names a destination twice, and one whose check fails after its
    capsule was taken: every object is freed once the call is over."""
    path, arrays = reference_file

    class Twice(dict):
        def keys(self):
            return ["t.float32", "t.float32"]

    a = np.empty((3, 5), np.float32)
    held = weakref.ref(a)
    assert lris.load_into(Twice({"t.float32": a}), path, strict=False)["loaded"] == 1
    np.testing.assert_array_equal(a, arrays["t.float32"])
    b = np.empty((5, 3), np.float32)  # the wrong shape: refused after its capsule was taken
    held_b = weakref.ref(b)
    with pytest.raises(lris.InvalidArgument, match="has shape"):
        lris.load_into({"t.float32": b}, path, strict=False)
    del a, b
    gc.collect()
    assert held() is None and held_b() is None


def test_the_brokers_status_after_a_load(reference_file):
    path, _ = reference_file
    lris.load(path)
    status = lris.broker_status()
    assert status, "a load registers its resources with the broker"
    moved = 0
    for name, r in status.items():
        assert set(r["by_priority"]) == {"critical", "normal", "background"}
        for g in r["by_priority"].values():
            assert g["waits"] <= g["grants"]
        assert r["capacity"] > 0 and 0 <= r["utilization"]
        assert r["ceiling_gbps"] is None or r["ceiling_gbps"] > 0
        moved += r["bytes"]
    assert moved > 0


def test_copy_between_arrays():
    src = random_array(np.float32, (1000, 257), 9)
    dst = np.zeros_like(src)
    done = lris.copy(dst, src)
    np.testing.assert_array_equal(dst, src)
    assert done["bytes"] == src.nbytes and done["seconds"] >= 0 and done["path"]
    big = random_array(np.int64, (4096, 1024), 10)  # 32 MiB: split over the copy engine
    out = np.empty_like(big)
    lris.copy(out, big)
    assert (out == big).all()
    empty = np.zeros((0, 3), np.int8)
    assert lris.copy(empty, np.zeros((0, 3), np.int8))["bytes"] == 0


def test_copy_errors():
    a = np.zeros((4, 4), np.float32)
    with pytest.raises(lris.InvalidArgument, match=r"dst has shape \(4, 4\), src \(16,\)"):
        lris.copy(a, np.zeros(16, np.float32))
    with pytest.raises(lris.InvalidArgument, match=r"dst holds DLPack type \(code 2, 32 bits\), src \(code 0, 32 bits\)"):
        lris.copy(a, np.zeros((4, 4), np.int32))
    with pytest.raises(lris.InvalidArgument, match="src is not contiguous"):
        lris.copy(np.zeros((4, 2), np.float32), a[:, ::2])
    with pytest.raises(lris.InvalidArgument, match=r'lris.copy: the object for "src" \(bytes\) has no __dlpack__'):
        lris.copy(a, b"0" * 64)


def test_tensor_parallel_rank_loads_only_its_slices(tmp_path):
    """tp=(rank, size) with a plan: colwise rows, rowwise columns, the rest whole; verified."""
    q = random_array(np.float32, (8, 6), 1)
    o = random_array(np.float32, (6, 8), 2)
    norm = random_array(np.float32, (6,), 3)
    path = tmp_path / "tp.safetensors"
    save_file({"layers.0.q_proj.weight": q, "layers.0.o_proj.weight": o, "norm.weight": norm},
              str(path))
    plan = {"layers.*.q_proj": "colwise", "layers.*.o_proj": "rowwise"}
    for rank in range(2):
        got = lris.load(path, tp=(rank, 2), tp_plan=plan, verify=True)
        np.testing.assert_array_equal(np.from_dlpack(got["layers.0.q_proj.weight"]),
                                      q[rank * 4:(rank + 1) * 4])
        np.testing.assert_array_equal(np.from_dlpack(got["layers.0.o_proj.weight"]),
                                      o[:, rank * 4:(rank + 1) * 4])
        np.testing.assert_array_equal(np.from_dlpack(got["norm.weight"]), norm)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps({"q_proj": "dim=1"}))
    got = lris.load(path, tp=(1, 3), tp_plan=str(plan_file))
    np.testing.assert_array_equal(np.from_dlpack(got["layers.0.q_proj.weight"]), q[:, 2:4])
    with pytest.raises(lris.InvalidArgument, match=r"tp=\(2, 2\) is not \(rank, size\)"):
        lris.load(path, tp=(2, 2))
    with pytest.raises(lris.InvalidArgument, match="tp_plan without tp"):
        lris.load(path, tp_plan=plan)
    with pytest.raises(lris.InvalidArgument, match='"sideways" is not a style'):
        lris.load(path, tp=(0, 2), tp_plan={"q_proj": "sideways"})
    with pytest.raises(lris.InvalidArgument, match=r"dimension 1 \(8\) does not divide into 3 equal parts"):
        lris.load(path, tp=(0, 3), tp_plan=plan)
    with pytest.raises(lris.InvalidArgument, match="cannot be read"):
        lris.load(path, tp=(0, 2), tp_plan=str(tmp_path / "none.json"))
