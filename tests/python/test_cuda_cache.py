"""lris.Cache on a GPU with torch, and lris.torch.stream: units used on torch streams (the default
one and a side stream) under a budget smaller than the model, every result checked; a small
transformer whose outputs are identical with and without streaming. Skipped where torch, a CUDA
GPU or LRIS's CUDA backend is missing (CI has none of them)."""

import copy

import pytest

import lris

torch = pytest.importorskip("torch")
if not torch.cuda.is_available() or not lris.info()["devices"]:
    pytest.skip("no CUDA GPU for torch and LRIS", allow_module_level=True)

import lris.torch  # noqa: E402  (torch is there)

DEV = torch.device("cuda:0")


def random_units(n, seed):
    g = torch.Generator().manual_seed(seed)
    return [{"w": torch.randn(512, 1024, generator=g).to(torch.bfloat16),
             "b": torch.randn(1024, generator=g),
             "i": torch.randint(-100, 100, (33,), generator=g, dtype=torch.int64)}
            for _ in range(n)]


@pytest.mark.parametrize("side_stream", [False, True])
def test_thousand_uses_under_eviction_without_a_mismatch(side_stream):
    units = random_units(10, seed=1)
    resident = [{n: t.to(DEV) for n, t in u.items()} for u in units]
    expect = torch.stack([u["w"].float().sum(dim=0) + u["b"] + u["i"].sum() for u in resident])
    with lris.Cache("cuda:0", budget=3 * (1024 * 1024 + 8192) + 4096) as cache:
        ids = [cache.add(f"u{k}", u) for k, u in enumerate(units)]
        cache.order(ids)
        stream = torch.cuda.Stream(DEV) if side_stream else torch.cuda.current_stream(DEV)
        out = torch.empty(1000, 1024, device=DEV)
        with torch.cuda.stream(stream):
            for it in range(1000):
                k = it % 10 if it < 700 else (it * 7) % 10  # a cycle, then out of order
                with cache.acquire(ids[k], stream) as lease:
                    w = torch.from_dlpack(lease["w"])
                    b = torch.from_dlpack(lease["b"])
                    i = torch.from_dlpack(lease["i"])
                    out[it] = w.float().sum(dim=0) + b + i.sum()
        stream.synchronize()
        want = torch.stack([expect[it % 10 if it < 700 else (it * 7) % 10] for it in range(1000)])
        mismatches = (out != want).any(dim=1).sum().item()
        assert mismatches == 0
        s = cache.stats()
        assert s["acquires"] == 1000 and s["evictions"] > 500
        assert s["high_water_bytes"] <= s["budget_bytes"]


def test_lease_tensors_are_zero_copy_views_of_the_arena():
    units = random_units(2, seed=2)
    with lris.Cache("cuda:0", budget="64M") as cache:
        for k, u in enumerate(units):
            cache.add(f"u{k}", u)
        arena = torch.from_dlpack(cache.arena())
        assert arena.device == DEV and arena.numel() == cache.budget
        with cache.acquire("u1", torch.cuda.current_stream()) as lease:
            w = torch.from_dlpack(lease["w"])
            assert w.data_ptr() == lease.addresses[0] == arena.data_ptr() + lease.offsets[0]
            assert torch.equal(w.cpu(), units[1]["w"])
            assert lease["w"].device == "cuda:0" and lease["w"].dtype == "bfloat16"


def test_sources_on_the_gpu_and_sleep_wake():
    units = random_units(3, seed=3)
    with lris.Cache("cuda:0", budget="64M") as cache:
        ids = [cache.add(f"u{k}", {n: t.to(DEV) for n, t in u.items()}) for k, u in enumerate(units)]
        cache.sleep()
        cache.wake()
        for k in ids:
            with cache.acquire(k) as lease:  # the legacy default stream
                assert torch.equal(torch.from_dlpack(lease["w"]).cpu(), units[k]["w"])


def small_transformer(seed):
    torch.manual_seed(seed)
    layers = torch.nn.ModuleList(
        torch.nn.TransformerEncoderLayer(256, 8, 1024, dropout=0.0, batch_first=True)
        for _ in range(6))

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Linear(64, 256)
            self.layers = layers
            self.head = torch.nn.Linear(256, 10)

        def forward(self, x):
            x = self.embed(x)
            for layer in self.layers:
                x = layer(x)
            return self.head(x)

    return Model().eval()


def test_a_streamed_transformer_gives_the_same_outputs():
    model = small_transformer(7)
    reference = copy.deepcopy(model).to(DEV)
    originals = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = torch.randn(4, 128, 64, device=DEV)
    with torch.no_grad():
        want = reference(x)
    layer_bytes = sum(p.numel() * 4 for p in model.layers[0].parameters())
    with lris.Cache("cuda:0", budget=int(2.5 * layer_bytes) + (1 << 20)) as cache:
        streamed = lris.torch.stream(model.layers, cache)
        model.to(DEV)  # the rest; the layers' placeholders are on the device already
        assert all(p.numel() == 0 or p.untyped_storage().nbytes() <= 4
                   for p in model.layers.parameters())  # the model holds no layer weights
        side = torch.cuda.Stream(DEV)
        with torch.no_grad():
            for _ in range(3):
                assert torch.equal(model(x), want)
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                got = model(x)
            torch.cuda.current_stream().wait_stream(side)
            assert torch.equal(got, want)
        s = streamed.stats()
        assert s["acquires"] == 4 * 6 and s["evictions"] > 0
        assert s["high_water_bytes"] <= s["budget_bytes"]
        streamed.remove()
    for n, p in model.layers.named_parameters():
        assert p.device.type == "cpu"
        assert torch.equal(p, originals[f"layers.{n}"])
    with torch.no_grad():  # hooks gone: the model runs from its own weights again
        model.layers.to(DEV)
        assert torch.equal(model(x), want)


def test_a_forward_that_raises_releases_its_block():
    model = small_transformer(8)
    with lris.Cache("cuda:0", budget="64M") as cache:
        streamed = lris.torch.stream(model.layers, cache)
        model.to(DEV)
        with torch.no_grad(), pytest.raises(RuntimeError):
            model.layers[0](torch.randn(2, 3, 7, device=DEV))  # wrong width
        # The block's lease ended with the forward: the cache can sleep (through the streamed
        # blocks, which let go of their cached views of its memory first; the cache itself
        # refuses while they live).
        with pytest.raises(lris.InvalidArgument, match="tensor over the cache's memory is alive"):
            cache.sleep()
        streamed.sleep()
        streamed.wake()
        with torch.no_grad():
            model(torch.randn(2, 5, 64, device=DEV))
        streamed.remove()


def test_stream_errors():
    model = small_transformer(9)
    with lris.Cache("cuda:0", budget="64M") as cache:
        with pytest.raises(lris.InvalidArgument, match="no blocks"):
            lris.torch.stream([], cache)
        with pytest.raises(lris.InvalidArgument, match="block 1 is a int"):
            lris.torch.stream([model.layers[0], 3], cache)
        with pytest.raises(lris.InvalidArgument, match="block 1 is inside block 0"):
            lris.torch.stream([model.layers, model.layers[2]], cache)
        tied = torch.nn.Linear(4, 4)
        other = torch.nn.Linear(4, 4)
        other.weight = tied.weight
        with pytest.raises(lris.InvalidArgument, match="share the tensor \"weight\""):
            lris.torch.stream([tied, other], cache)
        assert tied.weight.device.type == "cpu" and torch.isfinite(tied.weight).all()


def test_a_streamed_model_sleeps_and_wakes():
    model = small_transformer(10)
    reference = copy.deepcopy(model).to(DEV)
    x = torch.randn(2, 16, 64, device=DEV)
    with torch.no_grad():
        want = reference(x)
    with lris.Cache("cuda:0", budget="64M") as cache:
        streamed = lris.torch.stream(model.layers, cache)
        model.to(DEV)
        with torch.no_grad():
            assert torch.equal(model(x), want)
            streamed.sleep()  # the device memory given back, the views of it dropped first
            assert cache.asleep
            streamed.wake()
            assert torch.equal(model(x), want)
        streamed.remove()


def test_lease_tensors_taken_on_another_stream_wait_for_the_copy():
    units = random_units(6, seed=11)
    resident = [u["w"].to(DEV).float().sum() for u in units]
    with lris.Cache("cuda:0", budget=2 * (1024 * 1024 + 8192) + 4096) as cache:
        ids = [cache.add(f"u{k}", u) for k, u in enumerate(units)]
        cache.order(ids)
        copier, user = torch.cuda.Stream(DEV), torch.cuda.Stream(DEV)
        got = []
        for it in range(300):
            k = it % 6
            lease = cache.acquire(ids[k], copier)  # the copy ordered before `copier` only
            with torch.cuda.stream(user):  # torch.from_dlpack passes `user`: it waits too
                got.append(torch.from_dlpack(lease["w"]).float().sum())
            lease.release(user)  # the last use is on `user`
        torch.cuda.synchronize()
        assert all(torch.equal(g, resident[it % 6]) for it, g in enumerate(got))
