#pragma once
/// @brief The safetensors sources' one way to refuse a file: lris::safetensors::error, naming it.

#include <filesystem>
#include <string>

#include <fmt/format.h>

#include <lris/formats/safetensors.hpp>

namespace lris::safetensors::detail {

[[noreturn]] inline void fail(error_kind kind, const std::filesystem::path& file,
                              const std::string& what) {
  throw error(kind, fmt::format("safetensors {}: {}", file.string(), what));
}

}  // namespace lris::safetensors::detail
