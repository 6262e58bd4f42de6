"""lris.torch: checkpoints loaded as torch tensors, and a model's blocks streamed through an
lris.Cache as it runs, for models bigger than GPU memory (a drop-in for diffusers' group
offloading and accelerate's cpu_offload).

    tensors = lris.torch.load("model/", device="cuda:0")   # {name: torch.Tensor}

    import lris, lris.torch
    cache = lris.Cache("cuda:0", budget="12G")
    streamed = lris.torch.stream(model.transformer_blocks, cache)
    model.to("cuda:0")   # the rest of the model; the blocks' weights stay in the cache
    out = model(x)       # each block's weights come in before its forward, ahead of it
    streamed.remove()    # the blocks' weights back in host memory, hooks gone

Each block becomes one unit of the cache: its parameters and buffers are copied into pinned
host memory, and the module keeps a placeholder of the right shape, dtype and device in their
place (one element, NaN for floating point types) and so holds no memory of its own. Before
the block's forward the unit is acquired on torch's current stream (the stream waits for its
copy; the host does not) and the parameters point into the cache's device memory; after it
(even when the forward raises) they point at the placeholders again and the lease is released
on that stream, so that an eviction waits for the block's kernels. The cache keeps what fits
of the budget resident between passes and brings the next blocks in ahead.

The weights are read-only while streamed: inference, not training.
"""

import time
import weakref

import torch

from . import _lris, _with_progress
from ._lris import InvalidArgument

__all__ = ["StreamedBlocks", "load", "stream"]


def _first_calls():
    """load's hand-off, once on a few bytes of host memory of torch's own: in a process,
    torch's first DLPack import, slice, typed view and as_strided each cost 0.02-0.15 ms (made
    on first use), which would otherwise fall on the first load's clock. On the CPU whatever
    torch's default device (meta, cuda), and only a warm-up: nothing it meets stops the import."""
    try:
        _as_torch(torch.empty(64, dtype=torch.uint8, device="cpu"), [
            (dt, dt, (2, 2), (2, 1), 8 // getattr(torch, dt).itemsize)
            for dt in ("bfloat16", "float16", "float32")])
    except Exception:  # noqa: BLE001  (a torch without one of these calls: load says so)
        pass


def load(path, device="cuda:0", select=None, dtype=None, verify=False, progress=None, tp=None,
         tp_plan=None):
    """lris.load, as {name: torch.Tensor} (the arguments are lris.load's; tp=(rank, size) loads
    one tensor-parallel rank's slices). The load's memory is one block: it is imported into
    torch once through DLPack and every tensor is a view of it, made while the bytes are read
    (the load runs on a thread of its own); the block is freed when the last view is gone."""
    return _with_progress(path, progress, lambda p: _hand_off(_lris.load_start(
        path, device=device, select=select, dtype=dtype, verify=verify, progress=p, tp=tp,
        tp_plan=tp_plan)))


def _hand_off(pending, times=None):
    """The tensors of a _PendingLoad as torch tensors: views of its block made while it reads,
    handed out once it is done. times (a dict), if given, gets "views": the seconds the views
    took."""
    block, entries, tensors = pending.placed()
    start = time.perf_counter()
    try:
        out, later = _as_torch(block, entries)
    except BaseException:
        # The views failed (or a Ctrl-C came): the reads stop, and the load ends here.
        pending.cancel()
        try:
            pending.wait()
        except BaseException:  # noqa: BLE001  (lris.Cancelled, or an error of the reads)
            pass
        raise
    if times is not None:
        times["views"] = time.perf_counter() - start
    pending.wait()  # raises the load's error; the views go with it
    for name in later:
        out[name] = torch.from_dlpack(tensors[name])
    return out


def _as_torch(block, entries):
    """Views of `block` in torch, by the entries of a _PendingLoad's placed(), and the names of
    the tensors that must come through DLPack on their own instead (in `out` as None until
    then): a type torch lacks or smaller than a byte, an offset not of whole elements."""
    base = torch.from_dlpack(block) if block.nbytes else None
    typed = {}
    out = {}
    later = []
    for name, dt, shape, strides, offset in entries:
        tdt = getattr(torch, dt, None)
        if offset < 0 or base is None or not isinstance(tdt, torch.dtype):
            out[name] = None
            later.append(name)
            continue
        b = typed.get(tdt)
        if b is None:
            b = typed[tdt] = base[:base.numel() // tdt.itemsize * tdt.itemsize].view(tdt)
        out[name] = b.as_strided(shape, strides, offset)
    return out, later


_first_calls()


class _Block:
    """One streamed module: its unit, where its tensors are held, and its lease while it runs."""

    __slots__ = ("module", "index", "unit", "slots", "placeholders", "tensors", "views",
                 "lease", "hooks", "devices")

    def __init__(self, module, index):
        self.module = module
        self.index = index
        self.unit = None
        self.slots = []         # (submodule, attribute, is_parameter, tensor index)
        self.placeholders = []  # by tensor index
        self.tensors = []       # (dtype, shape, nbytes) by tensor index
        self.views = {}         # the first tensor's address -> a view per tensor
        self.lease = None
        self.hooks = []
        self.devices = []       # where each tensor was before: remove() puts it back there


def _collect(block, seen, where):
    """The block's parameters and buffers, each tensor once: {name: tensor}, slots."""
    named, slots, index_of = {}, [], {}
    for prefix, mod in block.named_modules(remove_duplicate=False):
        for kind, table in ((True, mod._parameters), (False, mod._buffers)):
            for attr, t in table.items():
                if t is None:
                    continue
                key = id(t)
                name = f"{prefix}.{attr}" if prefix else attr
                if key in seen and seen[key] != where:
                    raise InvalidArgument(f"lris.torch.stream: {where} and {seen[key]} share the "
                                          f"tensor \"{name}\"; a tensor can be streamed with one "
                                          f"block only")
                seen[key] = where
                if key not in index_of:
                    index_of[key] = len(named)
                    named[name] = t
                slots.append((mod, attr, kind, index_of[key]))
    return named, slots


class StreamedBlocks:
    """The hooks and units of lris.torch.stream(); remove() puts the weights back."""

    _made = 0

    def __init__(self, blocks, cache):
        blocks = list(blocks)
        if not blocks:
            raise InvalidArgument("lris.torch.stream: no blocks given")
        for i, b in enumerate(blocks):
            if not isinstance(b, torch.nn.Module):
                raise InvalidArgument(f"lris.torch.stream: block {i} is a {type(b).__name__}, "
                                      f"not a torch.nn.Module")
        inside = {id(m): j for j, b in enumerate(blocks) for m in b.modules() if m is not b}
        for i, b in enumerate(blocks):
            if id(b) in inside:
                raise InvalidArgument(f"lris.torch.stream: block {i} is inside block "
                                      f"{inside[id(b)]}")
            for m in b.modules():  # its weights are another stream's placeholders now
                if getattr(m, "_lris_streamed", None) is not None:
                    raise InvalidArgument(f"lris.torch.stream: block {i} is streamed already "
                                          f"(by another lris.torch.stream); remove() that one "
                                          f"first")
        self.cache = cache
        StreamedBlocks._made += 1
        self._tag = f"{StreamedBlocks._made}.{id(self):x}"  # unit names of this stream only
        self.device = torch.device(cache.device)
        self._cuda = self.device.type == "cuda"
        self._arena = None           # the cache's memory as a uint8 torch tensor
        self._arena_address = 0
        self._blocks = []
        seen = {}
        scalars = {}
        try:
            for i, module in enumerate(blocks):
                b = _Block(module, i)
                named, b.slots = _collect(module, seen, f"block {i}")
                if not named:  # nothing to bring in: no unit, no hooks
                    continue
                sources = {}
                for name, t in named.items():
                    t = t.detach()
                    sources[name] = t if t.is_contiguous() else t.contiguous()
                    b.tensors.append((t.dtype, tuple(t.shape), t.numel() * t.element_size()))
                    b.devices.append(t.device)
                    if t.dtype not in scalars:
                        fill = float("nan") if t.is_floating_point() or t.is_complex() else 0
                        scalars[t.dtype] = torch.full((), fill, dtype=t.dtype, device=self.device)
                    b.placeholders.append(scalars[t.dtype].expand(t.shape))
                b.unit = cache.add(f"stream {self._tag} block {i} ({type(module).__name__})",
                                   sources)
                self._blocks.append(b)
                object.__setattr__(module, "_lris_streamed", self._tag)
                self._point(b, b.placeholders)  # the host copies are the cache's now
            cache.order([b.unit for b in self._blocks], cyclic=True)
            streams = cache.__dict__.setdefault("_streams", weakref.WeakSet())
            streams.add(self)  # close() refuses while this holds the blocks' weights
            for b in self._blocks:
                b.hooks.append(b.module.register_forward_pre_hook(
                    lambda m, args, b=b: self._enter(b)))
                b.hooks.append(b.module.register_forward_hook(
                    lambda m, args, out, b=b: self._exit(b), always_call=True))
        except BaseException:
            self._restore(None)  # every tensor back where it was
            raise

    # ---- while the model runs ---------------------------------------------------------------
    def _stream(self):
        return torch.cuda.current_stream(self.device).cuda_stream if self._cuda else None

    def _views(self, b, lease):
        address = self.cache.arena_address
        if address != self._arena_address:  # new memory after wake(): views of the old are stale
            for x in self._blocks:
                x.views.clear()
            self._arena = torch.from_dlpack(self.cache.arena())
            self._arena_address = address
        addresses = lease.addresses
        key = addresses[0] if addresses else 0
        views = b.views.get(key)
        if views is None:
            views = []
            for (dtype, shape, nbytes), a in zip(b.tensors, addresses):
                start = a - address
                views.append(self._arena[start:start + nbytes].view(dtype).view(shape))
            if len(b.views) >= 8:  # placements change rarely; keep the latest few
                b.views.pop(next(iter(b.views)))
            b.views[key] = views
        return views

    def _point(self, b, tensors):
        for mod, attr, is_parameter, k in b.slots:
            if is_parameter:
                mod._parameters[attr].data = tensors[k]
            else:
                mod._buffers[attr] = tensors[k]

    def _enter(self, b):
        if b.lease is not None:
            # The last forward never ended (interrupted by a BaseException, which torch's
            # always_call hooks do not see): its lease is let go on this stream first.
            self._exit(b)
        lease = self.cache.acquire(b.unit, self._stream())
        try:
            self._point(b, self._views(b, lease))
        except BaseException:
            lease.release()
            raise
        b.lease = lease

    def _exit(self, b):
        lease, b.lease = b.lease, None
        if lease is None:  # the pre-hook failed: nothing was pointed or leased
            return
        self._point(b, b.placeholders)
        lease.release(self._stream())

    # ---- the end ------------------------------------------------------------------------------
    def _restore(self, device):
        for b in self._blocks:
            for h in b.hooks:
                h.remove()
            b.hooks.clear()
            if b.unit is None:
                continue
            with self.cache.acquire(b.unit, self._stream()) as lease:
                tensors = [t.to(device if device is not None else d, copy=True)
                           for t, d in zip(self._views(b, lease), b.devices)]
                if self._cuda:
                    torch.cuda.current_stream(self.device).synchronize()
            self._point(b, tensors)
        for b in self._blocks:
            b.module.__dict__.pop("_lris_streamed", None)
        self._drop_views()
        self._blocks.clear()

    @property
    def active(self):
        """Whether the blocks' weights are in the cache (until remove())."""
        return bool(self._blocks)

    def remove(self, device=None):
        """Removes the hooks and gives each block its weights back, in memory of its own on
        `device` (default: where each was before streaming), copied from the cache. The cache
        keeps its units."""
        self._restore(None if device is None else torch.device(device))

    def sleep(self):
        """The cache's sleep() (its device memory given back, the units kept in host memory),
        after letting go of this stream's views of that memory."""
        self._drop_views()
        self.cache.sleep()

    def wake(self):
        """The cache's wake(): the units resident at sleep() copied back."""
        self.cache.wake()

    def _drop_views(self):
        for b in self._blocks:
            b.views.clear()
        self._arena = None
        self._arena_address = 0

    def stats(self):
        """The cache's counters (lris.Cache.stats())."""
        return self.cache.stats()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def stream(blocks, cache):
    """Streams `blocks` (torch modules run in this order each pass: a transformer's layers, a
    UNet's blocks) through `cache` (an lris.Cache): each block one unit, the order a cycle.
    Returns a StreamedBlocks; its remove() undoes it."""
    return StreamedBlocks(blocks, cache)
