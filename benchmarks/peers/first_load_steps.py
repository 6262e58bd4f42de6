#!/usr/bin/env python3
"""Where a fresh process's first lris.torch.load spends its time, step by step.

  python3 benchmarks/peers/first_load_steps.py CHECKPOINT whole|split

whole: torch's CUDA start, `import lris`, then the load (until its block is placed, the views
made while it reads, the wait for its last byte), as compare.py's lris-python times them. split: the same with the default context, the checkpoint's headers
(lris.inspect) and the device's pipeline (a one-element lris.copy) made first, each timed
apart, so that the load's own time is what remains. Prints one JSON object of seconds.
"""
import json
import sys
import time

steps = {}
clock = time.perf_counter()


def mark(name):
    global clock
    now = time.perf_counter()
    steps[name] = now - clock
    clock = now


import torch  # noqa: E402

torch.cuda.init()
torch.zeros(1, device="cuda:0")
torch.cuda.synchronize()
mark("torch_cuda_start")
import lris  # noqa: E402
import lris.torch  # noqa: E402

mark("import_lris")
if sys.argv[2] == "split":
    lris.broker_status()
    mark("default_context")
    lris.inspect(sys.argv[1])
    mark("inspect")
    lris.copy(torch.empty(1, device="cuda:0"), torch.ones(1))
    mark("pipeline_via_copy")
loading = clock
pending = lris._lris.load_start(sys.argv[1], device="cuda:0")
block, entries, tensors = pending.placed()
mark("placed")
out, later = lris.torch._as_torch(block, entries)
mark("views")  # while the reads run
pending.wait()
mark("wait")
steps["handoff_after_load"] = time.monotonic() - pending.finished_at
torch.cuda.synchronize()
steps["gbps"] = block.nbytes / (clock - loading) / 1e9
print(json.dumps(steps))
