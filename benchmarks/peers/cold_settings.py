#!/usr/bin/env python3
"""`lris load`'s cold read settings against the raw reads of the same files, on one disk.

usage: cold_settings.py DIR --lris PATH [--device cuda:0] [--settings NAME,NAME,...]
                        [--rounds 5] [--max-seconds 540] [--json FILE]

Each round runs every setting once, `lris load DIR --cold --json` in a fresh process (the page
cache dropped before the load, after the device started), and `lris load DIR --cold --raw`
once: the raw read methods (O_DIRECT io_uring at several depths and rings, buffered pread on
several threads, both at once on the two halves of each file) right after one another, which is
the ceiling of that round. The order is rotated by one each round, so a drift of the disk falls
on every setting alike.

Settings (--settings picks among them; default: all):
  default         no option: 8 workers of 16 MiB chunks of 1 MiB O_DIRECT reads (the io
                  engine's queue depth, 64, twice over)
  wN, wN-SIZE     --workers N [--chunk SIZE]
  both/K          a disk profile (LRIS_PROFILE, a file of its own) with method "both": every
                  K-th chunk read buffered, the others O_DIRECT
  buffered        a disk profile with method "buffered": every chunk buffered, the kernel
                  reading ahead
  host, host-...  the same, loaded into host memory (--device host)
  host-pN         --populate-threads N: N threads fault the host block's pages in ahead of
                  the reads (0: none; the default is one per 8 CPUs, 1 to 4)
  host-thp-defer, host-thp-never
                  transparent huge pages with defrag "defer" (no fault compacts memory) or
                  not at all, for that load only (root: /sys/kernel/mm/transparent_hugepage,
                  set back after it)

Prints, per setting, the median GB/s and the per-round ratio to the round's best raw method and
to the one raw method best over the run ("/ method", which the best of several noisy methods in
one round does not pull upwards). Writes every load to --json (default DIR.cold_settings.json)
as it goes.
"""
import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from compare import rotated

DEFAULT_SETTINGS = ("default,w4,w16,w32,w8-64M,w16-8M,both/2,both/3,both/4,buffered,"
                    "host,host-both/2")
THP = "/sys/kernel/mm/transparent_hugepage"


def disk_key(directory):
    """The storage device as LRIS's profiles and broker name it."""
    st = os.stat(directory)
    return f"disk {os.major(st.st_dev)}:{os.minor(st.st_dev)}"


def setting_args(name, device, profile_dir, disk):
    """(arguments, environment, THP settings) of `lris load` for a setting's name."""
    args, env, thp = [], {}, {}
    if name.startswith("host"):
        device, name = "host", name[len("host"):].lstrip("-") or "default"
    args += ["--device", device]
    if name == "default":
        pass
    elif name.startswith("p") and name[1:].isdigit():
        args += ["--populate-threads", name[1:]]
    elif name == "thp-defer":
        thp = {"defrag": "defer"}
    elif name == "thp-never":
        thp = {"enabled": "never"}
    elif name.startswith("w"):
        workers, _, chunk = name[1:].partition("-")
        args += ["--workers", str(int(workers))]
        if chunk:
            args += ["--chunk", chunk]
    elif name.startswith("both/") or name == "buffered":
        entry = {"method": "buffered"} if name == "buffered" else {
            "method": "both", "buffered_every": int(name.split("/")[1])}
        path = os.path.join(profile_dir, name.replace("/", "-") + ".json")
        with open(path, "w") as f:
            json.dump({disk: entry}, f)
        env["LRIS_PROFILE"] = path
    else:
        raise SystemExit(f"cold_settings.py: unknown setting {name!r}")
    return args, env, thp


@contextlib.contextmanager
def thp_set(settings):
    """/sys/kernel/mm/transparent_hugepage/* as `settings` says, set back afterwards."""
    before = {}
    try:
        for k, v in settings.items():
            with open(os.path.join(THP, k)) as f:
                before[k] = f.read().split("[")[1].split("]")[0]
            with open(os.path.join(THP, k), "w") as f:
                f.write(v)
        yield
    finally:
        for k, v in before.items():
            with open(os.path.join(THP, k), "w") as f:
                f.write(v)


def run_lris(lris, directory, args, env, timeout):
    p = subprocess.run([lris, "load", directory, "--cold", "--json"] + args, capture_output=True,
                       text=True, timeout=timeout, env={**os.environ, **env})
    if p.returncode != 0:
        raise RuntimeError(p.stderr.strip()[-2000:] or f"exit status {p.returncode}")
    return json.loads(p.stdout)


def summarize(rows, names):
    raw = {}  # method -> {round: GB/s}
    for r in rows:
        for m, rates in r.get("raw_methods", {}).items():
            raw.setdefault(m, {})[r["round"]] = rates[0]
    if not raw:
        print("no raw reads finished")
        return
    rounds = sorted({r for v in raw.values() for r in v})
    best_round = {r: max(v[r] for v in raw.values() if r in v) for r in rounds}
    method = max(raw, key=lambda m: statistics.median(raw[m].values()))
    print(f"\n{len(rounds)} round(s); the raw method best over the run: {method}, median "
          f"{statistics.median(raw[method].values()):.3f} GB/s")
    print(f"{'setting':14s} {'GB/s':>6s}  {'/ raw':>5s}  {'/ method':>8s}  per round / method")
    for n in names + ["lris --raw's own load"]:
        xs = [r for r in rows if r["setting"] == n and "gbps" in r and r["round"] in best_round]
        if not xs:
            continue
        to_raw = [x["gbps"] / best_round[x["round"]] for x in xs]
        to_method = [x["gbps"] / raw[method][x["round"]] for x in xs if x["round"] in raw[method]]
        print(f"{n:14s} {statistics.median(x['gbps'] for x in xs):6.3f}  "
              f"{statistics.median(to_raw):5.2f}  {statistics.median(to_method):8.2f}  "
              + " ".join(f"{q:.2f}" for q in to_method))
    for m, v in raw.items():
        print(f"raw, {m}: median {statistics.median(v.values()):.3f}, per round / best of the "
              "round " + " ".join(f"{v[r] / best_round[r]:.2f}" for r in rounds if r in v))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir")
    p.add_argument("--lris", default="lris")
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--settings", default=DEFAULT_SETTINGS)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--max-seconds", type=float, default=0, help="start no load after this")
    p.add_argument("--timeout", type=float, default=300, help="seconds per process")
    p.add_argument("--json")
    a = p.parse_args()
    names = [s for s in a.settings.split(",") if s]
    out = a.json or os.path.abspath(a.dir).rstrip("/") + ".cold_settings.json"
    profiles = tempfile.mkdtemp(prefix="lris-cold-settings-")
    disk = disk_key(a.dir)
    runs = {n: setting_args(n, a.device, profiles, disk) for n in names}  # refuses bad names first
    runs["raw"] = (["--device", a.device, "--raw"], {}, {})
    order = names + ["raw"]
    rows, start = [], time.monotonic()
    for r in range(a.rounds):
        for n in rotated(order, r):
            if a.max_seconds and time.monotonic() - start > a.max_seconds:
                print("stopped: --max-seconds")
                summarize(rows, names)
                return
            args, env, thp = runs[n]
            row = {"round": r, "setting": "lris --raw's own load" if n == "raw" else n,
                   "args": args, "env": env, "thp": thp}
            try:
                with thp_set(thp):
                    j = run_lris(a.lris, a.dir, args, env, a.timeout)
                row.update(gbps=j["gbps"], workers=j["workers"], chunk_bytes=j["chunk_bytes"],
                           io=j["io"], populate_threads=j.get("populate_threads"))
                if n == "raw":
                    row["raw_methods"] = j["raw_methods"]
                print(f"round {r} {n:12s} {j['gbps']:6.3f} GB/s  {j['io']}", flush=True)
            except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError, OSError) as e:
                row["error"] = str(e)
                print(f"round {r} {n:12s} FAILED: {e}", file=sys.stderr, flush=True)
            rows.append(row)
            with open(out, "w") as f:
                json.dump({"dir": a.dir, "disk": disk, "lris": a.lris, "rows": rows}, f, indent=1)
    summarize(rows, names)


if __name__ == "__main__":
    main()
