#!/usr/bin/env python3
"""Checks that no header of a layer includes a header of a layer above it.

The layers, bottom up: core (config, error, concepts, element types) -> memory -> backends
(host, gpu, cuda, hip) -> io, sched -> exec -> transfer, formats -> pool -> cache, fanout -> the
rest. Prints each
include that points up, naming the file and line, and exits 1 when there is one.
"""
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1]) / "include" / "lris"
include = re.compile(r'^\s*#\s*include\s*[<"]lris/([^">]+)[">]')

# Where a header lives (its path under include/lris) -> the areas it must not include.
upper = {"memory", "backends", "gpu", "cuda", "hip", "io", "sched", "exec", "transfer",
         "formats", "cache", "pool", "fanout", "system"}
rules = [
    (("config.hpp", "error.hpp", "concepts/", "element/"), upper),
    (("memory/",), {"io", "sched", "exec", "transfer", "formats", "cache", "pool", "fanout"}),
    (("backends/", "gpu/", "cuda/", "hip/"), {"io", "sched", "exec", "transfer", "formats",
                                              "cache", "pool", "fanout"}),
    (("io/",), {"sched", "exec", "transfer", "formats", "cache", "pool", "fanout"}),
    (("sched/",), {"exec", "transfer", "formats", "cache", "pool", "fanout"}),
    (("exec/",), {"transfer", "formats", "cache", "pool", "fanout"}),
    (("transfer/", "formats/"), {"cache", "pool", "fanout"}),
    (("pool/",), {"cache", "fanout"}),
    (("cache/",), {"fanout"}),
    (("fanout/",), {"cache"}),
]

bad = 0
for path in sorted(root.rglob("*")):
    if not path.is_file():
        continue
    rel = path.relative_to(root).as_posix()
    forbidden = set()
    for prefixes, areas in rules:
        if rel.startswith(prefixes):
            forbidden |= areas
    if not forbidden:
        continue
    for n, line in enumerate(path.read_text().splitlines(), 1):
        m = include.match(line)
        if m and m.group(1).split("/")[0] in forbidden:
            print(f"include/lris/{rel}:{n}: includes lris/{m.group(1)}, a layer above it")
            bad += 1
print(f"layering: {bad} include(s) pointing up")
sys.exit(1 if bad else 0)
