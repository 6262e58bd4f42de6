#!/usr/bin/env bash
# Builds LRIS and does one job with it. Installs missing Debian packages first (apt-get).
#
#   scripts/build.sh demo    build the `lris` command and run `lris demo`
#   scripts/build.sh test    build everything and run the tests (the safetensors ones against
#                            the reference package, which pip installs in
#                            BUILD_DIR/reference-python; the Python module's, built for that
#                            interpreter, with pytest); build the downstream example against
#                            an installed lris and through add_subdirectory; run the tests again
#                            under AddressSanitizer + UBSan, and the concurrent ones under
#                            ThreadSanitizer
#   scripts/build.sh deps    only install the packages (those of `test`)
#
# Environment: BUILD_DIR (default build), JOBS (default: number of cores).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
build=${BUILD_DIR:-build}
# The test programs share a precompiled header (tests/CMakeLists.txt); ccache caches their
# objects only when told that a header's macros and __TIME__ do not change them.
export CCACHE_SLOPPINESS=${CCACHE_SLOPPINESS:-pch_defines,time_macros}
jobs=${JOBS:-$(nproc)}

packages=(cmake make g++ pkg-config ccache catch2 libfmt-dev libcli11-dev liburing-dev
          libnuma-dev libhwloc-dev libxxhash-dev libssl-dev libdlpack-dev nlohmann-json3-dev
          libbenchmark-dev python3-venv python3-dev)

# The HIP backend's compiler and runtime (the tests build lris::hip too; its tests skip without
# an AMD GPU), and clang with libFuzzer for the fuzz targets.
hip_packages=(hipcc libamdhip64-dev clang-15 libclang-common-15-dev)

install_deps() {  # install_deps [extra packages...]
  local missing=()
  for p in "${packages[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "build.sh: installing ${missing[*]}"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

configure() {  # configure DIR [cmake args...]
  local dir=$1
  shift
  cmake -S . -B "$dir" -DCMAKE_CXX_COMPILER_LAUNCHER=ccache "$@" >/dev/null
}

case "${1:-}" in
  deps)
    install_deps "${hip_packages[@]}"
    ;;
  demo)
    install_deps
    configure "$build" -DCMAKE_BUILD_TYPE=Release
    cmake --build "$build" -j "$jobs" --target lris_tool
    "$build/lris" demo
    ;;
  test)
    install_deps "${hip_packages[@]}"
    # The reference implementation the safetensors tests compare with, from PyPI. The tests
    # need it: no network is an error here, not a skipped test.
    reference_python=$(realpath -m "$build")/reference-python/bin/python
    [ -x "$reference_python" ] || python3 -m venv "$(dirname "$(dirname "$reference_python")")"
    # The same interpreter builds and tests the Python module: nanobind, NumPy and pytest too.
    "$reference_python" -m pip install --quiet --disable-pip-version-check safetensors==0.8.0 \
      "nanobind>=2.9" numpy pytest || {
      echo "build.sh: cannot install safetensors 0.8.0, nanobind, numpy and pytest from PyPI" \
        "(pip failed above)" >&2
      exit 1
    }
    configure "$build" -DCMAKE_BUILD_TYPE=Release -DLRIS_ENABLE_HIP=ON \
      -DLRIS_REFERENCE_PYTHON="$reference_python" \
      -DLRIS_BUILD_PYTHON=ON -DPython_EXECUTABLE="$reference_python"
    cmake --build "$build" -j "$jobs"
    (cd "$build" && ctest --output-on-failure -j "$jobs")

    # Downstream project, both ways: installed package, and add_subdirectory.
    prefix="$PWD/$build/install"
    cmake --install "$build" --prefix "$prefix" >/dev/null
    cmake -S examples/downstream -B "$build/downstream-installed" \
      -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null
    cmake --build "$build/downstream-installed" -j "$jobs"
    "$build/downstream-installed/downstream"
    cmake -S examples/downstream -B "$build/downstream-subdir" -DLRIS_SOURCE_DIR="$PWD" \
      -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null
    cmake --build "$build/downstream-subdir" -j "$jobs"
    "$build/downstream-subdir/downstream"

    # The host tests again under ASan + UBSan, the safetensors reference tests among them.
    configure "$build-asan" -DCMAKE_BUILD_TYPE=Debug -DLRIS_SANITIZE=address,undefined \
      -DLRIS_ENABLE_CUDA=OFF -DLRIS_ENABLE_HIP=OFF -DLRIS_BUILD_TOOLS=OFF -DLRIS_BUILD_BENCHMARKS=OFF -DLRIS_BUILD_EXAMPLES=OFF \
      -DLRIS_REFERENCE_PYTHON="$reference_python"
    cmake --build "$build-asan" -j "$jobs"
    (cd "$build-asan" && ctest --output-on-failure -j "$jobs" -E '^must_fail_')

    # The parsers under libFuzzer (clang, ASan + UBSan), for a bounded time each.
    CXX=clang++-15 configure "$build-fuzz" -DCMAKE_BUILD_TYPE=Debug -DLRIS_FUZZ=ON \
      -DLRIS_SANITIZE=address,undefined -DLRIS_ENABLE_CUDA=OFF -DLRIS_ENABLE_HIP=OFF \
      -DLRIS_BUILD_TOOLS=OFF -DLRIS_BUILD_BENCHMARKS=OFF -DLRIS_BUILD_EXAMPLES=OFF
    cmake --build "$build-fuzz" -j "$jobs" --target safetensors_header_fuzz
    "$build-fuzz/tests/fuzz/safetensors_header_fuzz" -max_total_time=60 -print_final_stats=1 \
      -seed=1 2>&1 | tail -n 12

    # The concurrent parts (streams, thread pool, transfers) under ThreadSanitizer.
    configure "$build-tsan" -DCMAKE_BUILD_TYPE=Debug -DLRIS_SANITIZE=thread \
      -DLRIS_ENABLE_CUDA=OFF -DLRIS_ENABLE_HIP=OFF -DLRIS_BUILD_TOOLS=OFF -DLRIS_BUILD_BENCHMARKS=OFF -DLRIS_BUILD_EXAMPLES=OFF
    cmake --build "$build-tsan" -j "$jobs" --target host_backend_test transfer_copy_test transfer_completion_test exec_thread_pool_test exec_plan_test exec_staging_ring_test io_faults_test io_file_transfer_test sched_broker_test cache_residency_test cache_capture_test \
      sched_semaphore_test sched_shared_semaphore_test sched_monitor_test fanout_load_test fanout_nccl_route_test
    (cd "$build-tsan" && ctest --output-on-failure -j "$jobs" -R '^(host_backend_test|transfer_copy_test|transfer_completion_test|exec_thread_pool_test|exec_plan_test|exec_staging_ring_test|io_faults_test|io_file_transfer_test|sched_semaphore_test|sched_shared_semaphore_test|sched_monitor_test|sched_broker_test|cache_residency_test|cache_capture_test|fanout_load_test|fanout_nccl_route_test)$')
    ;;
  *)
    sed -n '2,13p' "$0"
    exit 2
    ;;
esac
