"""lris.torch.stream on the CPU (a cache of host memory): outputs identical to the model run
without it, a second stream of the same blocks refused, and a cache that refuses to close while
a stream holds its blocks' weights. Skipped where torch is missing (CI has none); the GPU's own
cases are in test_cuda_cache.py."""

import pytest

torch = pytest.importorskip("torch")

import lris  # noqa: E402
import lris.torch  # noqa: E402


class Block(torch.nn.Module):
    def __init__(self, n=64):
        super().__init__()
        self.lin = torch.nn.Linear(n, n)
        self.register_buffer("shift", torch.randn(n))

    def forward(self, x):
        return torch.tanh(self.lin(x) + self.shift)


def blocks_and_input(seed):
    torch.manual_seed(seed)
    return [Block() for _ in range(6)], torch.randn(3, 64)


def run(blocks, x):
    with torch.no_grad():
        for b in blocks:
            x = b(x)
    return x


def test_outputs_identical_through_a_cache_smaller_than_the_blocks():
    blocks, x = blocks_and_input(1)
    want = run(blocks, x)
    block_bytes = sum(t.numel() * t.element_size() for t in blocks[0].state_dict().values())
    with lris.Cache("cpu", budget=2 * block_bytes + 4096) as cache:
        streamed = lris.torch.stream(blocks, cache)
        for _ in range(3):
            assert torch.equal(run(blocks, x), want)
        assert cache.stats()["evictions"] > 0
        streamed.remove()
    assert torch.equal(run(blocks, x), want)  # their own weights again


def test_a_second_stream_of_the_same_blocks_is_refused():
    blocks, x = blocks_and_input(2)
    want = run(blocks, x)
    with lris.Cache("cpu", budget="1M") as cache:
        streamed = lris.torch.stream(blocks, cache)
        with pytest.raises(lris.InvalidArgument, match="block 1 is streamed already"):
            lris.torch.stream([Block(), blocks[3]], cache)
        with pytest.raises(lris.InvalidArgument, match="block 0 is streamed already"):
            lris.torch.stream([torch.nn.Sequential(blocks[1])], cache)  # inside another module
        assert torch.equal(run(blocks, x), want)
        streamed.remove()
        again = lris.torch.stream(blocks, cache)  # removed: free to stream again
        assert torch.equal(run(blocks, x), want)
        again.remove()
    assert torch.equal(run(blocks, x), want)


def test_a_cache_holding_streamed_weights_refuses_to_close():
    blocks, x = blocks_and_input(3)
    want = run(blocks, x)
    cache = lris.Cache("cpu", budget="1M")
    streamed = lris.torch.stream(blocks, cache)
    with pytest.raises(lris.InvalidArgument, match="1 lris.torch.stream holds the weights of its "
                                                   r"blocks here; remove\(\) gives them back"):
        cache.close()
    assert torch.equal(run(blocks, x), want)  # nothing lost
    streamed.remove()
    cache.close()
    assert torch.equal(run(blocks, x), want)
