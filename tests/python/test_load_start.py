"""lris._lris.load_start, behind lris.torch.load, and lris.load's waits, on the CPU through
NumPy, without torch: the block comes while the bytes are read, waits from several threads and
again, progress given on the waiting thread, a Ctrl-C stops a load, and nothing left behind by
failed or interrupted loads."""

import _thread
import os
import threading
import time

import numpy as np
import pytest

import lris

from checkpoints import holes, many_chunks, run_python, run_without_leaks


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    return many_chunks(tmp_path_factory.mktemp("start") / "big.safetensors")


@pytest.fixture(scope="module")
def long(tmp_path_factory):
    return holes(tmp_path_factory.mktemp("start") / "holes.safetensors")


def test_the_block_comes_while_the_bytes_are_read(big, long):
    # 2 GiB: the reads are still going when placed() returns.
    pending = lris._lris.load_start(long, device="cpu")
    block, entries, tensors = pending.placed()
    assert pending.finished_at is None
    assert len(entries) == 32 and block.nbytes >= 32 * (64 << 20)
    del block, entries, tensors
    pending.cancel()
    with pytest.raises(lris.Cancelled):
        pending.wait()
    # Every byte is there once wait() has returned.
    pending = lris._lris.load_start(big, device="cpu")
    start = time.monotonic()
    block, entries, tensors = pending.placed()
    assert sorted(e[0] for e in entries) == sorted(f"w{i}" for i in range(32))
    assert set(tensors) == {f"w{i}" for i in range(32)}
    with pytest.raises(lris.InvalidArgument, match="taken already"):
        pending.placed()
    pending.wait()
    assert start <= pending.finished_at <= time.monotonic()
    pending.wait()  # again: nothing more to wait for
    x = np.from_dlpack(block)
    for name, dt, shape, strides, offset in entries:
        v = x[offset * 4:offset * 4 + 512 * 1024 * 4].view(np.float32).reshape(shape)
        assert np.all(v == float(name[1:])), name


def slow(done, total):
    time.sleep(0.01)
    return True


def test_wait_again_and_from_two_threads(big, long):
    class Boom(Exception):
        pass

    def fail(done, total):
        raise Boom("from the callback")

    pending = lris._lris.load_start(big, device="cpu", progress=fail)
    with pytest.raises(Boom, match="from the callback"):
        pending.wait()
    for _ in range(2):  # handed over once; later calls say what it was
        with pytest.raises(lris.Cancelled, match="raised Boom: from the callback"):
            pending.wait()
    with pytest.raises(lris.Cancelled, match="raised Boom"):  # ended with an error: no block
        pending.placed()

    # Two waiters: one calls the (slow) callable at a time, and the other sleeps meanwhile
    # rather than spinning (its thread's CPU time is a small part of the wait: about 5 ms
    # here; spinning, it came to 20-115 ms).
    pending = lris._lris.load_start(long, device="cpu", progress=slow)
    ended = []

    def wait():
        wall, cpu = time.monotonic(), time.thread_time()
        pending.wait()
        ended.append((time.thread_time() - cpu, time.monotonic() - wall))

    threads = [threading.Thread(target=wait) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(ended) == 2
    for cpu, wall in ended:
        assert cpu < 0.01 + 0.02 * wall, ended


def test_a_second_placed_does_not_wait_for_the_load(long):
    pending = lris._lris.load_start(long, device="cpu")
    pending.placed()
    start = time.monotonic()
    with pytest.raises(lris.InvalidArgument, match="taken already"):
        pending.placed()
    assert pending.finished_at is None and time.monotonic() - start < 0.2
    pending.cancel()
    with pytest.raises(lris.Cancelled):
        pending.wait()


def test_progress_comes_on_the_waiting_thread_as_the_bytes_do(big, long):
    # The load's own threads never call Python: its progress is given to the callable by the
    # thread that waits for it, as it comes (a 2 GiB load: many calls), the bytes done growing
    # to the total.
    seen = []

    def record(done, total):
        seen.append((threading.get_ident(), done, total))

    lris.load(long, progress=record)
    assert {s[0] for s in seen} == {threading.get_ident()}
    assert len(seen) > 2 and seen[-1][1] == seen[-1][2] == 32 * (64 << 20)
    assert all(a[1] < b[1] for a, b in zip(seen, seen[1:]))

    seen.clear()
    pending = lris._lris.load_start(big, device="cpu", progress=record)
    time.sleep(0.2)
    assert seen == []  # nobody waits: nobody is called
    waiter = threading.Thread(target=pending.wait)
    waiter.start()
    waiter.join(timeout=60)
    assert {s[0] for s in seen} == {waiter.ident} and seen[-1][1] == seen[-1][2]

    # A callable that says stop cancels the load, even one whose bytes had all come.
    pending = lris._lris.load_start(big, device="cpu", progress=lambda d, t: False)
    time.sleep(0.2)
    with pytest.raises(lris.Cancelled, match="cancelled by its progress callback"):
        pending.wait()


def test_a_callback_that_holds_its_own_load_is_collected(big):
    """A progress callback that refers to its _PendingLoad (through a closure) makes a cycle
    through the load's C++ side: the collector finds it (tp_traverse) and breaks it (tp_clear,
    which cancels the load), and nothing is left at the interpreter's exit."""
    run_without_leaks(f"""
import gc, time, weakref
import lris
calls = []
def make():
    holder = {{}}
    def progress(done, total):
        calls.append(done)
        time.sleep(0.01)
        return holder.get("pending") is not None
    holder["pending"] = lris._lris.load_start({str(big)!r}, progress=progress)
    return weakref.ref(progress)
progress = make()
gc.collect()
assert progress() is None, "the cycle was not collected"
time.sleep(0.2)
n = len(calls)
time.sleep(0.2)
assert len(calls) == n < 32, calls  # the load was cancelled with it
""")


def test_ctrl_c_stops_lris_load(big, long):
    # A Ctrl-C (interrupt_main) while lris.load waits: the load stops at its next chunk and
    # KeyboardInterrupt comes at once, not at the load's end; the same where it comes while
    # the progress callable runs.
    interrupted(lambda: lris.load(long))
    interrupted(lambda: lris.load(big, progress=lambda d, t: time.sleep(0.05) or True))
    assert np.all(np.from_dlpack(lris.load(big)["w7"]) == 7)



def interrupted(call):
    """call() with a Ctrl-C 50 ms in: it must end with KeyboardInterrupt within a second."""
    timer = threading.Timer(0.05, _thread.interrupt_main)
    start = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        call()
    assert time.monotonic() - start < 1.0
    timer.join()


def test_ctrl_c_stops_load_into_and_a_pools_populate(big, long):
    def slow_progress(done, total):
        time.sleep(0.05)
        return True

    interrupted(lambda: lris.load_into({f"w{i}": np.empty(16 << 20, np.float32)
                                        for i in range(32)}, long))
    mine = {f"w{i}": np.zeros((512, 1024), np.float32) for i in range(32)}
    interrupted(lambda: lris.load_into(mine, big, progress=slow_progress))
    assert lris.load_into(mine, big)["loaded"] == 32 and np.all(mine["w9"] == 9)
    with lris.HostPool(f"pytest-{os.getpid()}-interrupted", "80M") as pool:
        interrupted(lambda: pool.populate(big, progress=slow_progress))
        r = pool.populate(big)  # what the interrupted one left half filled is taken over
        assert r["present"] + r["loaded"] == 32
        assert np.all(np.from_dlpack(pool.find("w5")) == 5)


def test_failed_and_interrupted_loads_leave_nothing_behind(big):
    # nanobind reports, at the interpreter's exit, every instance of the module still alive:
    # none may be (an exception kept with a load would hold the frames it went through, and
    # through them the load and its block).
    run_without_leaks(f"""
import _thread, threading, time
import lris
path = {str(big)!r}
def fail(done, total):
    raise ValueError("from the callback")
for _ in range(2):
    try:
        lris.load(path, progress=fail)
    except ValueError:
        pass
p = lris._lris.load_start(path, device="cpu", progress=fail)
for _ in range(2):
    try:
        p.wait()
    except (ValueError, lris.Cancelled):
        pass
del p
p = lris._lris.load_start(path, device="cpu", progress=fail)
try:
    p.placed()
except ValueError:
    pass
del p
threading.Timer(0.05, _thread.interrupt_main).start()
try:
    lris.load(path, progress=lambda d, t: time.sleep(0.05) or True)
except KeyboardInterrupt:
    pass
lris._lris.load_start(path, device="cpu").placed()
""")


@pytest.mark.parametrize("work", ["load", "load_into", "load_start", "cache", "populate"])
def test_an_interpreter_ends_well_with_lris_working_in_a_daemon_thread(big, work):
    """A daemon thread in a load (with a slow progress callback), a pending load, or a loop of
    cache acquires when the interpreter ends: CPython ends such a thread as it takes the GIL
    back, which used to abort the process (std::terminate). Several times each: the moment
    the end comes varies."""
    code = f"""
import threading, time
import numpy as np
import lris
F = {str(big)!r}
def slow(done, total):
    time.sleep(0.02)
    return True
work = {work!r}
if work == "load":
    threading.Thread(target=lambda: lris.load(F, progress=slow), daemon=True).start()
elif work == "load_into":
    d = {{f"w{{i}}": np.empty((512, 1024), np.float32) for i in range(32)}}
    threading.Thread(target=lambda: lris.load_into(d, F, progress=slow), daemon=True).start()
elif work == "load_start":
    pending = lris._lris.load_start(F, progress=slow)
elif work == "cache":
    c = lris.Cache("cpu", budget="16M")
    ids = [c.add(f"u{{i}}", {{"w": np.ones(1 << 20, np.float32)}}) for i in range(8)]
    c.order(ids)
    def loop():
        while True:
            for u in ids:
                with c.acquire(u):
                    pass
    threading.Thread(target=loop, daemon=True).start()
else:
    lris.HostPool.drop("exit-test-{work}")
    pool = lris.HostPool("exit-test-{work}", "80M")
    threading.Thread(target=lambda: pool.populate(F, progress=slow), daemon=True).start()
time.sleep(0.15)
print("ending", flush=True)
"""
    try:
        for _ in range(4):
            out = run_python(code)
            assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
            assert "ending" in out.stdout
    finally:
        lris.HostPool.drop(f"exit-test-{work}")

