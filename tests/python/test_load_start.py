"""lris._lris.load_start, behind lris.torch.load, and lris.load's waits, on the CPU through
NumPy, without torch: the block comes while the bytes are read, waits from several threads and
again, a Ctrl-C stops a load, a load dropped in its own progress callback, and nothing left
behind by failed or interrupted loads."""

import _thread
import os
import threading
import time

import numpy as np
import pytest

import lris

from checkpoints import many_chunks, run_python, run_without_leaks


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    return many_chunks(tmp_path_factory.mktemp("start") / "big.safetensors")


def test_the_block_comes_while_the_bytes_are_read(big):
    # Each progress call takes the GIL and sleeps: the reads are still going when placed()
    # returns, and every byte is there once wait() has.
    pending = lris._lris.load_start(big, device="cpu",
                                    progress=lambda done, total: time.sleep(0.01) or True)
    start = time.monotonic()
    block, entries, tensors = pending.placed()
    assert pending.finished_at is None
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


def test_wait_again_and_from_two_threads(big):
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

    pending = lris._lris.load_start(big, device="cpu", progress=slow)
    ended = []
    threads = [threading.Thread(target=lambda: ended.append(pending.wait())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert ended == [None, None]


def test_a_second_placed_does_not_wait_for_the_load(big):
    pending = lris._lris.load_start(big, device="cpu", progress=slow)
    pending.placed()
    start = time.monotonic()
    with pytest.raises(lris.InvalidArgument, match="taken already"):
        pending.placed()
    assert pending.finished_at is None and time.monotonic() - start < 0.2
    pending.cancel()
    with pytest.raises(lris.Cancelled):
        pending.wait()


def test_dropped_by_the_collector_inside_its_own_progress_callback(big):
    # A _PendingLoad in a reference cycle, collected while its load runs the progress callback
    # on one of its threads: the load is let go, not waited for there (which would never end).
    code = f"""
import gc, sys, time
import lris
gc.disable()
state = {{"calls": 0}}
def progress(done, total):
    state["calls"] += 1
    if state["calls"] == 2:
        gc.collect()
    time.sleep(0.005)
    return True
class Holder:
    pass
h = Holder()
h.me = h
h.pending = lris._lris.load_start({str(big)!r}, device="cpu", progress=progress)
del h
time.sleep(1.0)
print("calls", state["calls"], flush=True)
t = lris.load({str(big)!r}, device="cpu")
print("after", len(t), flush=True)
"""
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert "after 32" in out.stdout
    calls = int(out.stdout.split("calls ")[1].split()[0])
    assert 2 <= calls < 32  # cancelled soon after the collection


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


def test_ctrl_c_stops_lris_load(big):
    # A Ctrl-C (interrupt_main) while lris.load waits: the load stops at its next chunk and
    # KeyboardInterrupt comes at once, not at the load's end (32 chunks of 50 ms and more).
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


def test_ctrl_c_stops_load_into_and_a_pools_populate(big):
    # Each call would take 32 chunks of 50 ms and more.
    def slow_progress(done, total):
        time.sleep(0.05)
        return True

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

