#!/usr/bin/env python3
"""Several processes using one model: one host copy in an lris.HostPool against a copy each.

usage: pool_share.py CHECKPOINT [--processes 4] [--device cuda:0] [--json FILE]
       [--modes pool,own]

pool: process 1 makes the pool (/dev/shm) and fills it from the files; then processes 2..N
start, attach, pin the pool's memory (timed apart) and copy every tensor to the GPU
(`HostPool.load`). own: every process loads the checkpoint into host memory of its own
(`lris.load(device="cpu")`), as serving stacks that each keep a host copy do. While all N
processes hold their data the parent reads /proc/meminfo: the host memory they take (the
growth of memory in use, MemTotal - MemFree - Buffers - Cached - SReclaimable + Shmem, which
counts shared memory and leaves out page cache that can be dropped; Shmem + Mlocked growth
beside it) as a ratio to the model's bytes. Each process
reports the bytes it read from storage (/proc/self/io read_bytes) and, in pool mode, its copy
to the GPU in GB/s against the pinned host -> device ceiling measured by torch in the same run.
Needs the lris module; the ceiling and pool mode's GPU copies need torch with CUDA.
"""
import argparse
import json
import os
import subprocess
import sys
import time


def meminfo():
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":")
            out[k] = int(v.split()[0]) * 1024
    return out


def used(m):
    """Host memory in use, page cache that can be dropped left out (shared memory counted)."""
    return (m["MemTotal"] - m["MemFree"] - m["Buffers"] - m["Cached"] - m["SReclaimable"]
            + m["Shmem"])


def read_bytes():
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    return 0


def child(a):
    import lris
    before = read_bytes()
    out = {"mode": a.mode}
    t = time.perf_counter()
    if a.mode == "pool":
        pool = lris.HostPool.of(a.pool, a.checkpoint)
        out["open_seconds"] = time.perf_counter() - t
        out["pool"] = pool.info()
        if a.device != "cpu":
            pin = pool.pin(a.device)
            out["pin"] = pin
            import torch
            torch.cuda.init()
            torch.zeros(1, device=a.device)
            torch.cuda.synchronize()
            t = time.perf_counter()
            tensors = pool.load(a.device)
            out["load_seconds"] = time.perf_counter() - t
            out["load_bytes"] = sum(x.nbytes for x in tensors.values())
            out["load_gbps"] = out["load_bytes"] / out["load_seconds"] / 1e9
        held = pool
    else:
        held = lris.load(a.checkpoint, device="cpu")
        out["open_seconds"] = time.perf_counter() - t
    out["read_bytes"] = read_bytes() - before
    print(json.dumps(out), flush=True)
    sys.stdin.read()  # holds its data until the parent closes our stdin
    del held


def ceiling_gbps(device):
    import torch
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from link import pinned_h2d_gbps
    return pinned_h2d_gbps(torch, torch.device(device))


def run_mode(a, mode, model_bytes):
    pool = f"share-{os.getpid()}"
    before = meminfo()
    procs, reports = [], []
    for k in range(a.processes):
        cmd = [sys.executable, __file__, a.checkpoint, "--child", "--mode", mode, "--pool", pool,
               "--device", a.device]
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(p)
        if k == 0 or mode == "own":  # the first fills the pool before the others attach
            reports.append(json.loads(p.stdout.readline()))
    for p in procs[len(reports):]:
        reports.append(json.loads(p.stdout.readline()))
    during = meminfo()
    for p in procs:
        p.stdin.close()
        p.wait()
    if mode == "pool":
        import lris
        lris.HostPool.drop(pool)
    taken = used(during) - used(before)
    pinned = (during["Shmem"] - before["Shmem"]) + (during["Mlocked"] - before["Mlocked"])
    return {"mode": mode, "processes": a.processes, "model_bytes": model_bytes,
            "host_bytes": taken, "host_ratio": taken / model_bytes,
            "shmem_mlocked_growth": pinned, "children": reports}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--modes", default="pool,own")
    ap.add_argument("--json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--pool", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a)
    import lris
    model_bytes = lris.inspect(a.checkpoint)["data_bytes"]
    result = {"checkpoint": a.checkpoint, "model_bytes": model_bytes, "runs": []}
    if a.device != "cpu":
        result["ceiling_gbps"] = ceiling_gbps(a.device)
    for mode in a.modes.split(","):
        r = run_mode(a, mode, model_bytes)
        result["runs"].append(r)
        print(f"{mode}: {a.processes} processes take {r['host_bytes'] / 1e9:.2f} GB of host "
              f"memory for a {model_bytes / 1e9:.2f} GB model: {r['host_ratio']:.3f}x", flush=True)
        for k, c in enumerate(r["children"]):
            line = f"  process {k + 1}: read {c['read_bytes'] / 1e9:.2f} GB from storage"
            if "load_gbps" in c:
                line += (f"; to {a.device} {c['load_gbps']:.2f} GB/s = "
                         f"{c['load_gbps'] / result['ceiling_gbps']:.3f} of the pinned ceiling "
                         f"{result['ceiling_gbps']:.2f}; pinned {c['pin']['pinned']} in "
                         f"{c['pin']['seconds']:.2f} s")
            print(line, flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
