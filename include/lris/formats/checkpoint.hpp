#pragma once
/// @file
/// @brief safetensors::checkpoint: one safetensors file, or a model directory of shards (with
/// `model.safetensors.index.json`, or every `*.safetensors` in it), opened and validated as a
/// whole. Shard names from the index are confined to the model directory.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <lris/formats/safetensors.hpp>
#include <lris/io/file.hpp>

namespace lris::safetensors {

/// @brief One file of a checkpoint: open, with its validated header.
struct shard {
  io::file file;
  safetensors::header header;
};

/// @brief A tensor of a checkpoint and the shard that holds it.
struct tensor_ref {
  const tensor_info* info = nullptr;
  std::size_t shard = 0;
};

class checkpoint {
 public:
  /// @brief The index file a sharded model directory holds.
  static constexpr std::string_view index_name = "model.safetensors.index.json";

  /// @brief Opens `path`: a .safetensors file, or a directory. A directory is read through its
  /// index when it has one (every shard it names must exist inside the directory and hold
  /// exactly the tensors the index places there), else as every `*.safetensors` file in it,
  /// by name. Every header is validated.
  /// @throws safetensors::error (a bad file, index or shard name: the kind says which rule,
  /// the message names the file and the tensor); lris::io_error when a file cannot be read.
  explicit checkpoint(const std::filesystem::path& path);

  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }
  [[nodiscard]] const std::vector<shard>& shards() const noexcept { return shards_; }
  /// @brief Every tensor, shard by shard, each shard's in file order (the order that reads
  /// the files sequentially).
  [[nodiscard]] const std::vector<tensor_ref>& tensors() const noexcept { return tensors_; }
  /// @brief The tensor called `name`; nullptr when there is none.
  [[nodiscard]] const tensor_ref* find(std::string_view name) const;
  /// @brief The `__metadata__` of the first shard (writers repeat it in every shard).
  [[nodiscard]] const std::map<std::string, std::string>& metadata() const noexcept;
  /// @brief Bytes of tensor data over every shard.
  [[nodiscard]] std::uint64_t data_bytes() const noexcept { return data_bytes_; }
  /// @brief Where `t`'s bytes start in its shard's file.
  [[nodiscard]] std::uint64_t file_offset(const tensor_ref& t) const noexcept {
    return shards_[t.shard].header.file_offset(*t.info);
  }

 private:
  void add_shard(const std::filesystem::path& file);
  void index_tensors();

  std::filesystem::path path_;
  std::vector<shard> shards_;
  std::vector<tensor_ref> tensors_;
  std::unordered_map<std::string_view, std::size_t> by_name_;  // into tensors_
  std::uint64_t data_bytes_ = 0;
};

}  // namespace lris::safetensors
