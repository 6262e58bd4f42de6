#!/usr/bin/env python3
"""Writes safetensors files with the reference implementation, for safetensors_reference_test.

    make_reference_files.py DIR

DIR/manifest.json describes every file written: its tensors (name, dtype, shape, bytes in
hex, in the order they were handed to the reference) and its metadata (null when none was
given), so that the C++ test can check and rebuild each file without Python. DIR/sharded is a
checkpoint in two shards with a model.safetensors.index.json as transformers writes it.

Only the `safetensors` package is needed (its low-level API: TensorSpec over raw memory, here
ctypes buffers), pinned to the version whose bytes LRIS reproduces.
"""

import ctypes
import hashlib
import json
import os
import sys

import safetensors

VERSION = "0.8.0"

# The format's spelling -> (the spelling TensorSpec accepts, bits per element). F6_E2M3 and
# F6_E3M2 are missing: the Python API of 0.8.0 has no name for them (its reader knows them;
# check_lris_files.py covers them with files LRIS writes).
DTYPES = {
    "BOOL": ("bool", 8),
    "F4": ("float4_e2m1fn_x2", 4),
    "U8": ("uint8", 8),
    "I8": ("int8", 8),
    "F8_E5M2": ("float8_e5m2", 8),
    "F8_E4M3": ("float8_e4m3fn", 8),
    "F8_E8M0": ("float8_e8m0fnu", 8),
    "F8_E4M3FNUZ": ("float8_e4m3fnuz", 8),
    "F8_E5M2FNUZ": ("float8_e5m2fnuz", 8),
    "I16": ("int16", 16),
    "U16": ("uint16", 16),
    "F16": ("float16", 16),
    "BF16": ("bfloat16", 16),
    "I32": ("int32", 32),
    "U32": ("uint32", 32),
    "F32": ("float32", 32),
    "C64": ("complex64", 64),
    "F64": ("float64", 64),
    "I64": ("int64", 64),
    "U64": ("uint64", 64),
}


def nbytes(dtype, shape):
    n = 1
    for d in shape:
        n *= d
    bits = n * DTYPES[dtype][1]
    assert bits % 8 == 0, (dtype, shape)
    return bits // 8


def pseudo_random(seed, n, dtype):
    data = hashlib.shake_256(seed.encode()).digest(n) if n else b""
    if dtype == "BOOL":  # what a bool tensor holds
        data = bytes(b & 1 for b in data)
    return data


class Tensors:
    """Tensors of one file, with the memory TensorSpec points into kept alive."""

    def __init__(self, file):
        self.file = file
        self.entries = []  # (name, dtype, logical shape, bytes)

    def add(self, name, dtype, shape, data=None):
        if data is None:
            data = pseudo_random(f"{self.file}/{name}", nbytes(dtype, shape), dtype)
        assert len(data) == nbytes(dtype, shape), name
        self.entries.append((name, dtype, list(shape), data))
        return self

    def specs(self):
        buffers, specs = [], {}
        for name, dtype, shape, data in self.entries:
            buf = ctypes.create_string_buffer(data, len(data))
            buffers.append(buf)
            # float4_e2m1fn_x2 takes the storage shape (two values a byte, along the last
            # dimension) and doubles its last dimension into the logical shape.
            storage = shape[:-1] + [shape[-1] // 2] if dtype == "F4" else shape
            specs[name] = safetensors.TensorSpec(dtype=DTYPES[dtype][0], shape=storage,
                                                 data_ptr=ctypes.addressof(buf),
                                                 data_len=len(data))
        return specs, buffers

    def manifest(self):
        return [{"name": n, "dtype": d, "shape": s, "data": b.hex()}
                for n, d, s, b in self.entries]


def write(out, manifest, tensors, metadata, note=""):
    specs, buffers = tensors.specs()
    path = os.path.join(out, tensors.file)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    safetensors.serialize_file(specs, path, metadata)
    del buffers
    with open(path, "rb") as f:
        written = f.read()
    entry = {"path": tensors.file, "metadata": metadata, "tensors": tensors.manifest(),
             "bytes": len(written), "sha256": hashlib.sha256(written).hexdigest()}
    try:
        safetensors.deserialize(written)
        entry["reference_reads_it"] = True
    except safetensors.SafetensorError:
        entry["reference_reads_it"] = False
    if note:
        entry["note"] = note
    manifest["files"].append(entry)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    if safetensors.__version__ != VERSION:
        sys.exit(f"safetensors {safetensors.__version__} is installed; the reference files "
                 f"are those of {VERSION}")
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    manifest = {"safetensors": safetensors.__version__, "files": [], "checkpoints": []}

    t = Tensors("all_dtypes.safetensors")
    for dtype in DTYPES:
        t.add(f"{dtype.lower()}.weight", dtype, [3, 8])
        t.add(f"{dtype.lower()}.bias", dtype, [6])
    write(out, manifest, t, {"format": "pt"})

    t = Tensors("scalars_and_empty.safetensors")
    for dtype in ["F32", "I64", "BOOL", "BF16", "F8_E4M3", "C64", "U8"]:
        t.add(f"scalar.{dtype}", dtype, [])
    t.add("empty.f16", "F16", [0])
    t.add("empty.f32", "F32", [3, 0, 2])
    t.add("empty.u8", "U8", [0, 0])
    t.add("empty.f4.rows", "F4", [2, 0])
    t.add("empty.f4.cols", "F4", [0, 4])
    t.add("between", "F32", [2, 2])
    write(out, manifest, t, None)

    # serde_json's escapes: \" \\ \b \f \n \r \t, \u00xx for other controls; nothing else.
    controls = "".join(chr(c) for c in range(0x20))
    t = Tensors("escapes.safetensors")
    t.add(controls, "U8", [2])
    t.add('quote " backslash \\ slash / del \x7f', "U8", [2])
    t.add("\u00e9t\u00e9 \u65e5\u672c\u8a9e \u2028\u2029 \ufeff \U0001F600", "U8", [2])
    t.add("", "U8", [1])
    t.add("\u00e9", "F32", [1])
    write(out, manifest, t, {"k\"\\\n\u00e9" + controls: "v\t\u2028\U0001F600\x01\x7f/"})

    # More than one key: the reference writes them in an order that changes from run to run.
    t = Tensors("metadata_keys.safetensors")
    t.add("w", "BF16", [4, 4])
    write(out, manifest, t, {"format": "pt", "author": "Zo\u00eb", "\u65e5\u672c": "\u8a9e",
                             "ctrl": "\x00\x1f", "empty": "", "": "empty key"})

    # Bytewise name order within a dtype: "" < "0" < "B" < "Z" < "_" < "a" < "a.1" < "a.10" <
    # "a.2" < "z" < "\u00e9"; and the dtype first.
    t = Tensors("name_order.safetensors")
    for name in ["z", "a.2", "a.10", "a.1", "a", "_", "Z", "B", "0", "", "\u00e9",
                 "layer.0.weight"]:
        t.add(name, "U8", [3])
        t.add(name + ".f", "F32", [1])
    write(out, manifest, t, None)

    t = Tensors("empty_metadata.safetensors")
    t.add("t", "I32", [3])
    write(out, manifest, t, {})

    write(out, manifest, Tensors("no_tensors.safetensors"), None)
    write(out, manifest, Tensors("no_tensors_metadata.safetensors"), {"format": "pt"})
    write(out, manifest, Tensors("no_tensors_empty_metadata.safetensors"), {},
          note="the reference writes `{},\"__metadata__\":{}}`, which is not JSON")

    # A checkpoint in two shards, as transformers' save_pretrained writes it.
    layers = Tensors("sharded/model-00001-of-00002.safetensors")
    layers.add("model.embed_tokens.weight", "BF16", [64, 16])
    for i in range(2):
        for proj in ["q_proj", "k_proj", "v_proj", "o_proj"]:
            layers.add(f"model.layers.{i}.self_attn.{proj}.weight", "BF16", [16, 16])
        layers.add(f"model.layers.{i}.input_layernorm.weight", "F32", [16])
    head = Tensors("sharded/model-00002-of-00002.safetensors")
    for i in range(2):
        head.add(f"model.layers.{i}.mlp.up_proj.weight", "BF16", [32, 16])
        head.add(f"model.layers.{i}.mlp.down_proj.weight", "BF16", [16, 32])
    head.add("model.norm.weight", "F32", [16])
    head.add("lm_head.weight", "BF16", [64, 16])
    head.add("lm_head.scale", "F8_E8M0", [64])
    weight_map, total = {}, 0
    for shard in (layers, head):
        write(out, manifest, shard, {"format": "pt"})
        for name, _, _, data in shard.entries:
            weight_map[name] = os.path.basename(shard.file)
            total += len(data)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    with open(os.path.join(out, "sharded", "model.safetensors.index.json"), "w") as f:
        f.write(json.dumps(index, indent=2, sort_keys=True) + "\n")
    manifest["checkpoints"].append({"dir": "sharded", "index": "model.safetensors.index.json"})

    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"make_reference_files.py: {len(manifest['files'])} files by safetensors "
          f"{safetensors.__version__} in {out}")


if __name__ == "__main__":
    main()
