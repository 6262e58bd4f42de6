#!/usr/bin/env python3
"""Layers bigger than the budget, streamed by the offloaders PyTorch users run today.

usage: offload.py [--layers N] [--tokens T,T] [--passes P] [--install WHEELDIR] [--json FILE]
                  [--contenders diffusers,accelerate,aimdo] [--budgets 5200M,12G] [--lris BIN]

The model is the one `lris stream` builds: decoder layers of a 70B-class model (hidden 8192,
intermediate 28672, kv width 1024; q, k, v, o, gate, up, down, bf16, no bias), each layer's
forward a chain of the same seven matrix products. Each contender streams it from host memory
to cuda:0 for every pass; the script measures, in the same process, the pinned host -> device
ceiling (B), the compute of one layer with its weights resident (C per layer), and each pass
(T_pass, after a warm-up pass). E = max(C, X) / T_pass with X = model bytes / B (none of
these offloaders keeps a layer resident between passes). Peak device memory is
torch.cuda.max_memory_allocated during the passes.

Contenders: diffusers' apply_group_offloading (block level, one block per group,
use_stream=True), accelerate's cpu_offload, ComfyUI's comfy-aimdo (its dynamic-VRAM protocol
as ComfyUI's ops drive it: every weight a range of one VBAR whose resident bytes are limited
to the budget, vbar_fault before use, the copy from pinned memory on an offload stream one
layer ahead only where the fault's signature says the pages lost their bytes, vbar_unpin after
use; one row per budget); with --lris, `lris stream` on the same layers (a process per budget
list and token count, its JSON read back), each budget a row. The table ends with every pass
time as a ratio to diffusers' at the same token count.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def install(wheels):
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links",
                    wheels, "diffusers==0.42.1", "comfy-aimdo==0.6.0"], check=True)


def parse_size(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


class AimdoModel:
    """The layers' weights in one comfy-aimdo VBAR, driven as ComfyUI's ops drive it."""

    def __init__(self, torch, host, budget, dev):
        from comfy_aimdo.model_vbar import ModelVBAR
        self.torch, self.host, self.dev = torch, host, dev
        total = sum((w.nbytes + 511) & ~511 for layer in host for w in layer)
        self.vbar = ModelVBAR(total + (64 << 20), dev.index)
        self.allocs = [[self.vbar.alloc(w.nbytes) for w in layer] for layer in host]
        self.signatures = [[None] * len(layer) for layer in host]
        self.stream = torch.cuda.Stream(dev)
        self.copied = 0       # bytes copied in (signature changed)
        self.fallbacks = 0    # weights the VBAR refused (fault OOM): copied to a temporary, as
                              # ComfyUI casts a weight it cannot keep
        self.peak_loaded = 0  # the most VBAR bytes resident seen after a layer

    def fetch(self, layer):
        from comfy_aimdo.model_vbar import vbar_fault, vbar_signature_compare
        from comfy_aimdo.torch import aimdo_to_tensor
        torch = self.torch
        weights = []
        with torch.cuda.stream(self.stream):
            for k, (alloc, w) in enumerate(zip(self.allocs[layer], self.host[layer])):
                signature = vbar_fault(alloc)
                if signature is not None and vbar_signature_compare(signature, self.signatures[layer][k]):
                    dst = aimdo_to_tensor(alloc, self.dev)
                else:
                    if signature is None:
                        self.fallbacks += 1
                        dst = torch.empty(w.nbytes, dtype=torch.uint8, device=self.dev)
                        dst.record_stream(self.compute_stream)  # used there
                    else:
                        dst = aimdo_to_tensor(alloc, self.dev)
                    dst.copy_(w.view(-1).view(torch.uint8), non_blocking=True)
                    self.copied += w.nbytes
                    self.signatures[layer][k] = signature
                weights.append(dst.view(torch.bfloat16).view(w.shape))
            ready = torch.cuda.Event()
            ready.record(self.stream)
        return weights, ready

    def unpin(self, layer):
        from comfy_aimdo.model_vbar import vbar_unpin
        for alloc in self.allocs[layer]:
            vbar_unpin(alloc)

    def forward(self, x, compute):
        torch = self.torch
        current = self.compute_stream = torch.cuda.current_stream(self.dev)
        self.stream.wait_stream(current)
        ahead = self.fetch(0)
        for layer in range(len(self.host)):
            weights, ready = ahead
            if layer > 0:
                self.unpin(layer - 1)
            self.stream.wait_stream(current)  # the pages it may reuse are no longer read
            if layer + 1 < len(self.host):
                ahead = self.fetch(layer + 1)
            current.wait_event(ready)
            x = compute(x, weights)
            self.peak_loaded = max(self.peak_loaded, self.vbar.loaded_size())
        self.unpin(len(self.host) - 1)
        return x

    def close(self):
        self.vbar.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--tokens", default="16,32768")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--install")
    ap.add_argument("--json")
    ap.add_argument("--contenders", default="diffusers,accelerate,aimdo")
    ap.add_argument("--lris", help="the lris command, to run `lris stream` on the same layers")
    ap.add_argument("--budgets", default="5200M,12G", help="budgets of lris stream and aimdo")
    ap.add_argument("--cublas", default="", help="passed to lris stream")
    a = ap.parse_args()
    if a.install:
        install(a.install)
    contenders = a.contenders.split(",")
    if "aimdo" in contenders:  # before torch is imported, as ComfyUI's main.py does
        import comfy_aimdo.control
        if not comfy_aimdo.control.init():
            raise SystemExit("comfy-aimdo: init failed")
    import torch
    if "aimdo" in contenders:  # its devices once CUDA is up, as ComfyUI does
        torch.cuda.init()
        if not comfy_aimdo.control.init_device(0):
            raise SystemExit("comfy-aimdo: init_device(0) failed")
    from torch import nn

    hidden, inter, kv = 8192, 28672, 1024
    dev = torch.device("cuda:0")

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            mk = lambda o, i: nn.Linear(i, o, bias=False, dtype=torch.bfloat16)
            self.q_proj, self.k_proj, self.v_proj = mk(hidden, hidden), mk(kv, hidden), mk(kv, hidden)
            self.o_proj = mk(hidden, hidden)
            self.gate_proj, self.up_proj = mk(inter, hidden), mk(inter, hidden)
            self.down_proj = mk(hidden, inter)

        def forward(self, x):  # through the submodules: accelerate hooks each of them
            q = self.q_proj(x)
            self.k_proj(x)
            self.v_proj(x)
            o = self.o_proj(q)
            g = self.gate_proj(x)
            self.up_proj(x)
            return o + self.down_proj(g)

    def layer_products(x, w):  # the same products, on weights q, k, v, o, gate, up, down
        lin = torch.nn.functional.linear
        q = lin(x, w[0])
        lin(x, w[1])
        lin(x, w[2])
        o = lin(q, w[3])
        g = lin(x, w[4])
        lin(x, w[5])
        return o + lin(g, w[6])

    class Model(nn.Module):
        def __init__(self, n):
            super().__init__()
            with torch.device("meta"):
                self.layers = nn.ModuleList(Layer() for _ in range(n))
            self.layers.to_empty(device="cpu")

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    layer_bytes = sum(p.numel() * 2 for p in Layer().parameters())
    model_bytes = layer_bytes * a.layers

    # The ceiling: one 1 GiB pinned tensor to the device, median of 10.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from link import pinned_h2d_gbps
    ceiling = pinned_h2d_gbps(torch, dev)

    # Compute of one resident layer, per token count.
    one = Layer().to(dev)
    compute = {}
    working = {}  # device bytes a layer's products take beside its weights, per token count
    for tokens in [int(t) for t in a.tokens.split(",")]:
        x = torch.zeros(tokens, hidden, dtype=torch.bfloat16, device=dev)
        with torch.no_grad():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(dev)
            base = torch.cuda.memory_allocated(dev)
            one(x)
            torch.cuda.synchronize()
            working[tokens] = torch.cuda.max_memory_allocated(dev) - base
            times = []
            for _ in range(5):
                t = time.perf_counter()
                one(x)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
        compute[tokens] = statistics.median(times) * a.layers
    del one, x
    torch.cuda.empty_cache()

    def measure(name, run, tokens, c, peak_bytes, extra=None):
        x = torch.zeros(tokens, hidden, dtype=torch.bfloat16, device=dev)
        with torch.no_grad():
            run(x)  # warm-up
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(dev)
            base = torch.cuda.memory_allocated(dev)
            times = []
            for _ in range(a.passes):
                t = time.perf_counter()
                run(x)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
        t_pass = statistics.mean(times)
        x_bound = model_bytes / (ceiling * 1e9)
        peak = peak_bytes() if peak_bytes else torch.cuda.max_memory_allocated(dev) - base
        r = {"contender": name, "tokens": tokens, "layers": a.layers,
             "model_bytes": model_bytes, "pass_seconds": t_pass, "compute_seconds": c,
             "transfer_bound_seconds": x_bound, "efficiency": max(c, x_bound) / t_pass,
             "link_gbps": model_bytes / t_pass / 1e9, "link_ceiling_gbps": ceiling,
             "peak_device_bytes": peak}
        r.update(extra() if extra else {})
        print(f"{name:10s} tokens {tokens:6d}: pass {t_pass:.4f} s against max(C, X) "
              f"{max(c, x_bound):.4f} s: E {r['efficiency']:.3f}; {r['link_gbps']:.1f} GB/s "
              f"of {ceiling:.1f}; device peak {peak / 1e9:.2f} GB"
              + (f"; {extra()}" if extra else ""), flush=True)
        results.append(r)

    results = []
    for name in contenders:
        if name == "aimdo":
            host = [[torch.empty(o, i, dtype=torch.bfloat16).pin_memory()
                     for o, i in [(hidden, hidden), (kv, hidden), (kv, hidden), (hidden, hidden),
                                  (inter, hidden), (inter, hidden), (hidden, inter)]]
                    for _ in range(a.layers)]
            for budget in [parse_size(b) for b in a.budgets.split(",")]:
                m = AimdoModel(torch, host, budget, dev)
                for tokens, c in compute.items():
                    # A GPU with `budget` bytes for weights beside what the layer's products
                    # take: the rest of the device's free memory held by torch, which aimdo
                    # counts against its budget (it keeps 256 MiB of headroom besides).
                    ballast = None
                    torch.cuda.empty_cache()
                    free, _ = torch.cuda.mem_get_info(dev)
                    ballast = torch.empty(free + m.vbar.loaded_size() - budget - working[tokens]
                                          - (512 << 20), dtype=torch.uint8, device=dev)
                    calls = {"n": 0, "copied": 0, "fallbacks": 0}

                    def run(x):
                        calls["n"] += 1
                        if calls["n"] == 2:  # the first timed pass
                            calls["copied"], calls["fallbacks"] = m.copied, m.fallbacks
                        return m.forward(x, layer_products)

                    measure(f"aimdo {budget / 1e9:.2f} GB", run, tokens, c,
                            lambda: m.peak_loaded,
                            lambda: {"budget_bytes": budget,
                                     "fallbacks_per_pass": (m.fallbacks - calls["fallbacks"]) / a.passes,
                                     "copied_bytes_per_pass": (m.copied - calls["copied"]) / a.passes})
                    del ballast
                m.close()
            del host
            torch.cuda.empty_cache()
            continue
        model = Model(a.layers)
        if name == "diffusers":
            from diffusers.hooks import apply_group_offloading
            apply_group_offloading(model, onload_device=dev, offload_device=torch.device("cpu"),
                                   offload_type="block_level", num_blocks_per_group=1,
                                   use_stream=True)
        elif name == "accelerate":
            from accelerate import cpu_offload
            cpu_offload(model, execution_device=dev)
        else:
            raise SystemExit(f"unknown contender {name}")
        for tokens, c in compute.items():
            measure(name, model, tokens, c, None)
        del model
        torch.cuda.empty_cache()
    if a.lris:
        for tokens in compute:
            cmd = [a.lris, "stream", "--device", "cuda:0", "--model", str(model_bytes),
                   "--tokens", str(tokens), "--budget", a.budgets, "--policies", "next_use",
                   "--lookahead", str(layer_bytes), "--passes", str(a.passes), "--json"]
            if a.cublas:
                cmd += ["--cublas", a.cublas]
            out = subprocess.run(cmd, check=False, capture_output=True, text=True)
            if not out.stdout.strip().startswith("{"):
                raise SystemExit(f"lris stream failed: {out.stderr.strip()}")
            for run in json.loads(out.stdout)["runs"]:
                if run["bytes_checked_wrong"] != 0:
                    raise SystemExit(f"lris stream: wrong bytes at budget {run['budget_bytes']}")
                r = {"contender": f"lris {run['budget_bytes'] / 1e9:.2f} GB", "tokens": tokens,
                     "layers": a.layers, "model_bytes": model_bytes,
                     "pass_seconds": run["pass_seconds"],
                     "compute_seconds": run["compute_seconds"],
                     "transfer_bound_seconds": run["transfer_bound_seconds"],
                     "efficiency": run["efficiency"], "link_gbps": run["link_gbps"],
                     "link_ceiling_gbps": run["link_ceiling_gbps"],
                     "peak_device_bytes": run["peak_device_bytes"]}
                print(f"{r['contender']:10s} tokens {tokens:6d}: pass {r['pass_seconds']:.4f} s; "
                      f"E {r['efficiency']:.3f} (its own C and ceiling); {r['link_gbps']:.1f} "
                      f"GB/s; device peak {r['peak_device_bytes'] / 1e9:.2f} GB", flush=True)
                results.append(r)
    base = {r["tokens"]: r["pass_seconds"] for r in results if r["contender"] == "diffusers"}
    if base:
        print("pass time as a ratio to diffusers' at the same tokens:")
        for r in results:
            if r["tokens"] in base:
                r["ratio_to_diffusers"] = r["pass_seconds"] / base[r["tokens"]]
                print(f"  {r['contender']:12s} tokens {r['tokens']:6d}: {r['ratio_to_diffusers']:.3f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"ceiling_gbps": ceiling, "layer_bytes": layer_bytes, "runs": results}, f,
                      indent=2)


if __name__ == "__main__":
    main()
