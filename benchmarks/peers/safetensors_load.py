#!/usr/bin/env python3
"""safetensors.torch.load_file(device="cuda") on a checkpoint, cold (page cache dropped before
each load, as root) and warm: the peer figures for `lris load` and `lris bench --disk`.

usage: safetensors_load.py PATH [SIZE_GIB] [REPEATS]
PATH is a .safetensors file or a model directory. A missing file is written as bf16 tensors of
256 MiB; a missing directory (PATH ending in /) as a sharded checkpoint shaped like a decoder
model (attention and MLP weights, small norms, an index), about SIZE_GIB GiB in shards of at
most 2 GiB. A directory is loaded the way transformers does: load_file per shard of its index.
Prints one JSON line.
"""
import json
import os
import statistics
import sys
import time

import torch
from safetensors.torch import load_file, save_file


def shard_files(path):
    if not os.path.isdir(path):
        return [path]
    with open(os.path.join(path, "model.safetensors.index.json")) as f:
        names = sorted(set(json.load(f)["weight_map"].values()))
    return [os.path.join(path, n) for n in names]


def drop_caches(files):
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass
    for p in files:
        fd = os.open(p, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def timed_load(files):
    torch.cuda.synchronize()
    t = time.perf_counter()
    tensors = {}
    for p in files:
        tensors.update(load_file(p, device="cuda"))
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    del tensors
    torch.cuda.empty_cache()
    return seconds


def random_bf16(*shape):
    return torch.randn(*shape, device="cuda").to(torch.bfloat16).cpu()


def make_model(path, size_gib):
    # Layers of a decoder model with hidden size 4096: about 0.4 GiB each in bf16.
    h, ffn = 4096, 11008
    layer = {"self_attn.q_proj.weight": (h, h), "self_attn.k_proj.weight": (h, h),
             "self_attn.v_proj.weight": (h, h), "self_attn.o_proj.weight": (h, h),
             "mlp.gate_proj.weight": (ffn, h), "mlp.up_proj.weight": (ffn, h),
             "mlp.down_proj.weight": (h, ffn), "input_layernorm.weight": (h,),
             "post_attention_layernorm.weight": (h,)}
    layer_bytes = sum(2 * (a[0] * (a[1] if len(a) > 1 else 1)) for a in layer.values())
    layers = max(1, int(size_gib * 2**30 / layer_bytes))
    os.makedirs(path, exist_ok=True)
    shards, current, current_bytes = [], {}, 0
    for i in range(layers):
        for name, shape in layer.items():
            current[f"model.layers.{i}.{name}"] = random_bf16(*shape)
            current_bytes += current[f"model.layers.{i}.{name}"].numel() * 2
        if current_bytes >= 2 * 2**30 or i == layers - 1:
            shards.append(current)
            current, current_bytes = {}, 0
    shards[-1]["model.norm.weight"] = random_bf16(h)
    weight_map, total = {}, 0
    for k, tensors in enumerate(shards):
        name = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(tensors, os.path.join(path, name), metadata={"format": "pt"})
        for t, v in tensors.items():
            weight_map[t] = name
            total += v.numel() * 2
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def main():
    path = sys.argv[1]
    size_gib = float(sys.argv[2]) if len(sys.argv) > 2 else 4
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    if not os.path.exists(path):
        if path.endswith("/"):
            make_model(path, size_gib)
        else:
            n = int(size_gib * 4)  # tensors of 256 MiB
            gen = torch.Generator().manual_seed(0)
            tensors = {f"layer.{i}.weight": torch.randn(8192, 16384, generator=gen).to(torch.bfloat16)
                       for i in range(n)}
            save_file(tensors, path)
            del tensors
    files = shard_files(path)
    size = sum(os.path.getsize(p) for p in files)
    if repeats == 0:
        print(json.dumps({"file": path, "bytes": size, "files": len(files)}))
        return
    cold, warm = [], []
    for _ in range(repeats):
        drop_caches(files)
        cold.append(timed_load(files))
    timed_load(files)  # warm the page cache
    for _ in range(repeats):
        warm.append(timed_load(files))
    print(json.dumps({"file": path, "bytes": size, "files": len(files),
                      "cold_gbps": size / statistics.median(cold) / 1e9,
                      "warm_gbps": size / statistics.median(warm) / 1e9,
                      "cold_seconds": cold, "warm_seconds": warm}))


if __name__ == "__main__":
    main()
