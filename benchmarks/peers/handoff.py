#!/usr/bin/env python3
"""The hand-off of loaded tensors to PyTorch: microseconds per tensor of torch.from_dlpack over
every tensor lris.load gave, in the first pass of a process and in later passes, beside the same
call on PyTorch's own CUDA tensors (the consumer's floor: what torch.from_dlpack costs whatever
the producer), and of the views lris.torch.load makes (the load's block imported once, a view
per tensor; a load makes them while it reads) on the same load.

  python3 benchmarks/peers/handoff.py CHECKPOINT [--passes 5]

Prints one JSON object. Needs torch with CUDA and the lris module.
"""
import argparse
import json
import time

import torch

import lris


def per_tensor_us(objects, passes):
    """Microseconds per object of torch.from_dlpack: the first pass, then the best later one."""
    times = []
    for _ in range(passes):
        start = time.perf_counter()
        for o in objects:
            torch.from_dlpack(o)
        times.append((time.perf_counter() - start) / len(objects) * 1e6)
    return times[0], min(times[1:]) if len(times) > 1 else times[0]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--passes", type=int, default=5)
    a = p.parse_args()
    torch.cuda.init()
    torch.zeros(1, device="cuda:0")
    torch.cuda.synchronize()
    loaded = list(lris.load(a.checkpoint, device="cuda:0").values())
    first, later = per_tensor_us(loaded, a.passes)
    from lris.torch import _as_torch
    pending = lris._lris.load_start(a.checkpoint, device="cuda:0")
    block, entries, _ = pending.placed()
    pending.wait()
    views = []
    for _ in range(a.passes):
        start = time.perf_counter()
        _as_torch(block, entries)
        views.append((time.perf_counter() - start) / len(entries) * 1e6)
    own = [torch.empty(t.shape, dtype=getattr(torch, t.dtype), device="cuda:0") for t in loaded]
    own_first, own_later = per_tensor_us(own, a.passes)
    print(json.dumps({"tensors": len(loaded), "torch": torch.__version__,
                      "lris_first_us": first, "lris_later_us": later,
                      "lris_torch_views_first_us": views[0], "lris_torch_views_later_us": min(views[1:]),
                      "torch_own_first_us": own_first, "torch_own_later_us": own_later}, indent=1))


if __name__ == "__main__":
    main()
