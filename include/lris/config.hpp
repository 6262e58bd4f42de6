#pragma once
/// @file
/// @brief Feature tests and attribute macros used throughout LRIS.
///
/// Feature tests are function-like macros, so `#if LRIS_HAS_CUDX()` (a typo) fails to compile
/// instead of silently being false.

#include <lris/version.hpp>

#ifndef LRIS_WITH_CUDA
#define LRIS_WITH_CUDA 0
#endif
#ifndef LRIS_WITH_HIP
#define LRIS_WITH_HIP 0
#endif

/// Symbols that must stay one per process even when LRIS is linked statically into several
/// shared objects built with hidden visibility (the process's default context).
#define LRIS_EXPORT __attribute__((visibility("default")))

/// True in translation units that link `lris::cuda`.
#define LRIS_HAS_CUDA() (LRIS_WITH_CUDA)
/// True in translation units that link `lris::hip`.
#define LRIS_HAS_HIP() (LRIS_WITH_HIP)

#if defined(__GNUC__) || defined(__clang__)
#define LRIS_LIKELY(x) __builtin_expect(!!(x), 1)
#define LRIS_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define LRIS_LIKELY(x) (x)
#define LRIS_UNLIKELY(x) (x)
#endif
