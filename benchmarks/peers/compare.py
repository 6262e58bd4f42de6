#!/usr/bin/env python3
"""LRIS against the other checkpoint loaders, on one sharded safetensors checkpoint, same machine,
same rounds.

What it measures: GB/s (sum of tensor bytes / seconds, GB = 1e9) of loading every tensor of the
checkpoint into GPU memory (cuda:0), or into host memory for the host contenders, by:

  lris                      `lris load DIR --device cuda:0 --json --verify`: first load of a process
  lris-later                `lris load ... --repeat 5`: median of loads 2-5 of one process (warm only)
  lris-host                 `lris load DIR --device host --json --verify`
  lris-python               `import lris`: lris.torch.load(DIR, device="cuda:0"): the load, and its
                            block imported into torch and a view per tensor while it reads; the
                            hand-off (from the load's last byte to the tensors handed out) and
                            the views' time reported apart
  raw                       `lris load DIR --raw --json`: raw reads of the shards, no LRIS code; the
                            best method of the round is the ceiling ("/ raw")
  instanttensor             instanttensor.safe_open(files, device=0), default backend (O_DIRECT)
  instanttensor-buffered    the same with backend=BackendPolicy.BUFFERED
  fastsafetensors           SafeTensorsFileLoader(nogds=True) -> copy_files_to_device() (O_DIRECT)
  fastsafetensors-buffered  the same with FASTSAFETENSORS_ODIRECT=0 (buffered pread)
  kvikio                    CuFile.pread of each shard's data section into a torch buffer, defaults
  kvikio-16                 the same with KVIKIO_NTHREADS=16, KVIKIO_COMPAT_MODE=ON
  runai                     SafetensorsStreamer.stream_files(files, device="cuda:0")
  runai-32                  the same with RUNAI_STREAMER_CONCURRENCY=32 (documented default: 16)
  runai-cpu                 SafetensorsStreamer to host memory
  safetensors               safetensors.torch.load_file(shard, device="cuda:0") per shard
  safetensors-cpu           load_file(shard, device="cpu"), every page touched (it maps the file)

Each load runs in a fresh process. Modes: warm (the shards read once before each round, so the
page cache holds them) and cold (page cache dropped before each load). Rounds are interleaved:
every round runs every contender once, in an order rotated by one each round (round r starts at
contender r mod n), so slow drifts of the disk fall on every contender alike.

Timing. A peer process imports torch, starts CUDA (torch.cuda.init(), a tensor on the device,
synchronize) and imports the peer's module first; in cold mode it then drops the page cache
(os.sync, drop_caches as root, POSIX_FADV_DONTNEED on each shard: drop_caches() of
safetensors_load.py), which is where `lris load --cold` drops it too (after the device started).
The clock starts right before the load call(s) and stops after torch.cuda.synchronize() once
every tensor is materialised where it belongs. Closing the loader (context exit, freeing its
buffers) is timed apart (close_seconds), not in the figure. LRIS is timed by what `lris load
--json` reports: the checkpoint opened (its headers read), its memory allocated and the reads,
the device started before; lris-python from lris.torch.load's call to its tensors.

Checking. Before the rounds, every tensor's fingerprint is computed from the file's bytes (own
header parser, GPU: int32 words, else bytes, as int64: plain sum and sum weighted by
(i % 65521) + 1) and cached in DIR.fingerprints.json, keyed by each shard's size and mtime. After
its clock stops, each peer process fingerprints every tensor it loaded the same way (host
tensors copied to the GPU for that, untimed) and reports missing, extra and differing tensors,
wrong dtypes, shapes or devices. LRIS is checked by `lris load --verify` (every byte against the
file, after the timing). A contender with any difference is FAILED in the summary, not dropped.

Ratios: "/ LRIS" is the median over rounds of the contender's rate over LRIS's first load in the
same round (lris for GPU contenders, lris-host for host ones); "/ raw" over that round's best raw
read; "/ method" over that round's rate of the one raw method best over the run (by its median),
which the best of several noisy methods in each round does not pull upwards. Warm, the raw reads are O_DIRECT only (buffered ones would read the page cache), so warm
"/ raw" compares with the disk, not with the page cache.

Typical use on the GPU machine (root, no internet), from the repository root, one mode per call
(a warm round takes about a minute, a cold one two or more on a disk of 2-3 GB/s):

  python3 benchmarks/peers/compare.py /tmp/ck8 --lris build/lris --install .whl/peers \\
      --modes warm --max-seconds 540
  python3 benchmarks/peers/compare.py /tmp/ck8 --lris build/lris --install .whl/peers \\
      --modes cold --max-seconds 540

A missing DIR is written first (make_model() of safetensors_load.py, --size-gib 7.6: 20 decoder
layers, 8.1 GB, 4 shards; about a minute), then its fingerprints. Each call appends a run to the
JSON file (--json, default DIR.compare.json) and saves it after every load, so a call that is
killed keeps what it measured; a later call continues the rotation where the file's rounds of that
mode on this host stopped. `compare.py --report FILE` prints the tables over every run in FILE.

--install WHEELDIR installs the wheels of WHEELDIR whose distributions are not installed into
/tmp/peers-site (pip, no index, no dependencies) and puts it on sys.path and PYTHONPATH.
"""

import argparse
import collections
import datetime
import functools
import glob
import importlib
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.abspath(__file__)
REPO = os.path.dirname(os.path.dirname(HERE))
RESULT_MARK = "@@compare-result@@ "
PEER_SITE = "/tmp/peers-site"
DEVICE = "cuda:0"
# Environment variables that tune a peer: cleared for every child, then set per contender.
KNOB_PREFIXES = ("INSTANTTENSOR_", "FASTSAFETENSORS_", "KVIKIO_", "RUNAI_STREAMER_")
FINGERPRINT_FUNCTION = ("v1: int32 words (uint8 if the size is not a multiple of 4) as int64: "
                        "sum, sum of x[i] * ((i % 65521) + 1)")
WEIGHT_PERIOD = 65521
CHUNK_WORDS = WEIGHT_PERIOD * 256  # a multiple of the period: each chunk starts at weight 1
MODES = ("warm", "cold")


# --- contenders ----------------------------------------------------------------------------------

class Contender:
    """kind: "lris" (the lris binary, timed by itself), "raw" (lris load --raw) or "peer" (a worker
    process of this script). target: where the tensors land, "cuda" or "host"."""

    def __init__(self, name, kind, target, about, env=None, args=(), modules=(), load=None,
                 options=None, warm_only=False, touch_pages=False):
        self.name, self.kind, self.target, self.about = name, kind, target, about
        self.env = dict(env or {})
        self.args = list(args)           # lris arguments after `lris load DIR --json`
        self.modules = list(modules)     # imported before the clock starts; the first is required
        self.load = load                 # name of the load function (peers)
        self.options = dict(options or {})
        self.warm_only = warm_only
        self.touch_pages = touch_pages


CONTENDERS = [
    Contender("lris", "lris", "cuda", "lris load --device cuda:0, first load of a process",
              args=["--device", DEVICE, "--verify"]),
    Contender("lris-later", "lris", "cuda", "lris load --device cuda:0 --repeat 5, loads 2-5",
              args=["--device", DEVICE, "--repeat", "5", "--verify"], warm_only=True),
    Contender("lris-host", "lris", "host", "lris load --device host",
              args=["--device", "host", "--verify"]),
    Contender("lris-python", "peer", "cuda", "import lris: lris.torch.load(device=cuda:0)",
              modules=["lris", "lris.torch"], load="lris_python", options={"device": DEVICE}),
    Contender("raw", "raw", "host", "lris load --raw: raw reads of the shards, best method",
              args=["--device", "host", "--raw"]),
    Contender("instanttensor", "peer", "cuda", "instanttensor.safe_open, default backend",
              modules=["instanttensor"], load="instanttensor"),
    Contender("instanttensor-buffered", "peer", "cuda", "instanttensor.safe_open, BackendPolicy.BUFFERED",
              modules=["instanttensor"], load="instanttensor", options={"buffered": True}),
    Contender("fastsafetensors", "peer", "cuda", "SafeTensorsFileLoader(nogds=True), O_DIRECT",
              modules=["fastsafetensors"], load="fastsafetensors"),
    Contender("fastsafetensors-buffered", "peer", "cuda", "the same, FASTSAFETENSORS_ODIRECT=0",
              env={"FASTSAFETENSORS_ODIRECT": "0"}, modules=["fastsafetensors"], load="fastsafetensors"),
    Contender("kvikio", "peer", "cuda", "kvikio CuFile.pread per shard, defaults",
              modules=["kvikio", "cupy"], load="kvikio"),
    Contender("kvikio-16", "peer", "cuda", "kvikio, KVIKIO_NTHREADS=16, compat mode (POSIX)",
              env={"KVIKIO_NTHREADS": "16", "KVIKIO_COMPAT_MODE": "ON"}, modules=["kvikio", "cupy"],
              load="kvikio"),
    Contender("runai", "peer", "cuda", "runai SafetensorsStreamer, device cuda:0",
              modules=["runai_model_streamer"], load="runai", options={"device": DEVICE}),
    # RUNAI_STREAMER_CONCURRENCY: threads reading the file (docs/src/env-vars.md: default 16).
    Contender("runai-32", "peer", "cuda", "runai, RUNAI_STREAMER_CONCURRENCY=32",
              env={"RUNAI_STREAMER_CONCURRENCY": "32"}, modules=["runai_model_streamer"],
              load="runai", options={"device": DEVICE}),
    Contender("runai-cpu", "peer", "host", "runai SafetensorsStreamer to host memory",
              modules=["runai_model_streamer"], load="runai", options={"device": "cpu"}),
    Contender("safetensors", "peer", "cuda", "safetensors load_file(device=cuda:0) per shard",
              modules=["safetensors.torch"], load="safetensors", options={"device": DEVICE}),
    # load_file to the CPU maps the file: a tensor's bytes are read when first touched, so the
    # timed part touches one byte of every page of every tensor.
    Contender("safetensors-cpu", "peer", "host", "safetensors load_file(device=cpu), pages touched",
              modules=["safetensors.torch"], load="safetensors", options={"device": "cpu"},
              touch_pages=True),
]
BY_NAME = {c.name: c for c in CONTENDERS}

# Distributions whose versions go into the JSON: label -> candidate distribution names.
VERSION_DISTS = {
    "torch": ["torch"], "safetensors": ["safetensors"], "instanttensor": ["instanttensor"],
    "fastsafetensors": ["fastsafetensors"], "kvikio": ["kvikio-cu13", "kvikio-cu12", "kvikio"],
    "libkvikio": ["libkvikio-cu13", "libkvikio-cu12", "libkvikio"],
    "runai-model-streamer": ["runai-model-streamer"], "cupy": ["cupy-cuda13x", "cupy-cuda12x", "cupy"],
    "numpy": ["numpy"],
}


def rotated(items, start):
    """items, starting at items[start mod n]."""
    if not items:
        return []
    k = start % len(items)
    return items[k:] + items[:k]


# --- the checkpoint, read without any loader -----------------------------------------------------

def shard_files(ckpt_dir):
    """The shards named by the index's weight_map (sorted, unique); without an index, every
    .safetensors file of the directory."""
    index = os.path.join(ckpt_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            names = sorted(set(json.load(f)["weight_map"].values()))
    else:
        names = sorted(n for n in os.listdir(ckpt_dir) if n.endswith(".safetensors"))
    return [os.path.join(ckpt_dir, n) for n in names]


def read_header(path):
    """(tensors of the header without __metadata__, offset of the data section in the file)."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    header.pop("__metadata__", None)
    return header, 8 + length


class Checkpoint:
    def __init__(self, ckpt_dir):
        self.dir = os.path.abspath(ckpt_dir)
        self.files = shard_files(self.dir)
        if not self.files:
            raise SystemExit(f"{self.dir}: no safetensors shards")
        self.tensors = {}  # name -> {file, offset (in the file), bytes, dtype, shape}
        for path in self.files:
            header, data_start = read_header(path)
            for name, info in header.items():
                if name in self.tensors:
                    raise SystemExit(f"{self.dir}: tensor {name} is in two shards")
                begin, end = info["data_offsets"]
                self.tensors[name] = {"file": path, "offset": data_start + begin, "bytes": end - begin,
                                      "dtype": info["dtype"], "shape": list(info["shape"])}
        self.bytes = sum(t["bytes"] for t in self.tensors.values())

    def shard_keys(self):
        """Each shard's size and mtime: what the fingerprint cache is valid for."""
        keys = {}
        for path in self.files:
            st = os.stat(path)
            keys[os.path.basename(path)] = [st.st_size, st.st_mtime_ns]
        return keys

    def raw_select(self):
        """A --select regular expression (ECMAScript) for the smallest tensor: the LRIS load that
        `lris load --raw` does besides its raw reads then takes no time."""
        name = min(self.tensors, key=lambda n: (self.tensors[n]["bytes"], n))
        return "^" + "".join("\\" + ch if ch in "\\^$.|?*+()[]{}" else ch for ch in name) + "$"

    def describe(self):
        return {"path": self.dir, "bytes": self.bytes, "tensors": len(self.tensors),
                "shards": len(self.files), "shard_files": [os.path.basename(p) for p in self.files],
                "shard_bytes": [os.path.getsize(p) for p in self.files]}


def fingerprint_path(ckpt_dir):
    return os.path.abspath(ckpt_dir).rstrip("/") + ".fingerprints.json"


def cached_fingerprints(ck):
    """The cached reference fingerprints if they were made from these very shards, else None."""
    try:
        with open(fingerprint_path(ck.dir)) as f:
            cache = json.load(f)
    except (OSError, ValueError):
        return None
    if cache.get("function") != FINGERPRINT_FUNCTION or cache.get("shards") != ck.shard_keys():
        return None
    if set(cache.get("tensors", {})) != set(ck.tensors):
        return None
    return cache


# --- GPU side (workers only: torch is imported there) --------------------------------------------

_WEIGHTS = {}


@functools.lru_cache(maxsize=None)
def _dtype_names():
    import torch
    names = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32", torch.float64: "F64",
             torch.int8: "I8", torch.int16: "I16", torch.int32: "I32", torch.int64: "I64",
             torch.uint8: "U8", torch.bool: "BOOL"}
    for attr, st in (("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2"), ("uint16", "U16"),
                     ("uint32", "U32"), ("uint64", "U64")):
        if hasattr(torch, attr):
            names[getattr(torch, attr)] = st
    return names


def fingerprint(t):
    """(sum, weighted sum) of a tensor's bytes as two int64 scalars on its device (CUDA): the bytes
    as int32 words where their count is a multiple of 4, else as bytes; weights (i % 65521) + 1.
    Sums wrap modulo 2**64, identically for the reference and the loaded tensor."""
    import torch
    raw = t.detach().reshape(-1).view(torch.uint8)
    dev = raw.device
    if raw.numel() % 4 == 0 and raw.numel() > 0:
        if raw.storage_offset() % 4 or raw.data_ptr() % 4:
            raw = raw.clone()
        words = raw.view(torch.int32)
    else:
        words = raw
    if dev not in _WEIGHTS:
        _WEIGHTS[dev] = torch.arange(CHUNK_WORDS, device=dev, dtype=torch.int64) % WEIGHT_PERIOD + 1
    weights = _WEIGHTS[dev]
    plain = torch.zeros((), dtype=torch.int64, device=dev)
    weighted = torch.zeros((), dtype=torch.int64, device=dev)
    for start in range(0, words.numel(), CHUNK_WORDS):
        chunk = words[start:start + CHUNK_WORDS].to(torch.int64)
        plain += chunk.sum()
        weighted += (chunk * weights[:chunk.numel()]).sum()
    return torch.stack([plain, weighted])


def reference_fingerprints(ck):
    """Every tensor's fingerprint from the file's bytes, read with plain file reads."""
    import torch
    sums, names = [], sorted(ck.tensors)
    for name in names:
        info = ck.tensors[name]
        data = bytearray(info["bytes"])
        with open(info["file"], "rb", buffering=0) as f:
            f.seek(info["offset"])
            view, got = memoryview(data), 0
            while got < len(data):
                n = f.readinto(view[got:])
                if not n:
                    raise SystemExit(f"{info['file']}: short read at tensor {name}")
                got += n
        host = torch.frombuffer(data, dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
        sums.append(fingerprint(host.to(DEVICE)))
    values = torch.stack(sums).tolist() if sums else []
    return {name: {"dtype": ck.tensors[name]["dtype"], "shape": ck.tensors[name]["shape"],
                   "bytes": ck.tensors[name]["bytes"], "fingerprint": v}
            for name, v in zip(names, values)}


def check_tensors(tensors, reference, target):
    """Every loaded tensor against the reference: names, dtype, shape, device, bytes."""
    import torch
    dtype_names = _dtype_names()
    loaded, wanted = set(tensors), set(reference)
    missing, extra = sorted(wanted - loaded), sorted(loaded - wanted)
    wrong_meta, wrong_device, names, sums = [], [], [], []
    for name in sorted(loaded & wanted):
        t, ref = tensors[name], reference[name]
        if list(t.shape) != ref["shape"] or dtype_names.get(t.dtype) != ref["dtype"]:
            wrong_meta.append(name)
        on_gpu = t.device.type == "cuda" and t.device.index in (None, 0)
        if on_gpu != (target == "cuda"):
            wrong_device.append(name)
        sums.append(fingerprint(t.to(DEVICE)))
        names.append(name)
    values = torch.stack(sums).tolist() if sums else []
    differ = [n for n, v in zip(names, values) if v != reference[n]["fingerprint"]]
    return {"checked": len(names), "missing": missing[:10], "missing_count": len(missing),
            "extra": extra[:10], "extra_count": len(extra), "differ": differ[:10],
            "differ_count": len(differ), "wrong_meta": wrong_meta[:10],
            "wrong_meta_count": len(wrong_meta), "wrong_device": wrong_device[:10],
            "wrong_device_count": len(wrong_device)}


def check_passed(check, expected_tensors):
    return (check.get("checked") == expected_tensors
            and not any(check.get(k) for k in ("missing_count", "extra_count", "differ_count",
                                               "wrong_meta_count", "wrong_device_count")))


def check_summary(check):
    """What a failed check found, in one line."""
    parts = [f"checked {check.get('checked')}"]
    for key in ("missing", "extra", "differ", "wrong_meta", "wrong_device"):
        if check.get(key + "_count"):
            parts.append(f"{key} {check[key + '_count']} (first: {check[key][0]})")
    return "check: " + ", ".join(parts)


def touch_pages(tensors):
    """Reads one byte of every 4 KiB page of every host tensor: a mapped file is read in."""
    import torch
    for t in tensors.values():
        raw = t.detach().reshape(-1).view(torch.uint8)
        if raw.numel():
            raw[::4096].sum()


# --- peer loaders: (tensors, close or None, info or a function giving it after the clock) ------

def load_instanttensor(files, buffered=False):
    import instanttensor
    kwargs = {"backend": instanttensor.BackendPolicy.BUFFERED} if buffered else {}
    # safe_open sorts the list it gets in place; copy=True (default): tensors own their memory.
    f = instanttensor.safe_open(list(files), framework="pt", device=0, **kwargs)
    f.__enter__()
    tensors = dict(f.tensors())
    info = {"backend": getattr(getattr(f, "backend", None), "name", None),
            "chunk_size": getattr(f, "chunk_size", None), "io_depth": getattr(f, "io_depth", None),
            "buffer_size": getattr(f, "buffer_size", None)}
    return tensors, lambda: f.__exit__(None, None, None), info


def load_fastsafetensors(files):
    import fastsafetensors
    loader = fastsafetensors.SafeTensorsFileLoader(fastsafetensors.SingleGroup(), DEVICE, nogds=True)
    loader.add_filenames({0: list(files)})
    buffers = loader.copy_files_to_device()
    # Tensors share ownership of the device buffers: valid after buffers.close() (file_buffer.py).
    tensors = {name: buffers.get_tensor(name) for name in loader.get_keys()}

    def close():
        buffers.close()
        loader.close()
    return tensors, close, {"copier": getattr(getattr(loader, "copier_class", None), "__name__", None)}


def _kvikio_pread(handle, buf, size, offset):
    try:
        return handle.pread(buf, size, offset)
    except Exception:  # the tensor not taken as a buffer
        import cupy  # kvikio takes __cuda_array_interface__; cupy wraps the tensor without a copy
        return handle.pread(cupy.asarray(buf), size, offset)


@functools.lru_cache(maxsize=None)
def _torch_dtypes():
    return {v: k for k, v in _dtype_names().items()}


def _typed_view(raw, dtype, shape):
    import torch
    torch_dtype = _torch_dtypes()[dtype]
    if raw.numel() == 0:
        return torch.empty(shape, dtype=torch_dtype, device=raw.device)
    try:
        return raw.view(torch_dtype).view(shape)
    except RuntimeError:  # offset not a multiple of the element size
        return raw.clone().view(torch_dtype).view(shape)


def load_kvikio(files):
    import kvikio
    import torch
    handles, reads = [], []
    for path in files:
        header, data_start = read_header(path)
        size = max((info["data_offsets"][1] for info in header.values()), default=0)
        buf = torch.empty(size, dtype=torch.uint8, device=DEVICE)
        handle = kvikio.CuFile(path, "r")
        handles.append(handle)
        future = _kvikio_pread(handle, buf, size, data_start) if size else None
        reads.append((path, header, buf, size, future))
    tensors = {}
    for path, header, buf, size, future in reads:
        if future is not None and future.get() != size:
            raise RuntimeError(f"kvikio: short read of {path}")
        for name, info in header.items():
            begin, end = info["data_offsets"]
            tensors[name] = _typed_view(buf[begin:end], info["dtype"], info["shape"])
    return tensors, lambda: [h.close() for h in handles], lambda: kvikio_settings(kvikio)


def kvikio_settings(kvikio):
    info = {}
    for key in ("compat_mode", "num_threads", "task_size"):
        try:
            info[key] = str(kvikio.defaults.get(key))
        except Exception as e:  # another kvikio version: record what failed
            info[key] = f"? {e}"
    return info


def load_runai(files, device):
    from runai_model_streamer import SafetensorsStreamer
    streamer = SafetensorsStreamer()
    streamer.__enter__()
    # owned=True (default): every tensor stays valid while held; a device destination is copied
    # by the streamer (tensor.to(device)) as each range arrives.
    streamer.stream_files(list(files), device=device)
    tensors = dict(streamer.get_tensors())
    return tensors, lambda: streamer.__exit__(None, None, None), {"device": device}


def load_safetensors(files, device):
    from safetensors.torch import load_file
    tensors = {}
    for path in files:
        tensors.update(load_file(path, device=device))
    return tensors, None, {"device": device}


def load_lris_python(files, device):
    import lris
    from lris.torch import _hand_off
    # lris.torch.load: the load on a thread of its own, torch's views of its block made while
    # the bytes are read. Its hand-off timed apart: from the load's end (its last byte, on
    # time.monotonic()'s clock) to the tensors handed out; and the views' own time, off the
    # load's path. The checkpoint's directory: read through its index, as `lris load DIR`.
    pending = lris._lris.load_start(os.path.dirname(os.path.abspath(files[0])), device=device)
    times = {}
    tensors = _hand_off(pending, times)
    handoff = max(0.0, time.monotonic() - pending.finished_at)
    n = max(1, len(tensors))
    return tensors, None, {"device": device, "handoff_seconds": handoff,
                           "handoff_us_per_tensor": handoff / n * 1e6,
                           "views_seconds": times["views"],
                           "views_us_per_tensor": times["views"] / n * 1e6}


PEER_LOADERS = {"lris_python": load_lris_python, "instanttensor": load_instanttensor, "fastsafetensors": load_fastsafetensors,
                "kvikio": load_kvikio, "runai": load_runai, "safetensors": load_safetensors}


# --- worker processes ----------------------------------------------------------------------------

def emit(result):
    print(RESULT_MARK + json.dumps(result), flush=True)


def drop_page_cache(files):
    """drop_caches() of safetensors_load.py (sync, drop_caches as root, FADV_DONTNEED per file)."""
    sys.path.insert(0, HERE)
    from safetensors_load import drop_caches
    drop_caches(files)
    return "drop_caches (root)" if os.geteuid() == 0 else "POSIX_FADV_DONTNEED only (not root)"


def start_cuda():
    import torch
    torch.cuda.init()
    torch.zeros(1, device=DEVICE)
    torch.cuda.synchronize()
    return {"device_name": torch.cuda.get_device_name(0), "torch": torch.__version__,
            "torch_cuda": torch.version.cuda}


def worker_peer(spec, ckpt_dir, mode, fingerprints_file):
    result = {"contender": spec.name, "mode": mode}
    import torch
    result.update(start_cuda())
    try:
        for i, module in enumerate(spec.modules):
            try:
                importlib.import_module(module)
            except Exception:
                if i == 0:
                    raise
    except Exception as e:
        result.update(status="not installed", error=f"{type(e).__name__}: {e}")
        emit(result)
        return 3
    files = shard_files(ckpt_dir)
    with open(fingerprints_file) as f:
        reference = json.load(f)["tensors"]
    if mode == "cold":
        result["cold_note"] = drop_page_cache(files)
    load = PEER_LOADERS[spec.load]
    torch.cuda.synchronize()
    start = time.perf_counter()
    tensors, close, info = load(files, **spec.options)
    if spec.touch_pages:
        touch_pages(tensors)
    torch.cuda.synchronize()
    result["seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    if close is not None:
        close()
    torch.cuda.synchronize()
    result["close_seconds"] = time.perf_counter() - start
    result["info"] = info() if callable(info) else info
    result["tensors"] = len(tensors)
    result["bytes"] = sum(t.numel() * t.element_size() for t in tensors.values())
    result["check"] = check_tensors(tensors, reference, spec.target)
    emit(result)
    return 0


def worker_fingerprints(ckpt_dir, out):
    start_cuda()
    ck = Checkpoint(ckpt_dir)
    start = time.perf_counter()
    cache = {"function": FINGERPRINT_FUNCTION, "shards": ck.shard_keys(),
             "tensors": reference_fingerprints(ck)}
    write_json(out, cache)
    emit({"seconds": time.perf_counter() - start, "tensors": len(cache["tensors"])})
    return 0


def worker_make(ckpt_dir, size_gib):
    sys.path.insert(0, HERE)
    from safetensors_load import make_model
    start = time.perf_counter()
    make_model(ckpt_dir, size_gib)
    emit({"seconds": time.perf_counter() - start})
    return 0


def run_worker(args):
    try:
        if args.worker == "make":
            return worker_make(args.dir, args.size_gib)
        if args.worker == "fingerprint":
            return worker_fingerprints(args.dir, args.fingerprints)
        return worker_peer(BY_NAME[args.worker], args.dir, args.modes, args.fingerprints)
    except Exception as e:
        emit({"contender": args.worker, "error": f"{type(e).__name__}: {e}",
              "traceback": traceback.format_exc()[-4000:]})
        return 1


# --- running children ----------------------------------------------------------------------------

class Finished:
    def __init__(self, rc, stdout, stderr, wall, timed_out, missing=None):
        self.rc, self.stdout, self.stderr = rc, stdout, stderr
        self.wall, self.timed_out, self.missing = wall, timed_out, missing

    def stderr_tail(self, lines=15):
        return "\n".join(self.stderr.strip().splitlines()[-lines:])


def run_process(cmd, env, timeout):
    """Runs cmd in its own process group; on timeout the group is killed."""
    start = time.perf_counter()
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                text=True, errors="replace", start_new_session=True)
    except OSError as e:
        return Finished(None, "", str(e), 0.0, False, missing=f"{type(e).__name__}: {e}")
    try:
        out, err = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        timed_out = True
    except BaseException:  # interrupted: the child goes too
        kill_group(proc)
        raise
    return Finished(proc.returncode, out, err, time.perf_counter() - start, timed_out)


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def worker_result(finished):
    """The last result line a worker printed, or None."""
    for line in reversed(finished.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            try:
                return json.loads(line[len(RESULT_MARK):])
            except ValueError:
                return None
    return None


def child_env(extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(KNOB_PREFIXES)}
    env.update(extra)
    return env


def failure(finished, what):
    if finished.missing:
        return {"status": "error", "error": f"{what}: {finished.missing}", "unavailable": True}
    reason = "timed out" if finished.timed_out else f"exit status {finished.rc}"
    last = finished.stderr_tail(1)
    return {"status": "error", "error": f"{what} {reason}" + (f": {last}" if last else ""),
            "stderr_tail": finished.stderr_tail()}


# --- one load of one contender ------------------------------------------------------------------

def run_lris(spec, ck, mode, opts):
    cmd = [opts.lris, "load", ck.dir, "--json"] + spec.args
    if spec.kind == "raw":
        cmd += ["--select", ck.raw_select()]
    if mode == "cold":
        cmd.append("--cold")  # lris drops the page cache itself, right before each read and load
    env = child_env(spec.env)
    finished = run_process(cmd, env, opts.timeout)
    if spec.kind == "raw" and finished.rc not in (0, None) and not finished.timed_out:
        cmd = [c for c in cmd if c not in ("--select", ck.raw_select())]  # without the shortcut
        finished = run_process(cmd, env, opts.timeout)
    record = {"command": cmd, "env": spec.env, "wall_seconds": finished.wall}
    out = finished.stdout
    try:
        report = json.loads(out[out.index("{"):out.rindex("}") + 1])
    except ValueError:
        report = None
    if finished.rc != 0 or report is None:
        record.update(failure(finished, "lris"))
        if "--verify:" in finished.stderr:
            record["status"] = "FAILED"
        return record
    record["lris_json"] = report
    if spec.kind == "raw":
        rate = report.get("raw_gbps") or 0
        record.update(gbps=rate, raw_method=report.get("raw_method"),
                      raw_methods=report.get("raw_methods"),
                      status="ok" if rate > 0 else "error")
        if rate <= 0:
            record["error"] = "no raw rate in the lris output"
        return record
    rates = report.get("rounds") or [report.get("gbps", 0)]
    used = rates[1:] if spec.name == "lris-later" and len(rates) > 1 else rates[:1]
    seconds = [report["file_bytes"] / 1e9 / r for r in used if r > 0]
    if not seconds:
        record.update(status="error", error="no load rate in the lris output")
        return record
    record["seconds"] = statistics.median(seconds)
    record["gbps"] = ck.bytes / record["seconds"] / 1e9
    record["load_seconds"] = seconds
    verified = report.get("verified")
    record["check"] = {"checked": verified, "tensors": report.get("tensors"),
                       "file_bytes": report.get("file_bytes")}
    ok = verified == len(ck.tensors) == report.get("tensors") and report.get("file_bytes") == ck.bytes
    record["status"] = "ok" if ok else "FAILED"
    if not ok:
        record["error"] = (f"verified {verified} of {len(ck.tensors)} tensors, loaded "
                           f"{report.get('tensors')} tensors of {report.get('file_bytes')} bytes "
                           f"(checkpoint: {ck.bytes})")
    return record


def run_peer(spec, ck, mode, opts):
    cmd = [sys.executable, SCRIPT, "--worker", spec.name, ck.dir, "--modes", mode,
           "--fingerprints", fingerprint_path(ck.dir)]
    finished = run_process(cmd, child_env(spec.env), opts.timeout)
    record = {"env": spec.env, "wall_seconds": finished.wall}
    result = worker_result(finished)
    if result is None:
        record.update(failure(finished, "worker"))
        return record
    record["worker"] = result
    if result.get("status") == "not installed":
        record.update(status="not installed", error=result.get("error"), unavailable=True)
        return record
    if "error" in result:
        record.update(status="error", error=result["error"], stderr_tail=finished.stderr_tail())
        return record
    record["seconds"] = result["seconds"]
    record["gbps"] = ck.bytes / result["seconds"] / 1e9
    record["check"] = result["check"]
    record["status"] = "ok" if check_passed(result["check"], len(ck.tensors)) else "FAILED"
    if record["status"] == "FAILED":
        record["error"] = check_summary(result["check"])
    return record


def run_contender(spec, ck, mode, opts):
    if spec.kind == "peer":
        return run_peer(spec, ck, mode, opts)
    return run_lris(spec, ck, mode, opts)


# --- summary -------------------------------------------------------------------------------------

def reference_for(name):
    spec = BY_NAME.get(name)
    if spec is None or spec.kind == "raw":
        return None
    return "lris-host" if spec.target == "host" else "lris"


def summarize(rounds, mode, names):
    """Per contender: median GB/s, spread, median per-round ratios, status; and the raw methods."""
    rows = [r for r in rounds if r["mode"] == mode]
    # The raw method best over the run (by its median): each round's rate of that one method is
    # a second ceiling, free of the upward pull of taking the best of several in each round.
    per_method = collections.defaultdict(list)
    for r in rows:
        raw = r["results"].get("raw")
        if raw and raw.get("status") == "ok":
            for method, rates in (raw.get("raw_methods") or {}).items():
                per_method[method].extend(rates)
    method_medians = {m: statistics.median(v) for m, v in per_method.items() if v}
    best_method = max(method_medians, key=method_medians.get) if method_medians else None

    def best_method_rate(r):
        raw = r["results"].get("raw")
        if not best_method or not raw or raw.get("status") != "ok":
            return None
        rates = (raw.get("raw_methods") or {}).get(best_method)
        return statistics.median(rates) if rates else None

    summary = {}
    for name in names:
        results = [(r, r["results"][name]) for r in rows if name in r["results"]]
        if not results:
            continue
        ok = [(r, res) for r, res in results if res.get("status") == "ok"]
        rates = [res["gbps"] for _, res in ok]
        ref = reference_for(name)
        to_lris, to_raw, to_method = [], [], []
        for r, res in ok:
            method_rate = best_method_rate(r)
            if name != "raw" and method_rate:
                to_method.append(res["gbps"] / method_rate)
            other = r["results"].get(ref) if ref else None
            if other and other.get("status") == "ok" and other.get("gbps"):
                to_lris.append(res["gbps"] / other["gbps"])
            raw = r["results"].get("raw")
            if name != "raw" and raw and raw.get("status") == "ok" and raw.get("gbps"):
                to_raw.append(res["gbps"] / raw["gbps"])
        counts = collections.Counter(res.get("status", "error") for _, res in results)
        checked = [res.get("check", {}).get("checked") for _, res in ok]
        errors = [res.get("error") for _, res in results if res.get("error")]
        summary[name] = {
            "rounds": len(results), "ok": counts["ok"], "failed": counts["FAILED"],
            "errors": counts["error"], "not_installed": counts["not installed"],
            "status": overall_status(counts, len(results)),
            "gbps_median": statistics.median(rates) if rates else None,
            "gbps_min": min(rates) if rates else None, "gbps_max": max(rates) if rates else None,
            "gbps": rates, "ratio_reference": ref,
            "ratio_to_lris_median": statistics.median(to_lris) if to_lris else None,
            "ratio_to_lris": to_lris,
            "ratio_to_raw_median": statistics.median(to_raw) if to_raw else None,
            "ratio_to_raw": to_raw,
            "ratio_to_best_method_median": statistics.median(to_method) if to_method else None,
            "ratio_to_best_method": to_method,
            "tensors_checked": checked[-1] if checked else None,
            "first_error": errors[0] if errors else None,
        }
    methods = collections.Counter()
    for r in rows:
        raw = r["results"].get("raw")
        if raw and raw.get("status") == "ok":
            methods[raw.get("raw_method")] += 1
    # lris-python's hand-off (from the load's last byte to the tensors handed out) and its views
    # (made during the reads), microseconds a tensor, per round.
    handoff, views = [], []
    for r in rows:
        res = r["results"].get("lris-python") or {}
        info = (res.get("worker") or {}).get("info") or {}
        if res.get("status") == "ok" and info.get("handoff_us_per_tensor") is not None:
            handoff.append(info["handoff_us_per_tensor"])
            views.append(info.get("views_us_per_tensor"))
    return {"contenders": summary,
            "handoff_us_per_tensor": handoff,
            "views_us_per_tensor": views,
            "raw_best_method_rounds": dict(methods),
            "raw_method_median_gbps": method_medians,
            "raw_best_method": best_method}


def overall_status(counts, n):
    """FAILED if any load was wrong; else ok, error or not installed, with counts."""
    if counts["FAILED"]:
        return f"FAILED {counts['FAILED']}/{n}"
    if counts["not installed"] == n:
        return "not installed"
    if counts["ok"] == n:
        return f"ok {n}/{n}"
    if counts["ok"] == 0:
        return f"error {n}/{n}"
    return f"ok {counts['ok']}/{n}, error {n - counts['ok']}/{n}"


def fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def table(mode, summary, names):
    header = ["contender", "mode", "GB/s", "min-max", "/ LRIS", "/ raw", "/ method", "tensors",
              "status"]
    lines = []
    for name in names:
        s = summary["contenders"].get(name)
        if s is None:
            continue
        spread = "-" if s["gbps_min"] is None else f"{s['gbps_min']:.2f}-{s['gbps_max']:.2f}"
        status = s["status"]
        if s["first_error"]:
            status += ": " + s["first_error"].splitlines()[0][:70]
        lines.append([name, mode, fmt(s["gbps_median"]), spread, fmt(s["ratio_to_lris_median"]),
                      fmt(s["ratio_to_raw_median"]), fmt(s["ratio_to_best_method_median"]),
                      str(s["tensors_checked"] or "-"), status])
    widths = [max(len(row[i]) for row in [header] + lines) for i in range(len(header) - 1)]
    out = []
    for row in [header] + lines:
        cells = [row[i].ljust(widths[i]) if i < 2 else row[i].rjust(widths[i]) for i in range(len(widths))]
        out.append("  ".join(cells + [row[-1]]))
    out.insert(1, "-" * len(out[0]))
    for method, count in sorted(summary["raw_best_method_rounds"].items(), key=lambda kv: -kv[1]):
        out.append(f"raw, best in {count} round(s): {method}")
    for method, rate in summary["raw_method_median_gbps"].items():
        out.append(f"raw, {method}: median {rate:.2f} GB/s")
    if summary["raw_best_method"]:
        out.append(f"/ method: per round, over that round's rate of the method best over the run "
                   f"({summary['raw_best_method']})")
    handoff = summary.get("handoff_us_per_tensor")
    if handoff:
        views = [v for v in summary.get("views_us_per_tensor") or [] if v is not None]
        out.append(f"lris-python, µs a tensor: hand-off after the load's last byte median "
                   f"{statistics.median(handoff):.2f} ({min(handoff):.2f}-{max(handoff):.2f}, "
                   f"{len(handoff)} round(s)); views made during the reads median "
                   + (f"{statistics.median(views):.2f}" if views else "-"))
    return "\n".join(out)


def print_tables(rounds, modes, names, note=""):
    for mode in modes:
        if not any(r["mode"] == mode for r in rounds):
            continue
        n = sum(1 for r in rounds if r["mode"] == mode)
        print(f"\n{mode}, {n} round(s){note}: median GB/s (tensor bytes / s, GB = 1e9), per-round "
              "ratios to LRIS's first load (lris; lris-host for host contenders) and to the best "
              "raw read")
        print(table(mode, summarize(rounds, mode, names), names))


# --- the run -------------------------------------------------------------------------------------

def write_json(path, doc):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, path)


def load_doc(path):
    try:
        with open(path) as f:
            doc = json.load(f)
        if isinstance(doc.get("runs"), list):
            return doc
    except (OSError, ValueError, AttributeError):
        pass
    return {"runs": []}


def versions():
    found = {}
    for label, dists in VERSION_DISTS.items():
        for dist in dists:
            try:
                found[label] = f"{dist} {importlib.metadata.version(dist)}"
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return found


def gpu_info():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        return out.stdout.strip().splitlines() if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def lris_info(opts):
    info = {"binary": opts.lris, "version": None, "commit": opts.commit}
    try:
        out = subprocess.run([opts.lris, "--version"], capture_output=True, text=True, timeout=30)
        info["version"] = (out.stdout or out.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        info["version"] = f"? {e}"
    if info["commit"] is None:
        try:
            out = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True,
                                 text=True, timeout=30)
            if out.returncode == 0:
                info["commit"] = out.stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            pass
    return info


def find_lris(path):
    found = shutil.which(path)
    if found:
        return os.path.abspath(found)
    built = os.path.join(REPO, "build", "tools", "lris", "lris")
    if path == "lris" and os.access(built, os.X_OK):
        return built
    return path


def install_wheels(wheel_dir):
    """pip-installs into PEER_SITE the wheels whose distribution is neither installed in the
    system nor already in PEER_SITE; then puts PEER_SITE first on sys.path and PYTHONPATH."""
    wheels = sorted(glob.glob(os.path.join(wheel_dir, "*.whl")))
    in_site = set()
    if os.path.isdir(PEER_SITE):
        for d in importlib.metadata.distributions(path=[PEER_SITE]):
            if d.metadata["Name"]:
                in_site.add(d.metadata["Name"].lower().replace("-", "_").replace(".", "_"))
    todo, present = [], {}
    for wheel in wheels:
        dist = os.path.basename(wheel).split("-")[0]
        if dist.lower().replace(".", "_") in in_site:
            present[dist] = PEER_SITE
            continue
        try:
            present[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            todo.append(wheel)
    if todo:
        env = dict(os.environ, PIP_BREAK_SYSTEM_PACKAGES="1", PIP_ROOT_USER_ACTION="ignore",
                   PIP_DISABLE_PIP_VERSION_CHECK="1")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                        "--no-compile", "--no-cache-dir", "--upgrade", "--target", PEER_SITE] + todo,
                       check=True, env=env)
    if PEER_SITE not in sys.path:
        sys.path.insert(0, PEER_SITE)
    importlib.invalidate_caches()
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != PEER_SITE]
    os.environ["PYTHONPATH"] = os.pathsep.join([PEER_SITE] + paths)
    return {"target": PEER_SITE, "installed": [os.path.basename(w) for w in todo], "present": present}


def ensure_checkpoint(opts):
    """Writes DIR when missing: into DIR.partial, renamed to DIR once complete."""
    if os.path.isdir(opts.dir):
        return None
    partial = opts.dir.rstrip("/") + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    print(f"writing a checkpoint of about {opts.size_gib} GiB to {opts.dir} ...", flush=True)
    cmd = [sys.executable, SCRIPT, "--worker", "make", partial, "--size-gib", str(opts.size_gib)]
    finished = run_process(cmd, child_env({}), max(opts.timeout, 1800))
    if finished.rc != 0:
        raise SystemExit(f"writing {opts.dir} failed:\n{finished.stderr_tail(30)}")
    os.rename(partial, opts.dir)
    return finished.wall


def ensure_fingerprints(ck, opts):
    if cached_fingerprints(ck) is not None:
        return {"path": fingerprint_path(ck.dir), "cached": True}
    print(f"fingerprinting {len(ck.tensors)} tensors from the files ...", flush=True)
    cmd = [sys.executable, SCRIPT, "--worker", "fingerprint", ck.dir,
           "--fingerprints", fingerprint_path(ck.dir)]
    finished = run_process(cmd, child_env({}), max(opts.timeout, 1800))
    if finished.rc != 0 or cached_fingerprints(ck) is None:
        raise SystemExit(f"fingerprinting {ck.dir} failed:\n{finished.stderr_tail(30)}")
    return {"path": fingerprint_path(ck.dir), "cached": False, "seconds": finished.wall}


def read_through(files):
    """Reads every shard once (as cat FILE >/dev/null): the page cache holds them."""
    start = time.perf_counter()
    buf = memoryview(bytearray(16 << 20))
    for path in files:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass
    return time.perf_counter() - start


def earlier_rounds(doc, mode, host, ckpt_dir):
    return sum(1 for run in doc["runs"] if run.get("hostname") == host
               and run.get("checkpoint", {}).get("path") == ckpt_dir
               for r in run.get("rounds", []) if r["mode"] == mode)


def progress(mode, index, name, record):
    rate = f"{record['gbps']:7.2f} GB/s" if record.get("gbps") else " " * 12
    note = record["status"]
    if record.get("error"):
        note += ": " + record["error"].splitlines()[0][:90]
    print(f"  {mode} round {index}  {name:<25} {rate}  {note}  ({record.get('wall_seconds', 0):.1f} s)",
          flush=True)


def run_rounds(opts, ck, doc, run, names):
    unavailable = {}
    for mode in opts.modes:
        specs = [BY_NAME[n] for n in names if not (BY_NAME[n].warm_only and mode == "cold")]
        first = opts.first_round if opts.first_round is not None else \
            earlier_rounds(doc, mode, run["hostname"], ck.dir)
        durations = []
        for k in range(opts.rounds):
            index = first + k
            expected = statistics.mean(durations) if durations else 0
            if opts.max_seconds and time.perf_counter() - opts.started + expected > opts.max_seconds:
                print(f"  {mode}: stopped after {k} round(s): the next would pass --max-seconds", flush=True)
                run["stopped"] = f"{mode} after {k} round(s) (--max-seconds {opts.max_seconds})"
                break
            round_start = time.perf_counter()
            order = rotated(specs, index)
            record = {"mode": mode, "round": index, "order": [s.name for s in order], "results": {},
                      "started": datetime.datetime.now().isoformat(timespec="seconds")}
            if mode == "warm":
                record["read_through_seconds"] = read_through(ck.files)
            run["rounds"].append(record)
            for spec in order:
                if spec.name in unavailable:
                    record["results"][spec.name] = dict(unavailable[spec.name], skipped=True)
                    continue
                result = run_contender(spec, ck, mode, opts)
                if result.pop("unavailable", False):
                    unavailable[spec.name] = {"status": result["status"], "error": result.get("error")}
                record["results"][spec.name] = result
                progress(mode, index, spec.name, result)
                write_json(opts.json, doc)
            durations.append(time.perf_counter() - round_start)
        run["summary"][mode] = summarize(run["rounds"], mode, names)
        write_json(opts.json, doc)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="contenders:\n" + "\n".join(
                                    f"  {c.name:<25} {c.about}" for c in CONTENDERS))
    p.add_argument("dir", nargs="?", help="checkpoint directory (written if missing)")
    p.add_argument("--rounds", type=int, default=5, help="rounds per mode (default 5)")
    p.add_argument("--modes", default="warm,cold", help="warm, cold or warm,cold (default)")
    p.add_argument("--contenders", default=",".join(c.name for c in CONTENDERS),
                   help="comma-separated subset (default: all)")
    p.add_argument("--lris", default="lris", help="the lris binary (default: lris on PATH)")
    p.add_argument("--commit", help="LRIS commit to record (default: git rev-parse HEAD if it works)")
    p.add_argument("--size-gib", type=float, default=7.6,
                   help="size of a checkpoint to write when DIR is missing (default 7.6: 8.1 GB)")
    p.add_argument("--json", help="JSON file the run is appended to (default DIR.compare.json)")
    p.add_argument("--install", metavar="WHEELDIR", help=f"install the missing wheels into {PEER_SITE}")
    p.add_argument("--timeout", type=float, default=300, help="seconds per load process (default 300)")
    p.add_argument("--max-seconds", type=float, default=0,
                   help="start no round that would end past this many seconds (0: no limit)")
    p.add_argument("--first-round", type=int,
                   help="rotation index of the first round (default: rounds of the mode already "
                        "in the JSON for this host and checkpoint)")
    p.add_argument("--report", metavar="JSON", help="print the tables over every run of a JSON file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--fingerprints", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker or args.report:
        return args
    if not args.dir:
        p.error("DIR is required")
    args.dir = os.path.abspath(args.dir)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in args.modes if m not in MODES]
    if bad or not args.modes:
        p.error(f"--modes: {bad or 'none'}; choose from {', '.join(MODES)}")
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    bad = [n for n in names if n not in BY_NAME]
    if bad or not names:
        p.error(f"--contenders: unknown {bad or 'none'}; known: {', '.join(BY_NAME)}")
    args.contenders = [c.name for c in CONTENDERS if c.name in names]
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    args.json = os.path.abspath(args.json or args.dir.rstrip("/") + ".compare.json")
    return args


def report(path):
    doc = load_doc(path)
    rounds = [r for run in doc["runs"] for r in run.get("rounds", [])]
    hosts = sorted({run.get("hostname", "?") for run in doc["runs"]})
    names = [c.name for c in CONTENDERS]
    names += sorted({n for r in rounds for n in r["results"]} - set(names))
    print(f"{path}: {len(doc['runs'])} run(s) on {', '.join(hosts)}")
    for run in doc["runs"]:
        commit = run.get("lris", {}).get("commit")
        print(f"  {run.get('date')} {run.get('hostname')} {run.get('gpu')} lris {commit}: "
              f"{len(run.get('rounds', []))} round(s)")
    print_tables(rounds, MODES, names, note=" over all runs")


def main(argv=None):
    started = time.perf_counter()
    args = parse_args(argv)
    args.started = started
    if args.worker:
        return run_worker(args)
    if args.report:
        report(args.report)
        return 0
    installed = install_wheels(args.install) if args.install else None
    args.lris = find_lris(args.lris)
    written = ensure_checkpoint(args)
    ck = Checkpoint(args.dir)
    fingerprints = ensure_fingerprints(ck, args)
    doc = load_doc(args.json)
    run = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
           "hostname": socket.gethostname(), "gpu": gpu_info(), "python": platform.python_version(),
           "lris": lris_info(args), "versions": versions(), "install": installed,
           "checkpoint": dict(ck.describe(), written_seconds=written), "fingerprints": fingerprints,
           "options": {"modes": args.modes, "rounds": args.rounds, "contenders": args.contenders,
                       "timeout": args.timeout, "max_seconds": args.max_seconds,
                       "euid": os.geteuid(), "argv": sys.argv},
           "contenders": {n: {"about": BY_NAME[n].about, "target": BY_NAME[n].target,
                              "env": BY_NAME[n].env} for n in args.contenders},
           "rounds": [], "summary": {}}
    doc["runs"].append(run)
    print(f"{ck.dir}: {len(ck.files)} shards, {len(ck.tensors)} tensors, {ck.bytes / 1e9:.2f} GB; "
          f"lris: {args.lris} ({run['lris']['version']}); GPU: {run['gpu']}", flush=True)
    if os.geteuid() != 0 and "cold" in args.modes:
        print("  not root: cold loads evict the shards with POSIX_FADV_DONTNEED only", flush=True)
    try:
        run_rounds(args, ck, doc, run, args.contenders)
    finally:
        write_json(args.json, doc)
    print_tables(run["rounds"], args.modes, args.contenders)
    print(f"\nJSON: {args.json} (run {len(doc['runs'])}); all runs: {SCRIPT} --report {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
