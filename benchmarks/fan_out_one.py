#!/usr/bin/env python3
"""A fan-out of one against a plain load, and one rank's slice reads, fresh processes each.

  python3 benchmarks/fan_out_one.py LRIS CHECKPOINT [--device cuda:0] [--rounds 5] [--cold]
                                    [--tp 2] [--tp-plan FILE] [--route dma] [--json OUT]

Each round runs `LRIS load CHECKPOINT --device D` and `LRIS load CHECKPOINT --devices D` in
fresh processes, in turn (which goes first alternates), and takes the ratio of their times:
a fan-out onto one device should cost no more than the plain load (ratio >= 1 means the
fan-out was as fast or faster). Then, for each tensor-parallel rank R of --tp, `LRIS load
CHECKPOINT --device D --tp N --rank R` reads that rank's slices only: the bytes its io engine
read against the bytes of its tensors (1.0: only its bytes moved), and the bytes all ranks read
against the checkpoint's (the split tensors once, the replicated ones once per rank). Without
--tp-plan, the command's default plan (llama's) splits the tensors.
"""
import argparse
import json
import statistics
import subprocess
import sys


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lris")
    ap.add_argument("checkpoint")
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--tp", type=int, default=2)
    ap.add_argument("--tp-plan")
    ap.add_argument("--route", help="the fan-out's --route (dma: the chunked route, even "
                                    "onto one device)")
    ap.add_argument("--json")
    a = ap.parse_args()
    cold = ["--cold"] if a.cold else []
    plain_cmd = [a.lris, "load", a.checkpoint, "--device", a.device, "--json"] + cold
    fan_cmd = [a.lris, "load", a.checkpoint, "--devices", a.device, "--json"] + cold
    if a.route:
        fan_cmd += ["--route", a.route]
    rounds = []
    for r in range(a.rounds):
        order = [("plain", plain_cmd), ("fan_out", fan_cmd)]
        if r % 2:
            order.reverse()
        got = {name: run(cmd) for name, cmd in order}
        plain_s, fan_s = got["plain"]["seconds"], got["fan_out"]["seconds"]
        rounds.append({"plain_seconds": plain_s, "fan_out_seconds": fan_s,
                       "plain_gbps": got["plain"]["gbps"], "fan_out_gbps": got["fan_out"]["gbps"],
                       "storage_bytes": got["fan_out"]["storage_bytes"],
                       "file_bytes": got["plain"]["file_bytes"], "ratio": plain_s / fan_s})
        print(f"round {r}: plain {plain_s:.3f} s, fan-out of one {fan_s:.3f} s, "
              f"ratio {plain_s / fan_s:.3f}", file=sys.stderr)
    plan = ["--tp-plan", a.tp_plan] if a.tp_plan else []
    ranks = []
    for rank in range(a.tp):
        j = run([a.lris, "load", a.checkpoint, "--device", a.device, "--tp", str(a.tp),
                 "--rank", str(rank), "--json"] + plan + cold)
        ranks.append({"rank": rank, "io_bytes": j["io_bytes"], "memory_bytes": j["memory_bytes"],
                      "seconds": j["seconds"], "gbps": j["gbps"],
                      "moved_per_needed": j["io_bytes"] / max(1, j["memory_bytes"])})
        print(f"rank {rank}: read {j['io_bytes']} bytes for {j['memory_bytes']} of its tensors",
              file=sys.stderr)
    whole = rounds[0]["file_bytes"] if rounds else 0
    out = {"device": a.device, "cold": a.cold, "route": a.route or "automatic", "rounds": rounds,
           "ratio_median": statistics.median(x["ratio"] for x in rounds) if rounds else None,
           "ranks": ranks, "tp": a.tp,
           "rank_bytes_over_checkpoint": sum(x["io_bytes"] for x in ranks) / max(1, whole)}
    text = json.dumps(out, indent=2)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
