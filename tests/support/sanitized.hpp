#pragma once
// Whether this test program was built with AddressSanitizer or ThreadSanitizer. Long
// single-threaded property checks take fewer random runs there: the sanitizers look for memory
// errors and races, which a few runs of the same code show, and each run costs ten times more.

namespace lris::test {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool sanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool sanitized = true;
#else
inline constexpr bool sanitized = false;
#endif
#else
inline constexpr bool sanitized = false;
#endif

}  // namespace lris::test
