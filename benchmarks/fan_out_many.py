#!/usr/bin/env python3
"""One read onto every GPU of the machine, measured against its ceiling, in one run.

  python3 benchmarks/fan_out_many.py LRIS CHECKPOINT [--gpus N] [--rounds 3] [--out DIR]
                                     [--size-gib 32] [--parts ceilings,routes,pool,tp,stream]
                                     [--kind cuda|host] [--install WHEELDIR]

A missing CHECKPOINT directory is written first (make_model() of peers/safetensors_load.py:
Llama-style layers with hidden size 4096, 2 GiB shards and an index). Then, with the page
cache warm (every file read once before), each part in turn, every load a fresh process:

  ceilings  `nvidia-smi topo -m`; `LRIS bench --sizes 1G --json` (the host's memory copy and
            read rates, and cuda:0's pinned -> device ceiling); torch's 1 GiB pinned copy to
            every GPU at once (the aggregate the links allow together). The fan-out ceiling
            is min(N x the pinned ceiling of one GPU, the host's memory read rate), and
            beside it the aggregate measured.
  routes    `LRIS load CHECKPOINT --devices cuda:0,...` with --route automatic, dma, peer and
            nccl (NCCL: the libnccl.so.2 of the torch wheel), --rounds each in rotated order,
            then once with --verify: GB/s read from storage, the storage bytes against the
            checkpoint's (1.00: read once), the route chosen and why.
  pool      the checkpoint in a host pool (`LRIS pool create`), then `LRIS load --pool NAME
            --devices ...` --rounds times: no file read.
  tp        --tp N onto the N GPUs from one process (each rank its slices only), N processes
            `LRIS load --device cuda:R --tp N --rank R` at once, and InstantTensor's
            distributed loader (safe_open with a process group: each rank reads 1/N and NCCL
            all-gathers, every rank holding every whole tensor), under torchrun with N
            processes; each timed from all processes ready to the last done.
  stream    two processes, each streaming the checkpoint's layers through an lris.Cache of a
            quarter of the layers' bytes on its own GPU, the units brought in from one host
            pool, at once and each alone: GB/s streamed per process against the pinned
            ceiling.

Everything lands in --out (results.json and the tools' own outputs); a part that fails is
recorded with its error and the next one runs. --install WHEELDIR installs instanttensor from
the wheels there first (the GPU machines have no internet).
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def run_json(cmd, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr.strip()[-2000:]}")
    return json.loads(p.stdout)


def checkpoint_bytes(path):
    return sum(os.path.getsize(f) for f in glob.glob(os.path.join(path, "*.safetensors")))


def warm(path):
    for f in sorted(glob.glob(os.path.join(path, "*.safetensors"))):
        with open(f, "rb") as h:
            while h.read(64 << 20):
                pass


def torch_nccl():
    """The libnccl.so.2 that the torch wheel ships, or None."""
    try:
        import nvidia.nccl
        for d in nvidia.nccl.__path__:
            for f in glob.glob(os.path.join(d, "lib", "libnccl.so*")):
                return f
    except ImportError:
        pass
    return None


def part_ceilings(a, n, out):
    r = {}
    r["topology"] = subprocess.run(["nvidia-smi", "topo", "-m"], capture_output=True,
                                   text=True).stdout
    with open(os.path.join(a.out, "topo.txt"), "w") as f:
        f.write(r["topology"])
    bench = run_json([a.lris, "bench", "--sizes", "1G", "--json"])
    with open(os.path.join(a.out, "bench.json"), "w") as f:
        json.dump(bench, f, indent=2)
    for table in bench.get("tables", []):
        for row in table.get("rows", []):
            if row["name"].startswith("memory read"):
                r["host_read_gbps"] = row["gbps"]
                r["host_copy_gbps"] = row["ceiling_gbps"]
    import torch
    sys.path.insert(0, os.path.join(HERE, "peers"))
    from link import pinned_h2d_gbps
    r["pinned_gbps_per_gpu"] = [pinned_h2d_gbps(torch, torch.device(f"cuda:{d}"))
                                for d in range(n)]
    # Every GPU at once: one pinned source each, copies started together.
    srcs = [torch.empty(1 << 30, dtype=torch.uint8).pin_memory() for _ in range(n)]
    dsts = [torch.empty(1 << 30, dtype=torch.uint8, device=f"cuda:{d}") for d in range(n)]
    rates = []
    for _ in range(7):
        for d in range(n):
            torch.cuda.synchronize(d)
        t = time.perf_counter()
        for d in range(n):
            with torch.cuda.device(d):
                dsts[d].copy_(srcs[d], non_blocking=True)
        for d in range(n):
            torch.cuda.synchronize(d)
        rates.append(n * (1 << 30) / (time.perf_counter() - t) / 1e9)
    r["pinned_gbps_all_at_once"] = statistics.median(rates[2:])
    one = statistics.median(r["pinned_gbps_per_gpu"])
    r["fan_out_ceiling_gbps"] = min(n * one, r.get("host_read_gbps", float("inf")))
    out["ceilings"] = r
    print(f"ceilings: pinned {one:.1f} GB/s per GPU, {r['pinned_gbps_all_at_once']:.1f} all at "
          f"once; host read {r.get('host_read_gbps', 0):.1f}; fan-out ceiling "
          f"{r['fan_out_ceiling_gbps']:.1f} GB/s", flush=True)


def devices_arg(a, n):
    return ",".join(f"{a.kind}:{d}" for d in range(n))


def part_routes(a, n, out):
    nccl = torch_nccl()
    routes = ["automatic", "dma", "peer", "nccl"]
    r = {"nccl_library": nccl, "rounds": {x: [] for x in routes}, "verify": {}}
    total = checkpoint_bytes(a.checkpoint)

    def cmd(route, extra=()):
        c = [a.lris, "load", a.checkpoint, "--devices", devices_arg(a, n), "--route", route,
             "--json", *extra]
        return c + (["--nccl", nccl] if nccl else [])

    for k in range(a.rounds):
        for route in routes[k % len(routes):] + routes[:k % len(routes)]:
            try:
                j = run_json(cmd(route))
            except RuntimeError as e:
                r["rounds"][route].append({"error": str(e)})
                continue
            r["rounds"][route].append({
                "gbps": j["gbps"], "seconds": j["seconds"], "route": j["route"],
                "route_reason": j.get("route_reason"), "nccl": j.get("nccl"),
                "nccl_init_seconds": j.get("nccl_init_seconds"),
                "storage_over_checkpoint": j["storage_bytes"] / total})
            print(f"round {k} {route:9s}: {j['gbps']:.2f} GB/s ({j['route']}: "
                  f"{j.get('route_reason', '')})", flush=True)
    for route in routes:
        try:
            j = run_json(cmd(route, ["--verify"]))
            r["verify"][route] = [d["verified"] for d in j["devices"]]
        except RuntimeError as e:
            r["verify"][route] = str(e)
    r["median_gbps"] = {x: statistics.median(v["gbps"] for v in r["rounds"][x] if "gbps" in v)
                        for x in routes if any("gbps" in v for v in r["rounds"][x])}
    out["routes"] = r


def part_pool(a, n, out):
    name = f"fan-out-many-{os.getpid()}"
    r = {"rounds": []}
    subprocess.run([a.lris, "pool", "create", name, a.checkpoint], check=True,
                   capture_output=True)
    try:
        for _ in range(a.rounds):
            j = run_json([a.lris, "load", "--pool", name, "--devices", devices_arg(a, n), "--json"])
            r["rounds"].append({"seconds": j["seconds"],
                                "gbps": j["file_bytes"] / j["seconds"] / 1e9})
            print(f"pool: {r['rounds'][-1]['gbps']:.2f} GB/s onto {n} GPUs", flush=True)
        j = run_json([a.lris, "load", "--pool", name, "--devices", devices_arg(a, n), "--verify",
                      "--json"])
        r["verify"] = [d["verified"] for d in j["devices"]]
    finally:
        subprocess.run([a.lris, "pool", "drop", name], capture_output=True)
    out["pool"] = r


IT_CHILD = r'''
import glob, json, os, sys, time
import torch, torch.distributed as dist
from instanttensor import safe_open
dist.init_process_group(backend="nccl")
rank = dist.get_rank()
torch.cuda.set_device(rank)
files = sorted(glob.glob(os.path.join(sys.argv[1], "*.safetensors")))
dist.barrier()
torch.cuda.synchronize()
t = time.perf_counter()
tensors = {}
with safe_open(files, framework="pt", device=rank, process_group=dist.GroupMember.WORLD) as f:
    for name, tensor in f.tensors():
        tensors[name] = tensor
torch.cuda.synchronize()
dist.barrier()
seconds = time.perf_counter() - t
if rank == 0:
    print(json.dumps({"seconds": seconds, "tensors": len(tensors),
                      "bytes": sum(x.numel() * x.element_size() for x in tensors.values())}))
'''


def part_tp(a, n, out):
    total = checkpoint_bytes(a.checkpoint)
    r = {"one_process": [], "process_per_gpu": [], "instanttensor": []}
    for _ in range(a.rounds):
        j = run_json([a.lris, "load", a.checkpoint, "--devices", devices_arg(a, n), "--tp", str(n),
                      "--json"])
        r["one_process"].append({"seconds": j["seconds"], "gbps": total / j["seconds"] / 1e9,
                                 "bytes_per_device": [d["bytes"] for d in j["devices"]],
                                 "storage_over_checkpoint": j["storage_bytes"] / total})
        t = time.perf_counter()
        procs = [subprocess.Popen([a.lris, "load", a.checkpoint, "--device", f"cuda:{d}",
                                   "--tp", str(n), "--rank", str(d), "--json"],
                                  stdout=subprocess.PIPE, text=True) for d in range(n)]
        ranks = [json.loads(p.communicate()[0]) for p in procs]
        wall = time.perf_counter() - t
        r["process_per_gpu"].append({"wall_seconds": wall,
                                     "slowest_load_seconds": max(x["seconds"] for x in ranks),
                                     "gbps": total / max(x["seconds"] for x in ranks) / 1e9,
                                     "io_bytes_over_checkpoint":
                                         sum(x["io_bytes"] for x in ranks) / total})
        child = os.path.join(a.out, "it_child.py")
        with open(child, "w") as f:
            f.write(IT_CHILD)
        try:
            j = run_json([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          f"--nproc_per_node={n}", child, a.checkpoint])
            r["instanttensor"].append({"seconds": j["seconds"], "gbps": total / j["seconds"] / 1e9})
        except RuntimeError as e:
            r["instanttensor"].append({"error": str(e)})
        print("tp: " + ", ".join(f"{k} {v[-1].get('gbps', 0):.2f} GB/s" for k, v in r.items()),
              flush=True)
    out["tp"] = r


STREAM_CHILD = r'''
import json, sys, time
import torch, lris
pool_name, device, passes = sys.argv[1], sys.argv[2], int(sys.argv[3])
pool = lris.HostPool(pool_name)
cache = lris.Cache(device, budget=int(sys.argv[4]))
ids = cache.add_pool(pool, r"model\.layers\.(\d+)\.")
cache.order(ids)
stream = torch.cuda.Stream(device)
times = []
for _ in range(passes + 1):
    torch.cuda.synchronize(device)
    t = time.perf_counter()
    for u in ids:
        lease = cache.acquire(u, stream=stream)
        lease.release()
    torch.cuda.synchronize(device)
    times.append(time.perf_counter() - t)
print(json.dumps({"pass_seconds": times[1:], "stats": cache.stats(),
                  "unit_bytes": sum(cache.unit_bytes(u) for u in ids)}))
'''


def part_stream(a, n, out):
    name = f"fan-out-stream-{os.getpid()}"
    child = os.path.join(a.out, "stream_child.py")
    with open(child, "w") as f:
        f.write(STREAM_CHILD)
    subprocess.run([a.lris, "pool", "create", name, a.checkpoint], check=True,
                   capture_output=True)
    budget = str(checkpoint_bytes(a.checkpoint) // 4)
    r = {"budget_bytes": int(budget)}
    try:
        def go(devices):
            procs = [subprocess.Popen([sys.executable, child, name, dev, "3", budget],
                                      stdout=subprocess.PIPE, text=True) for dev in devices]
            return [json.loads(p.communicate()[0]) for p in procs]
        gpus = ["cuda:0", "cuda:1"] if n >= 2 else ["cuda:0"]
        r["alone"] = go(gpus[:1])
        r["together"] = go(gpus)
        for k, v in (("alone", r["alone"]), ("together", r["together"])):
            for x in v:
                x["median_pass_seconds"] = statistics.median(x["pass_seconds"])
            print(f"stream {k}: " + ", ".join(f"{x['median_pass_seconds']:.3f} s/pass"
                                              for x in v), flush=True)
    finally:
        subprocess.run([a.lris, "pool", "drop", name], capture_output=True)
    out["stream"] = r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lris")
    ap.add_argument("checkpoint")
    ap.add_argument("--gpus", type=int)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size-gib", type=float, default=32)
    ap.add_argument("--out", default=".")
    ap.add_argument("--parts", default="ceilings,routes,pool,tp,stream")
    ap.add_argument("--install")
    ap.add_argument("--kind", default="cuda", help="host: the routes and pool parts on the host "
                                                   "backend's devices, to try the script")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    if a.install:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links",
                        a.install, "instanttensor==0.2.2"], check=False)
    if not os.path.exists(a.checkpoint):
        sys.path.insert(0, os.path.join(HERE, "peers"))
        from safetensors_load import make_model
        make_model(a.checkpoint, a.size_gib)
    n = a.gpus
    if n is None:
        import torch
        n = torch.cuda.device_count()
    out = {"gpus": n, "checkpoint": a.checkpoint, "checkpoint_bytes": checkpoint_bytes(a.checkpoint),
           "lris": a.lris, "errors": {}}
    warm(a.checkpoint)
    parts = {"ceilings": part_ceilings, "routes": part_routes, "pool": part_pool, "tp": part_tp,
             "stream": part_stream}
    for p in a.parts.split(","):
        t = time.perf_counter()
        try:
            parts[p](a, n, out)
        except Exception as e:  # recorded; the next part runs
            out["errors"][p] = f"{type(e).__name__}: {e}"
            print(f"{p}: failed: {e}", flush=True)
        out.setdefault("part_seconds", {})[p] = time.perf_counter() - t
        with open(os.path.join(a.out, "results.json"), "w") as f:
            json.dump(out, f, indent=2)
    print(json.dumps({k: v for k, v in out.items() if k != "ceilings"}, indent=2)[:4000])


if __name__ == "__main__":
    main()
