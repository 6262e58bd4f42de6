"""The host-to-device ceiling the offloading benchmarks measure against."""
import statistics
import time


def pinned_h2d_gbps(torch, dev):
    """One 1 GiB pinned tensor copied to `dev`: the median GB/s of 10 copies after 2."""
    src = torch.empty(1 << 30, dtype=torch.uint8).pin_memory()
    dst = torch.empty(1 << 30, dtype=torch.uint8, device=dev)
    rates = []
    for _ in range(12):
        torch.cuda.synchronize()
        t = time.perf_counter()
        dst.copy_(src, non_blocking=True)
        torch.cuda.synchronize()
        rates.append((1 << 30) / (time.perf_counter() - t) / 1e9)
    return statistics.median(rates[2:])
