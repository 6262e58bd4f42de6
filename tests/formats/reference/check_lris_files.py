#!/usr/bin/env python3
"""Reads the safetensors files LRIS wrote with the reference implementation.

    check_lris_files.py DIR

DIR/manifest.json (written by safetensors_reference_test) lists each file with the tensors and
metadata LRIS was given. For each file: the reference's reader must accept it and find every
tensor with its dtype, shape and bytes, and the metadata; and where the reference can write
the same tensors (not the 6-bit types, which its Python API cannot name), it must write the
same bytes, but for the order of the metadata keys (a Rust HashMap's, different in every
process). For each checkpoint, the index must place every tensor in the shard that holds it.
Exits 1 on any difference, naming the file and the tensor.
"""

import ctypes
import json
import os
import sys

import safetensors

# The spellings TensorSpec accepts; the 6-bit types have none.
CONSTRUCTOR = {
    "BOOL": "bool", "F4": "float4_e2m1fn_x2", "U8": "uint8", "I8": "int8",
    "F8_E5M2": "float8_e5m2", "F8_E4M3": "float8_e4m3fn", "F8_E8M0": "float8_e8m0fnu",
    "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2FNUZ": "float8_e5m2fnuz", "I16": "int16",
    "U16": "uint16", "F16": "float16", "BF16": "bfloat16", "I32": "int32", "U32": "uint32",
    "F32": "float32", "C64": "complex64", "F64": "float64", "I64": "int64", "U64": "uint64",
}

failures = []


def fail(where, what):
    failures.append(f"{where}: {what}")


def split(blob):
    n = int.from_bytes(blob[:8], "little")
    return blob[:8], blob[8:8 + n], blob[8 + n:]


def reserialize(entry):
    """The file the reference writes for the same tensors and metadata."""
    buffers, specs = [], {}
    for t in entry["tensors"]:
        data = bytes.fromhex(t["data"])
        buf = ctypes.create_string_buffer(data, len(data))
        buffers.append(buf)
        shape = t["shape"]
        if t["dtype"] == "F4":  # the storage shape: TensorSpec doubles the last dimension
            shape = shape[:-1] + [shape[-1] // 2]
        specs[t["name"]] = safetensors.TensorSpec(dtype=CONSTRUCTOR[t["dtype"]], shape=shape,
                                                  data_ptr=ctypes.addressof(buf),
                                                  data_len=len(data))
    return safetensors.serialize(specs, entry["metadata"])


def check_file(root, entry):
    where = entry["path"]
    with open(os.path.join(root, entry["path"]), "rb") as f:
        blob = f.read()
    try:
        read = {name: t for name, t in safetensors.deserialize(blob)}
    except safetensors.SafetensorError as e:
        fail(where, f"the reference refuses it: {e}")
        return
    expected = {t["name"]: t for t in entry["tensors"]}
    if set(read) != set(expected):
        fail(where, f"tensors {sorted(set(read) ^ set(expected))!r} are in one of the file and "
                    f"the manifest only")
    for name in sorted(set(read) & set(expected)):
        got, want = read[name], expected[name]
        if got["dtype"] != want["dtype"]:
            fail(where, f"tensor {name!r}: dtype {got['dtype']}, expected {want['dtype']}")
        if list(got["shape"]) != want["shape"]:
            fail(where, f"tensor {name!r}: shape {got['shape']}, expected {want['shape']}")
        if bytes(got["data"]) != bytes.fromhex(want["data"]):
            fail(where, f"tensor {name!r}: its {len(got['data'])} bytes differ")

    # deserialize() does not return the metadata: read it from the header it accepted.
    _, header, _ = split(blob)
    metadata = json.loads(header).get("__metadata__")
    if entry["metadata"] is None and metadata is not None:
        fail(where, f"__metadata__ {metadata!r} where none was given")
    elif entry["metadata"] is not None and metadata != entry["metadata"]:
        fail(where, f"__metadata__ {metadata!r}, expected {entry['metadata']!r}")

    if any(t["dtype"] not in CONSTRUCTOR for t in entry["tensors"]):
        return "read (the reference cannot write its dtypes)"
    if not entry["tensors"] and entry["metadata"] == {}:
        return "read (the reference writes this one as `{},\"__metadata__\":{}}`)"
    theirs = reserialize(entry)
    if len(entry["metadata"] or {}) <= 1:
        if theirs != blob:
            fail(where, f"the reference writes {len(theirs)} different bytes")
        return "read, identical to the reference's"
    # Several metadata keys: same length, same data, same header but for their order.
    (len_a, head_a, data_a), (len_b, head_b, data_b) = split(blob), split(theirs)
    pairs_a = json.loads(head_a, object_pairs_hook=list)
    pairs_b = json.loads(head_b, object_pairs_hook=list)
    if len_a != len_b or len(head_a) != len(head_b) or data_a != data_b:
        fail(where, "the reference writes a different length or data")
    elif [k for k, _ in pairs_a] != [k for k, _ in pairs_b]:
        fail(where, "the reference orders the tensors differently")
    elif [v for _, v in pairs_a[1:]] != [v for _, v in pairs_b[1:]] or \
            sorted(pairs_a[0][1]) != sorted(pairs_b[0][1]):
        fail(where, "the reference writes different header entries")
    return "read, identical to the reference's but for the metadata order"


def check_checkpoint(root, checkpoint, files):
    where = os.path.join(checkpoint["dir"], checkpoint["index"])
    with open(os.path.join(root, where)) as f:
        index = json.load(f)
    placed, total = {}, 0
    for entry in files:
        if os.path.dirname(entry["path"]) != checkpoint["dir"]:
            continue
        for t in entry["tensors"]:
            placed[t["name"]] = os.path.basename(entry["path"])
            total += len(t["data"]) // 2
    if index.get("weight_map") != placed:
        fail(where, "weight_map does not place every tensor in the shard that holds it")
    if index.get("metadata", {}).get("total_size") != total:
        fail(where, f"total_size {index.get('metadata')!r}, expected {total}")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = sys.argv[1]
    with open(os.path.join(root, "manifest.json")) as f:
        manifest = json.load(f)
    for entry in manifest["files"]:
        before = len(failures)
        verdict = check_file(root, entry)
        if len(failures) == before:
            print(f"{entry['path']}: {len(entry['tensors'])} tensors {verdict}")
    for checkpoint in manifest["checkpoints"]:
        check_checkpoint(root, checkpoint, manifest["files"])
    for line in failures:
        print(f"MISMATCH {line}", file=sys.stderr)
    print(f"check_lris_files.py: {len(manifest['files'])} files, {len(failures)} mismatches, "
          f"read by safetensors {safetensors.__version__}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
