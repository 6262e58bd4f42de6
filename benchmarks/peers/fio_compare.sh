#!/usr/bin/env bash
# File -> host, cold, against fio (Debian package) with the same block size (1 MiB), queue depth
# (64) and engine (io_uring, O_DIRECT), on the same file, in one run. Run as root (the page
# cache is dropped before each read). usage: fio_compare.sh LRIS_BINARY DIR [SIZE] [REPEATS]
set -euo pipefail
lris=$1 dir=$2 size=${3:-1G} repeats=${4:-5}
file="$dir/lris-bench-disk.bin"
[ -f "$file" ] || "$lris" bench --disk-only --disk "$dir" --disk-size "$size" --disk-repeats 1 >/dev/null
rates=()
for _ in $(seq "$repeats"); do
  sync; echo 3 > /proc/sys/vm/drop_caches
  rates+=("$(fio --name=seq --filename="$file" --rw=read --bs=1M --iodepth=64 --ioengine=io_uring \
            --direct=1 --size="$(stat -c %s "$file")" --output-format=json 2>/dev/null |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["jobs"][0]["read"]["bw_bytes"]/1e9)')")
done
fio_median=$(printf '%s\n' "${rates[@]}" | sort -g | sed -n "$(( (repeats + 1) / 2 ))p")
lris_cold=$("$lris" bench --disk-only --disk "$dir" --disk-file "$file" --disk-repeats "$repeats" --json |
            python3 -c 'import json,sys
rows = json.load(sys.stdin)["tables"][0]["rows"]
print([r["gbps"] for r in rows if r["name"] == "lris read_file -> host, cold"][0])')
echo "fio (io_uring, O_DIRECT, 1 MiB, QD 64), median of $repeats: $fio_median GB/s (runs: ${rates[*]})"
echo "lris read_file -> host, cold, median of $repeats: $lris_cold GB/s"
python3 -c "print(f'ratio: {$lris_cold / $fio_median:.2f}')"
