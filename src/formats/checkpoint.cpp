#include <lris/formats/checkpoint.hpp>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <lris/error.hpp>

#include "fail.hpp"

namespace lris::safetensors {

namespace {

using detail::fail;

// A shard name from an index, checked lexically: relative, inside the directory. Links in the
// directory are the directory owner's and are followed (a Hugging Face cache links every shard
// to a blob outside); a name the index makes up is not.
std::filesystem::path confined(const std::filesystem::path& dir, const std::string& name,
                               const std::filesystem::path& index) {
  const std::filesystem::path rel(name);
  bool escapes = name.empty() || rel.is_absolute() || rel.has_root_name() ||
                 rel.has_root_directory() || name.find('\0') != std::string::npos;
  for (const auto& part : rel) escapes = escapes || part == "..";
  if (escapes) {
    fail(error_kind::shard_outside_directory, index,
         fmt::format("shard name \"{}\" leaves the model directory {}", name, dir.string()));
  }
  return dir / rel;
}

}  // namespace

checkpoint::checkpoint(const std::filesystem::path& path) : path_(path) {
  std::error_code ec;
  const bool is_dir = std::filesystem::is_directory(path, ec);
  if (!is_dir) {
    add_shard(path);
    index_tensors();
    return;
  }
  const auto index_path = path / index_name;
  if (!std::filesystem::exists(index_path, ec)) {
    // No index: every *.safetensors file, by name.
    std::vector<std::filesystem::path> files;
    for (const auto& e : std::filesystem::directory_iterator(path)) {
      if (e.path().extension() == ".safetensors" && !e.is_directory()) files.push_back(e.path());
    }
    if (files.empty()) {
      fail(error_kind::no_safetensors, path,
           fmt::format("the directory has neither {} nor any *.safetensors file", index_name));
    }
    std::sort(files.begin(), files.end());
    for (const auto& f : files) add_shard(f);
    index_tensors();
    return;
  }

  nlohmann::json index;
  {
    std::error_code ec;
    if (std::filesystem::is_directory(index_path, ec)) {
      fail(error_kind::index_invalid, index_path, "a directory, not a file");
    }
    std::ifstream in(index_path, std::ios::binary);
    if (!in) throw io_error(errno, fmt::format("cannot open {}", index_path.string()));
    std::string text;
    try {
      text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    } catch (const std::exception& e) {  // an error as the stream reads (EIO, EISDIR)
      throw io_error(errno != 0 ? errno : EIO,
                     fmt::format("cannot read {}: {}", index_path.string(), e.what()));
    }
    if (in.bad()) throw io_error(EIO, fmt::format("cannot read {}", index_path.string()));
    index = nlohmann::json::parse(text, nullptr, false);
  }
  if (index.is_discarded() || !index.is_object()) {
    fail(error_kind::index_invalid, index_path, "not a JSON object");
  }
  const auto map = index.find("weight_map");
  if (map == index.end() || !map->is_object()) {
    fail(error_kind::index_invalid, index_path, "no \"weight_map\" object");
  }
  // Shards in the order they first appear, each with the tensors the index places there.
  std::vector<std::string> order;
  std::map<std::string, std::set<std::string>> placed;
  for (const auto& [tensor, file] : map->items()) {
    if (!file.is_string()) {
      fail(error_kind::index_invalid, index_path,
           fmt::format("tensor \"{}\": the shard is not a string", tensor));
    }
    const auto& name = file.get_ref<const std::string&>();
    if (placed.find(name) == placed.end()) order.push_back(name);
    placed[name].insert(tensor);
  }
  if (order.empty()) fail(error_kind::index_invalid, index_path, "the weight_map is empty");
  std::sort(order.begin(), order.end());
  for (const auto& name : order) {
    const auto file = confined(path, name, index_path);
    if (!std::filesystem::is_regular_file(file, ec)) {
      fail(error_kind::shard_missing, index_path,
           fmt::format("shard \"{}\" does not exist ({})", name, file.string()));
    }
    add_shard(file);
    const auto& want = placed[name];
    const auto& got = shards_.back().header.tensors;
    for (const auto& t : got) {
      if (want.count(t.name) == 0) {
        fail(error_kind::index_mismatch, index_path,
             fmt::format("shard \"{}\" holds tensor \"{}\", which the index does not place there",
                         name, t.name));
      }
    }
    if (got.size() != want.size()) {
      for (const auto& t : want) {
        if (shards_.back().header.find(t) == nullptr) {
          fail(error_kind::index_mismatch, index_path,
               fmt::format("tensor \"{}\" is placed in shard \"{}\", which does not hold it", t,
                           name));
        }
      }
    }
  }
  index_tensors();
}

void checkpoint::add_shard(const std::filesystem::path& file) {
  io::file f(file);
  header h = read_header(f);
  shards_.push_back({std::move(f), std::move(h)});
}

void checkpoint::index_tensors() {
  for (std::size_t s = 0; s < shards_.size(); ++s) {
    for (const auto& t : shards_[s].header.tensors) {
      const tensor_ref ref{&t, s};
      if (!by_name_.emplace(t.name, tensors_.size()).second) {
        const auto& first = shards_[tensors_[by_name_[t.name]].shard].file.path();
        fail(error_kind::duplicate_tensor, shards_[s].file.path(),
             fmt::format("tensor \"{}\" is also in {}", t.name, first.string()));
      }
      tensors_.push_back(ref);
      data_bytes_ += t.bytes();
    }
  }
}

const tensor_ref* checkpoint::find(std::string_view name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

const std::map<std::string, std::string>& checkpoint::metadata() const noexcept {
  return shards_.front().header.metadata;
}

}  // namespace lris::safetensors
