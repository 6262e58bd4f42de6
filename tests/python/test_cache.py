"""lris.Cache on the host backend ("cpu": the cache's memory is host memory), through NumPy: units
added, acquired in order and out of it under a budget smaller than the model, every byte
checked each time; the counters; sleep and wake; every error. Runs in CI without a GPU."""

import gc
import os
import time
import warnings

import numpy as np
import pytest

import lris

from checkpoints import Mapping


def make_units(n, seed=0):
    rng = np.random.default_rng(seed)
    return [{"w": rng.standard_normal((96, 128)).astype(np.float32),
             "bias": rng.integers(-9, 9, size=(5,), dtype=np.int64),
             "scale": np.array(0.5 + i, dtype=np.float64),
             "empty": np.zeros((0, 3), dtype=np.float16)} for i in range(n)]


def check(lease, unit):
    assert len(lease) == len(unit)
    for name, a in unit.items():
        got = np.from_dlpack(lease[name])
        assert got.dtype == a.dtype and got.shape == a.shape, name
        assert np.array_equal(got, a), (lease.name, name)


def test_units_stream_through_a_budget_smaller_than_the_model():
    units = make_units(8)
    unit_bytes = sum(a.nbytes for a in units[0].values())
    with lris.Cache("cpu", budget=3 * unit_bytes + 4096) as cache:  # 3 of 8 fit
        ids = [cache.add(f"layer{i}", u) for i, u in enumerate(units)]
        assert ids == list(range(8))
        assert cache.units == [f"layer{i}" for i in range(8)]
        assert cache.tensors(0)[0] == ("w", "float32", (96, 128), 96 * 128 * 4)
        cache.order(ids)
        for _ in range(3):  # passes in the declared order
            for i in ids:
                with cache.acquire(i) as lease:
                    assert lease.unit == i and lease.name == f"layer{i}"
                    check(lease, units[i])
        for i in [5, 0, 7, 7, 2]:  # and out of it, by name
            with cache.acquire(f"layer{i}") as lease:
                check(lease, units[i])
        s = cache.stats()
        assert s["acquires"] == 29
        assert s["evictions"] > 0
        assert s["high_water_bytes"] <= s["budget_bytes"] == cache.budget
        laid_out = cache.unit_bytes(0)  # with each tensor aligned
        assert unit_bytes <= laid_out < unit_bytes + 4 * 256
        assert s["hit_bytes"] + s["miss_bytes"] + s["prefetch_hit_bytes"] == 29 * laid_out
        assert s["prefetched_bytes"] > 0  # the order brought units in ahead
        assert cache.unit_stats(3)["acquires"] == 3


def test_a_model_that_fits_stays_resident():
    units = make_units(4, seed=1)
    with lris.Cache("cpu", budget="1M", lookahead="64K") as cache:
        assert cache.lookahead == 64 << 10
        ids = [cache.add(f"b{i}", u) for i, u in enumerate(units)]
        cache.order(ids)
        for _ in range(2):
            for i in ids:
                with cache.acquire(i) as lease:
                    check(lease, units[i])
        before = cache.stats()
        for i in ids:
            with cache.acquire(i) as lease:
                check(lease, units[i])
        after = cache.stats()
        assert after["evictions"] == before["evictions"] == 0
        assert after["miss_bytes"] == before["miss_bytes"]
        assert all(cache.resident(i) for i in ids)


def test_lease_tensors_are_views_of_the_arena():
    units = make_units(2, seed=2)
    with lris.Cache("cpu", budget="1M") as cache:
        for i, u in enumerate(units):
            cache.add(f"u{i}", u)
        arena = np.from_dlpack(cache.arena())
        assert arena.dtype == np.uint8 and arena.nbytes == cache.budget
        lease = cache.acquire(1)
        off = lease.offsets[0]
        w = units[1]["w"]
        assert np.array_equal(arena[off:off + w.nbytes].view(np.float32).reshape(w.shape), w)
        assert lease.addresses[0] - cache.arena_address == off
        assert [t[0] for t in cache.tensors(1)] == ["w", "bias", "scale", "empty"]
        lease.release()
        assert not lease.held


def test_sleep_keeps_the_units_and_wake_brings_them_back():
    units = make_units(3, seed=3)
    with lris.Cache("cpu", budget="1M") as cache:
        ids = [cache.add(f"u{i}", u) for i, u in enumerate(units)]
        for i in ids:
            with cache.acquire(i) as lease:
                check(lease, units[i])
        cache.sleep()
        assert cache.asleep and cache.arena_address == 0
        with pytest.raises(lris.InvalidArgument, match="asleep"):
            cache.acquire(0)
        with pytest.raises(lris.InvalidArgument, match="asleep"):
            cache.arena()
        cache.wake()
        assert not cache.asleep
        assert cache.stats()["woken_bytes"] > 0
        for i in ids:
            with cache.acquire(i) as lease:
                check(lease, units[i])


def test_tensors_from_the_host_and_from_numpy_views():
    with lris.Cache("cpu", budget="1M") as cache:
        base = np.arange(64, dtype=np.int32).reshape(8, 8)
        u = cache.add("rows", {"top": base[:4], "flat": base.ravel()})  # contiguous views
        with cache.acquire(u) as lease:
            assert np.array_equal(np.from_dlpack(lease["top"]), base[:4])
            assert np.array_equal(np.from_dlpack(lease[1]), base.ravel())


def test_a_dropped_lease_is_released():
    units = make_units(2, seed=4)
    cache = lris.Cache("cpu", budget="1M")
    cache.add("a", units[0])
    lease = cache.acquire("a")
    del lease
    gc.collect()
    cache.sleep()  # would fail while a unit is leased
    cache.close()


def test_memory_outlives_the_cache_object():
    units = make_units(1, seed=5)
    cache = lris.Cache("cpu", budget="1M")
    cache.add("a", units[0])
    lease = cache.acquire("a")
    del cache
    gc.collect()
    check(lease, units[0])  # the lease keeps the cache's memory
    lease.release()


def test_errors_name_the_unit_and_the_size():
    units = make_units(2, seed=6)
    with pytest.raises(lris.InvalidArgument, match="budget is needed"):
        lris.Cache("cpu")
    for bad in ["12Q", "-1", "lots", -5, True]:
        with pytest.raises(lris.InvalidArgument, match="budget"):
            lris.Cache("cpu", budget=bad)
    with pytest.raises(lris.InvalidArgument, match="budget is 0 bytes"):
        lris.Cache("cpu", budget=0)
    with pytest.raises(lris.InvalidArgument, match="budget is 1 bytes, less than one range"):
        lris.Cache("cpu", budget=1)
    for alignment in (0, 3):
        with pytest.raises(lris.InvalidArgument, match=f"alignment {alignment} is not a power of two"):
            lris.Cache("cpu", budget="1M", alignment=alignment)
    with pytest.raises(lris.Unsupported, match="not a device of this build|cuda"):
        lris.Cache("tpu:0", budget="1M")
    with pytest.raises(lris.InvalidArgument, match="device number"):
        lris.Cache("cpu:x", budget="1M")
    with lris.Cache("cpu", budget=64 << 10) as cache:
        with pytest.raises(lris.InvalidArgument, match="too big"):
            cache.add("too big", {"w": np.zeros(70000, dtype=np.uint8)})
        cache.add("a", {"w": units[0]["w"][:8]})
        with pytest.raises(lris.InvalidArgument, match="\"a\""):
            cache.add("a", {"w": units[0]["w"][:8]})  # a name taken
        with pytest.raises(lris.InvalidArgument, match="dict"):
            cache.add("b", [units[0]["w"]])
        with pytest.raises(lris.InvalidArgument, match="no __dlpack__"):
            cache.add("b", {"w": [1, 2, 3]})
        with pytest.raises(TypeError, match=r'Cache.add\("b"\): a tensor\'s name is 5, not a str'):
            cache.add("b", {5: units[0]["w"]})
        with pytest.raises(lris.InvalidArgument, match="\"w\" is not contiguous"):
            cache.add("b", {"w": units[0]["w"][:, ::2]})
        gone = Mapping((8,), np.float32, unmapped=True)  # an array over memory unmapped again
        with pytest.raises(lris.InvalidArgument,
                           match=r'Cache.add: the memory of "w" \(32 bytes at .* may read'):
            cache.add("b", {"w": np.asarray(gone)})
        with pytest.raises(lris.InvalidArgument, match="unit 7 does not exist"):
            cache.acquire(7)
        for bad in (2 ** 70, 1.5, b"a"):
            with pytest.raises(lris.InvalidArgument, match="is neither a unit's name nor its number"):
                cache.acquire(bad)
        with pytest.raises(lris.InvalidArgument, match="no unit called \"nope\""):
            cache.acquire("nope")
        with pytest.raises(lris.InvalidArgument, match="takes none"):
            cache.acquire("a", stream=5)
        with pytest.raises(lris.InvalidArgument, match="unit 3 does not exist"):
            cache.order([0, 3])
        lease = cache.acquire("a")
        with pytest.raises(KeyError, match="no tensor \"bias\""):
            lease["bias"]
        with pytest.raises(IndexError, match="no tensor 4"):
            lease[4]
        with pytest.raises(KeyError, match="by its name or its number"):
            lease[2 ** 70]
        with pytest.raises(lris.InvalidArgument, match="leased"):
            cache.sleep()
        with pytest.raises(lris.InvalidArgument, match="leased"):
            cache.close()
        lease.release()
        with pytest.raises(lris.InvalidArgument, match="after release"):
            lease.release()
        with pytest.raises(lris.InvalidArgument, match="after release"):
            lease.offsets
        cache.close()
        with pytest.raises(lris.InvalidArgument, match="closed"):
            cache.acquire("a")
        cache.close()  # twice is fine


def test_exported_memory_outlives_close_and_blocks_sleep():
    units = make_units(2, seed=7)
    cache = lris.Cache("cpu", budget="1M")
    cache.add("a", units[0])
    with cache.acquire("a") as lease:
        w = np.from_dlpack(lease["w"])  # an export over the cache's memory
    arena = cache.arena()
    with pytest.raises(lris.InvalidArgument, match="sleep\\(\\) while 2 tensors over the cache"):
        cache.sleep()
    cache.close()  # the memory stays with its exports
    assert np.array_equal(w, units[0]["w"])
    assert len(arena.tobytes()) == cache.budget
    with pytest.raises(lris.InvalidArgument, match="closed"):
        cache.arena()
    del w, arena
    gc.collect()

    again = lris.Cache("cpu", budget="1M")
    again.add("a", units[1])
    with again.acquire("a") as lease:
        w = np.from_dlpack(lease["w"])
    del w
    gc.collect()
    again.sleep()  # nothing over the memory any more
    again.wake()
    again.close()


def test_adds_from_threads_keep_their_names():
    import threading
    units = make_units(8, seed=8)
    with lris.Cache("cpu", budget="4M") as cache:
        ids = {}

        def add(k):
            ids[k] = cache.add(f"u{k}", units[k])

        threads = [threading.Thread(target=add, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for k, u in ids.items():
            assert cache.units[u] == f"u{k}"
            with cache.acquire(u) as lease:
                check(lease, units[k])


def test_a_cache_in_a_forked_child_is_refused_and_lets_the_child_end():
    """The child of a fork has none of the cache's threads: a call there is refused by name, and
    closing it (or the child's end) does not wait for them."""
    units = make_units(4, seed=8)
    unit_bytes = sum(a.nbytes for a in units[0].values())
    cache = lris.Cache("cpu", budget=2 * unit_bytes + 4096)
    ids = [cache.add(f"layer{i}", u) for i, u in enumerate(units)]
    cache.order(ids)
    for i in ids:  # the prefetch thread started
        with cache.acquire(i) as lease:
            check(lease, units[i])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads running
        pid = os.fork()
    if pid == 0:
        code = 3
        try:
            try:
                cache.acquire(ids[0])
                code = 1
            except lris.InvalidArgument as e:
                code = 0 if "is a child forked from it" in str(e) else 2
            cache.close()
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung on the cache")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(status) == 0
    with cache.acquire(ids[1]) as lease:  # the parent's cache is as it was
        check(lease, units[1])
    cache.close()

