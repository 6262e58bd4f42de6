#!/usr/bin/env python3
"""safetensors.torch.load_file(device="cuda") on a checkpoint of about SIZE_GIB GiB, cold (page
cache dropped before each load, as root) and warm: the peer figures for `lris bench --disk`.

usage: safetensors_load.py PATH [SIZE_GIB] [REPEATS]
Writes PATH (bf16 tensors of 256 MiB) unless it exists; prints one JSON line.
"""
import json
import os
import statistics
import sys
import time

import torch
from safetensors.torch import load_file, save_file


def drop_caches(path):
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)


def timed_load(path):
    torch.cuda.synchronize()
    t = time.perf_counter()
    tensors = load_file(path, device="cuda")
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    del tensors
    torch.cuda.empty_cache()
    return seconds


def main():
    path = sys.argv[1]
    size_gib = float(sys.argv[2]) if len(sys.argv) > 2 else 4
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    if not os.path.exists(path):
        n = int(size_gib * 4)  # tensors of 256 MiB
        gen = torch.Generator().manual_seed(0)
        tensors = {f"layer.{i}.weight": torch.randn(8192, 16384, generator=gen).to(torch.bfloat16)
                   for i in range(n)}
        save_file(tensors, path)
        del tensors
    size = os.path.getsize(path)
    cold, warm = [], []
    for _ in range(repeats):
        drop_caches(path)
        cold.append(timed_load(path))
    timed_load(path)  # warm the page cache
    for _ in range(repeats):
        warm.append(timed_load(path))
    print(json.dumps({"file": path, "bytes": size,
                      "cold_gbps": size / statistics.median(cold) / 1e9,
                      "warm_gbps": size / statistics.median(warm) / 1e9,
                      "cold_seconds": cold, "warm_seconds": warm}))


if __name__ == "__main__":
    main()
