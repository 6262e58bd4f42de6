// libFuzzer target: the safetensors header parser on arbitrary bytes. Every input must either
// parse into a header whose tensors tile the data exactly, or be refused with a
// safetensors::error; anything else (a crash, another exception, a sanitizer report) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include <lris/formats/safetensors.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  try {
    const auto h = lris::safetensors::parse_header(bytes, size, "fuzz-input");
    std::uint64_t at = 0;
    for (const auto& t : h.tensors) {
      if (t.begin != at || t.end < t.begin) std::abort();
      at = t.end;
    }
    if (h.data_offset + at != size) std::abort();
  } catch (const lris::safetensors::error&) {
  }
  return 0;
}
