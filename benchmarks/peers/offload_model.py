#!/usr/bin/env python3
"""A real diffusers transformer bigger than the GPU memory it is given, run by each offloader.

usage: offload_model.py [--model flux] [--size 1024] [--warmups 2] [--passes 3] [--budgets min,12G]
                        [--contenders none,lris,diffusers,accelerate,aimdo] [--json FILE]
                        [--install WHEELDIR]

The model is built from its published config (Flux.1's FluxTransformer2DModel defaults: 19
double and 38 single blocks, 11.9 B parameters, 23.8 GB in bf16) with random bf16 weights, the same in every process (a 64 Mi-value
random table, each tensor filled from its own offset into it), and run on one image of
--size pixels square (Flux: 4096 image and 512 text tokens).

Each contender runs in a process of its own, from the model in host memory: --warmups passes
(the first pass of a process is slower for every contender, the one without offloading too),
then --passes timed passes (torch.cuda.synchronize around each); a pass's time is the median
of them. Contenders:
  none        the whole model on the GPU: the reference output and the compute time C;
  lris        lris.torch.stream over the transformer blocks through an lris.Cache of each
              budget (min: two of the largest block, the one running and the next coming
              in, as diffusers holds them), the rest of the model on the GPU;
  diffusers   apply_group_offloading, block level, one block per group, use_stream=True;
  accelerate  accelerate's cpu_offload;
  aimdo       comfy-aimdo's dynamic VRAM as ComfyUI's ops drive it, block by block: every
              weight a range of one VBAR whose resident bytes are held to the budget, faulted
              before its block runs and copied from pinned memory (one block ahead, on an
              offload stream) only where the fault says it lost its pages, unpinned after.
              The GPU's memory beyond the budget and what aimdo's own warm-up pass reserved
              (temporaries where the VBAR refused a block, activations) is held by torch.
Every output is compared with the reference bit for bit. The device peak is torch's
max_memory_allocated plus lris's cache (its whole budget) or aimdo's resident VBAR bytes.
The ceiling B is a 1 GiB pinned host-to-device copy measured by the reference process; X is
the transformer blocks' bytes / B, the time to stream them once.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def parse_size(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def build(torch, name):
    """The model from its config on the host, its weights random and the same in every run."""
    import diffusers
    if name != "flux":
        raise SystemExit(f"unknown model {name}")
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # made in bf16 (on no device), not in fp32
    try:
        with torch.device("meta"):
            model = diffusers.FluxTransformer2DModel()
    finally:
        torch.set_default_dtype(default)
    model = model.to_empty(device="cpu").eval()
    g = torch.Generator().manual_seed(0)
    table = (torch.randn(1 << 26, generator=g) * 0.02).to(torch.bfloat16)
    for k, (n, t) in enumerate(list(model.named_parameters()) + list(model.named_buffers())):
        flat = t.data.view(-1)
        if not t.is_floating_point():
            continue
        start = (k * 7919) % (table.numel() // 2)
        done = 0
        while done < flat.numel():
            n_ = min(flat.numel() - done, table.numel() - start)
            flat[done:done + n_].copy_(table[start:start + n_])
            done += n_
            start = 0
    blocks = (list(model.transformer_blocks) + list(getattr(model, "single_transformer_blocks", [])))
    return model, blocks


def inputs(torch, name, size, dev):
    g = torch.Generator(device=dev).manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g, device=dev, dtype=torch.bfloat16)
    if name == "flux":
        h = w = size // 16
        img_ids = torch.zeros(h, w, 3, device=dev)
        img_ids[..., 1] = torch.arange(h, device=dev)[:, None]
        img_ids[..., 2] = torch.arange(w, device=dev)[None, :]
        return dict(hidden_states=r(1, h * w, 64), encoder_hidden_states=r(1, 512, 4096),
                    pooled_projections=r(1, 768),
                    timestep=torch.tensor([0.5], device=dev, dtype=torch.bfloat16),
                    img_ids=img_ids.view(-1, 3), txt_ids=torch.zeros(512, 3, device=dev),
                    return_dict=False)


class AimdoBlocks:
    """comfy-aimdo's VBAR driven block by block with hooks, as ComfyUI's ops drive it."""

    def __init__(self, torch, blocks, dev, limit=0):
        from comfy_aimdo.model_vbar import ModelVBAR
        self.torch, self.dev, self.blocks = torch, dev, blocks
        self.tensors = []  # per block: (module, attr, is_param, pinned host copy)
        for b in blocks:
            entries = []
            for mod in b.modules():
                for attr, p in list(mod._parameters.items()):
                    if p is not None:
                        entries.append((mod, attr, True, p.data.pin_memory()))
                        p.data = torch.empty(0, dtype=p.dtype)
                for attr, t in list(mod._buffers.items()):
                    if t is not None:
                        entries.append((mod, attr, False, t.pin_memory()))
            self.tensors.append(entries)
        total = sum((e[3].nbytes + 511) & ~511 for es in self.tensors for e in es)
        self.vbar = ModelVBAR(total + (64 << 20), dev.index)
        self.limit = limit
        self.block_bytes = [sum(e[3].nbytes for e in es) for es in self.tensors]
        self.shed = 0
        if limit:  # the blocks' budget: without it the VBAR takes all free memory, and the
            # activations then find none (CUDA out of memory on the first forward)
            self.vbar.set_watermark_limit(limit)
        self.allocs = [[self.vbar.alloc(max(e[3].nbytes, 1)) for e in es] for es in self.tensors]
        self.signatures = [[None] * len(es) for es in self.tensors]
        self.stream = torch.cuda.Stream(dev)
        self.ahead = {}
        self.copied = self.fallbacks = self.peak_loaded = 0
        for i, b in enumerate(blocks):
            b.register_forward_pre_hook(lambda m, a, i=i: self.enter(i))
            b.register_forward_hook(lambda m, a, o, i=i: self.exit(i))

    def fetch(self, i):
        from comfy_aimdo.model_vbar import vbar_fault, vbar_signature_compare
        from comfy_aimdo.torch import aimdo_to_tensor
        torch = self.torch
        views = []
        # The watermark limit does not bound what is resident (every block stays once faulted
        # while the GPU has room), so the budget is kept here, as ComfyUI keeps its own: pages
        # of blocks not pinned are shed (vbar.free_memory) before this block comes in.
        if self.limit:
            over = self.vbar.loaded_size() + self.block_bytes[i] - self.limit
            if over > 0:
                self.shed += max(self.vbar.free_memory(over), 0)
        with torch.cuda.stream(self.stream):
            for k, (alloc, e) in enumerate(zip(self.allocs[i], self.tensors[i])):
                w = e[3]
                signature = vbar_fault(alloc)
                if signature is not None and vbar_signature_compare(signature, self.signatures[i][k]):
                    dst = aimdo_to_tensor(alloc, self.dev)
                else:
                    if signature is None:  # the VBAR refused: a temporary, as ComfyUI casts
                        self.fallbacks += 1
                        dst = torch.empty(max(w.nbytes, 1), dtype=torch.uint8, device=self.dev)
                        dst.record_stream(torch.cuda.current_stream(self.dev))
                    else:
                        dst = aimdo_to_tensor(alloc, self.dev)
                    dst[:w.nbytes].copy_(w.reshape(-1).view(torch.uint8), non_blocking=True)
                    self.copied += w.nbytes
                    self.signatures[i][k] = signature
                views.append(dst[:w.nbytes].view(w.dtype).view(w.shape))
            ready = torch.cuda.Event()
            ready.record(self.stream)
        return views, ready

    def enter(self, i):
        torch = self.torch
        current = torch.cuda.current_stream(self.dev)
        self.stream.wait_stream(current)  # pages it may reuse are no longer read
        views, ready = self.ahead.pop(i, None) or self.fetch(i)
        if i + 1 < len(self.blocks):
            self.ahead[i + 1] = self.fetch(i + 1)
        current.wait_event(ready)
        for (mod, attr, is_param, _), v in zip(self.tensors[i], views):
            if is_param:
                mod._parameters[attr].data = v
            else:
                mod._buffers[attr] = v

    def exit(self, i):
        from comfy_aimdo.model_vbar import vbar_unpin
        self.peak_loaded = max(self.peak_loaded, self.vbar.loaded_size())
        for alloc in self.allocs[i]:
            vbar_unpin(alloc)
        # The block's weights let go once it ran, as ComfyUI's casts are: a temporary made
        # where the VBAR refused goes back to torch's cache (once the stream it was recorded
        # on passes this point), instead of staying on the device until the next pass.
        for mod, attr, is_param, w in self.tensors[i]:
            empty = self.torch.empty(0, dtype=w.dtype, device=self.dev)
            if is_param:
                mod._parameters[attr].data = empty
            else:
                mod._buffers[attr] = empty


def child(a):
    if a.child == "aimdo":  # before torch is imported, as ComfyUI's main.py does
        import comfy_aimdo.control
        if not comfy_aimdo.control.init():
            raise SystemExit("comfy-aimdo: init failed")
    import torch
    dev = torch.device("cuda:0")
    if a.child == "aimdo":
        torch.cuda.init()
        if not comfy_aimdo.control.init_device(0):
            raise SystemExit("comfy-aimdo: init_device(0) failed")
    t0 = time.perf_counter()
    model, blocks = build(torch, a.model)
    build_seconds = time.perf_counter() - t0
    block_bytes = [sum(p.numel() * p.element_size() for p in b.parameters()) for b in blocks]
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    out = {"contender": a.child, "model": a.model, "blocks": len(blocks),
           "block_bytes": sum(block_bytes), "largest_block_bytes": max(block_bytes),
           "model_bytes": model_bytes, "build_seconds": build_seconds}
    extra_peak = lambda: 0
    t0 = time.perf_counter()
    if a.child == "none":
        model.to(dev)
    elif a.child == "lris":
        import lris
        import lris.torch
        # min: the block running and the next one coming in, as diffusers' group offloading
        # holds them.
        least = a.budget == "min"
        budget = 2 * max(block_bytes) + (64 << 20) if least else parse_size(a.budget)
        cache = lris.Cache("cuda:0", budget=budget, lookahead=max(block_bytes) if least else None)
        streamed = lris.torch.stream(blocks, cache)
        model.to(dev)
        out["contender"] = f"lris {budget / 1e9:.2f} GB"
        out["budget_bytes"] = budget
        extra_peak = lambda: cache.budget
    elif a.child == "diffusers":
        from diffusers.hooks import apply_group_offloading
        apply_group_offloading(model, onload_device=dev, offload_device=torch.device("cpu"),
                               offload_type="block_level", num_blocks_per_group=1,
                               use_stream=True)
    elif a.child == "accelerate":
        from accelerate import cpu_offload
        cpu_offload(model, execution_device=dev)
    elif a.child == "aimdo":
        budget = parse_size(a.budget)
        aimdo = AimdoBlocks(torch, blocks, dev, limit=budget)
        model.to(dev)
        out["contender"] = f"aimdo {budget / 1e9:.2f} GB"
        out["budget_bytes"] = budget
        extra_peak = lambda: aimdo.peak_loaded
    else:
        raise SystemExit(f"unknown contender {a.child}")
    out["setup_seconds"] = time.perf_counter() - t0
    x = inputs(torch, a.model, a.size, dev)
    ballast = None
    with torch.no_grad():
        y = model(**x)[0]  # the first warm-up
        torch.cuda.synchronize()
        warmups = a.warmups - 1
        if a.child == "aimdo":
            # A GPU with `budget` bytes for the blocks beside the rest of the model and what
            # the pass needs: the rest of its free memory held by torch, sized from the
            # warm-up pass itself. The VBAR's resident pages stay within what the
            # ballast leaves (the block running and the one fetched stay pinned); the
            # temporaries made where it refuses a block, and the activations, are what torch
            # reserved in the warm-up beyond what it holds now. Two of the largest blocks and
            # 512 MiB are left on top (the peak reported counts what the VBAR held).
            grown = torch.cuda.max_memory_reserved(dev) - torch.cuda.memory_reserved(dev)
            out["aimdo_warmup_loaded_bytes"] = aimdo.vbar.loaded_size()
            free, _ = torch.cuda.mem_get_info(dev)
            spare = 2 * max(block_bytes) + (512 << 20)
            out["aimdo_warmup_torch_bytes"] = grown
            ballast = torch.empty(max(free - max(budget - aimdo.vbar.loaded_size(), 0) - grown
                                      - spare, 0), dtype=torch.uint8, device=dev)
            warmups = max(warmups, 1)  # at least one with the GPU's memory as it will be
        for _ in range(warmups):
            y = model(**x)[0]
            torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(dev)
        if a.child == "aimdo":
            # the timed passes' residency, copies and fallbacks, not the warm-ups'
            aimdo.peak_loaded = aimdo.copied = aimdo.fallbacks = aimdo.shed = 0
        base = torch.cuda.memory_allocated(dev) - (ballast.numel() if ballast is not None else 0)
        times = []
        for _ in range(a.passes):
            torch.cuda.synchronize()
            t = time.perf_counter()
            y = model(**x)[0]
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    out["pass_seconds"] = statistics.median(times)
    out["pass_seconds_mean"] = statistics.mean(times)
    out["pass_seconds_all"] = times
    peak = torch.cuda.max_memory_allocated(dev) - (ballast.numel() if ballast is not None else 0)

    out["peak_device_bytes"] = peak + extra_peak()
    if a.child == "none":
        out["activation_bytes"] = peak - base
        torch.save(y.cpu(), a.reference)
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from link import pinned_h2d_gbps
        out["ceiling_gbps"] = pinned_h2d_gbps(torch, dev)
    else:
        ref = torch.load(a.reference)
        got = y.cpu()
        out["identical"] = bool(torch.equal(got, ref))
        out["max_abs_diff"] = float((got.float() - ref.float()).abs().max())
    if a.child == "lris":
        out["cache"] = streamed.stats()
    if a.child == "aimdo":
        out["copied_bytes"] = aimdo.copied
        out["fallbacks"] = aimdo.fallbacks
        out["shed_bytes"] = aimdo.shed
    with open(a.out, "w") as f:
        json.dump(out, f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="flux")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--warmups", type=int, default=2)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--budgets", default="min,12G", help="of lris (and aimdo, but min)")
    ap.add_argument("--contenders", default="none,lris,diffusers,accelerate,aimdo")
    ap.add_argument("--json")
    ap.add_argument("--install")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--budget", help=argparse.SUPPRESS)
    ap.add_argument("--reference", default="/tmp/offload_model_reference.pt")
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a)
    if a.install:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index",
                        "--find-links", a.install, "diffusers==0.42.1", "comfy-aimdo==0.6.0"],
                       check=True)
    runs = []
    contenders = a.contenders.split(",")
    if contenders[0] != "none":
        raise SystemExit("--contenders must begin with none (the reference)")
    for name in contenders:
        budgets = [None]
        if name == "lris":
            budgets = a.budgets.split(",")
        elif name == "aimdo":
            budgets = [b for b in a.budgets.split(",") if b != "min"]
        for budget in budgets:
            out = f"/tmp/offload_model_{os.getpid()}.json"
            cmd = [sys.executable, __file__, "--child", name, "--model", a.model, "--size",
                   str(a.size), "--warmups", str(max(a.warmups, 1)), "--passes", str(a.passes),
                   "--reference", a.reference, "--out", out]
            if budget:
                cmd += ["--budget", budget]
            t = time.perf_counter()
            p = subprocess.run(cmd)
            if p.returncode != 0:
                print(f"{name} {budget or ''}: failed ({p.returncode})", flush=True)
                continue
            with open(out) as f:
                r = json.load(f)
            r["process_seconds"] = time.perf_counter() - t
            if name == "none":
                ceiling, compute = r["ceiling_gbps"], r["pass_seconds"]
            r["transfer_bound_seconds"] = r["block_bytes"] / (ceiling * 1e9)
            r["compute_seconds"] = compute
            runs.append(r)
            print(f"{r['contender']:16s} pass {r['pass_seconds']:.4f} s (" +
                  " ".join(f"{t:.3f}" for t in r["pass_seconds_all"]) + "); device peak "
                  f"{r['peak_device_bytes'] / 1e9:6.2f} GB; identical "
                  f"{r.get('identical', 'reference')}; setup {r['setup_seconds']:.1f} s",
                  flush=True)
    base = {r["contender"]: r["pass_seconds"] for r in runs}
    for r in runs:
        for peer in ("diffusers", "accelerate"):
            if peer in base:
                r[f"speedup_over_{peer}"] = base[peer] / r["pass_seconds"]
    print(f"\nB = {ceiling:.1f} GB/s; blocks {runs[0]['block_bytes'] / 1e9:.2f} GB (X = "
          f"{runs[0]['transfer_bound_seconds']:.3f} s); C = {compute:.4f} s per pass")
    for r in runs:
        print(f"  {r['contender']:16s} {r['pass_seconds']:.4f} s  x diffusers "
              f"{r.get('speedup_over_diffusers', 0):.3f}  x accelerate "
              f"{r.get('speedup_over_accelerate', 0):.3f}  peak {r['peak_device_bytes'] / 1e9:.2f} GB")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"runs": runs}, f, indent=2)


if __name__ == "__main__":
    main()
