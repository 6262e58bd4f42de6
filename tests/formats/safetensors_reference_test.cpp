// safetensors files written by the reference implementation (make_reference_files.py, with the
// `safetensors` package): LRIS reads every tensor of them byte for byte, and writes every one
// of them again with the same bytes. It writes those files, and some only it can write, for
// check_lris_files.py to read with the reference.
//
// Environment: LRIS_SAFETENSORS_REFERENCE, the directory make_reference_files.py wrote (without
// it the test is skipped, exit 77); LRIS_SAFETENSORS_WRITTEN, where to write (default
// ./safetensors_written).
#define CATCH_CONFIG_RUNNER
// GCC 12 warns of uninitialized std::function members inside std::regex's compiler (which
// Catch2 instantiates here) in sanitizer builds: GCC bug 105562, not this file's code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <lris/formats/load.hpp>
#include <lris/transfer/auto_select.hpp>
#include <lris/formats/safetensors.hpp>
#include <lris/formats/safetensors_writer.hpp>

#include "support/random_bytes.hpp"

namespace st = lris::safetensors;
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

fs::path reference_dir() { return std::getenv("LRIS_SAFETENSORS_REFERENCE"); }

fs::path written_dir() {
  const char* dir = std::getenv("LRIS_SAFETENSORS_WRITTEN");
  return dir != nullptr ? fs::path(dir) : fs::current_path() / "safetensors_written";
}

std::vector<std::byte> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  REQUIRE(in);
  std::vector<char> v{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  std::vector<std::byte> out(v.size());
  std::memcpy(out.data(), v.data(), v.size());
  return out;
}

std::vector<std::byte> read_range(const fs::path& p, std::uint64_t offset, std::uint64_t n) {
  std::ifstream in(p, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  std::vector<std::byte> out(static_cast<std::size_t>(n));
  in.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(n));
  REQUIRE(in.gcount() == static_cast<std::streamsize>(n));
  return out;
}

std::vector<std::byte> from_hex(const std::string& hex) {
  std::vector<std::byte> out(hex.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<std::byte>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  }
  return out;
}

std::string to_hex(std::span<const std::byte> bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (const std::byte b : bytes) {
    out += digits[static_cast<unsigned>(b) >> 4];
    out += digits[static_cast<unsigned>(b) & 15];
  }
  return out;
}

// One file of a manifest: its tensors and metadata as they were handed to the writer.
struct file_entry {
  std::string path;
  std::vector<std::string> names;
  std::vector<lris::dtype> types;
  std::vector<std::vector<std::uint64_t>> shapes;
  std::vector<std::vector<std::byte>> data;
  std::optional<st::metadata_map> metadata;  // nullopt: none given
  bool reference_reads_it = true;

  [[nodiscard]] std::vector<st::tensor_view> views() const {
    std::vector<st::tensor_view> out;
    for (std::size_t i = 0; i < names.size(); ++i) out.push_back({names[i], types[i], shapes[i], data[i]});
    return out;
  }
  [[nodiscard]] std::vector<std::byte> serialized() const {
    return metadata ? st::serialize(views(), *metadata) : st::serialize(views());
  }
  [[nodiscard]] json to_json() const {
    json tensors = json::array();
    for (std::size_t i = 0; i < names.size(); ++i) {
      tensors.push_back({{"name", names[i]}, {"dtype", lris::to_string(types[i])},
                         {"shape", shapes[i]}, {"data", to_hex(data[i])}});
    }
    return {{"path", path}, {"metadata", metadata ? json(*metadata) : json(nullptr)},
            {"tensors", tensors}};
  }
};

file_entry parse_entry(const json& j) {
  file_entry f;
  f.path = j.at("path").get<std::string>();
  for (const json& t : j.at("tensors")) {
    f.names.push_back(t.at("name").get<std::string>());
    const auto type = lris::dtype_from_string(t.at("dtype").get<std::string>());
    REQUIRE(type.has_value());
    f.types.push_back(*type);
    f.shapes.push_back(t.at("shape").get<std::vector<std::uint64_t>>());
    f.data.push_back(from_hex(t.at("data").get<std::string>()));
  }
  if (!j.at("metadata").is_null()) f.metadata = j.at("metadata").get<st::metadata_map>();
  f.reference_reads_it = j.value("reference_reads_it", true);
  return f;
}

json manifest() {
  std::ifstream in(reference_dir() / "manifest.json");
  REQUIRE(in);
  return json::parse(in);
}

// The members of the JSON object of strings at `text[at]` ('{'): each "key":"value" as
// written, and where the object ends.
std::vector<std::string> members_of(std::string_view text, std::size_t& at) {
  REQUIRE(text.at(at) == '{');
  std::vector<std::string> members;
  auto string_end = [&](std::size_t i) {  // i at the opening quote; returns past the closing
    REQUIRE(text.at(i) == '"');
    for (++i; text.at(i) != '"'; ++i) {
      if (text[i] == '\\') ++i;
    }
    return i + 1;
  };
  ++at;
  while (text.at(at) != '}') {
    const std::size_t begin = at;
    at = string_end(at);
    REQUIRE(text.at(at) == ':');
    at = string_end(at + 1);
    members.emplace_back(text.substr(begin, at - begin));
    if (text.at(at) == ',') ++at;
  }
  ++at;
  return members;
}

// `ours` is `reference` but for the order of the __metadata__ members, which the reference
// takes from a Rust HashMap: a different one in every process.
void check_same_but_metadata_order(std::span<const std::byte> ours,
                                   std::span<const std::byte> reference) {
  REQUIRE(ours.size() == reference.size());
  const std::string_view a(reinterpret_cast<const char*>(ours.data()), ours.size());
  const std::string_view b(reinterpret_cast<const char*>(reference.data()), reference.size());
  constexpr std::string_view start = R"({"__metadata__":)";
  REQUIRE(a.substr(8, start.size()) == start);
  REQUIRE(b.substr(8, start.size()) == start);
  std::size_t end_a = 8 + start.size();
  std::size_t end_b = end_a;
  auto ma = members_of(a, end_a);
  auto mb = members_of(b, end_b);
  REQUIRE(end_a == end_b);
  CHECK(a.substr(0, 8) == b.substr(0, 8));
  CHECK(a.substr(end_a) == b.substr(end_b));
  CHECK(std::is_sorted(ma.begin(), ma.end()));  // LRIS writes them by key
  std::sort(mb.begin(), mb.end());
  CHECK(ma == mb);
}

void check_rebuilt(const file_entry& f, std::span<const std::byte> ours,
                   std::span<const std::byte> reference) {
  if (f.metadata && f.metadata->size() > 1) {
    check_same_but_metadata_order(ours, reference);
  } else {
    CHECK(ours.size() == reference.size());
    CHECK((std::equal(ours.begin(), ours.end(), reference.begin(), reference.end())));
  }
}

}  // namespace

TEST_CASE("reference files: every tensor read as written", "[formats][safetensors][reference]") {
  const json m = manifest();
  REQUIRE(m.at("files").size() >= 10);
  for (const json& j : m.at("files")) {
    const file_entry f = parse_entry(j);
    CAPTURE(f.path);
    const fs::path path = reference_dir() / f.path;
    if (!f.reference_reads_it) {
      // The reference's own reader refuses it; so does LRIS's.
      REQUIRE_THROWS_AS(st::read_header(path), st::error);
      continue;
    }
    const st::header h = st::read_header(path);
    CHECK(h.file_bytes == j.at("bytes").get<std::uint64_t>());
    CHECK(h.metadata == f.metadata.value_or(st::metadata_map{}));
    REQUIRE(h.tensors.size() == f.names.size());
    for (std::size_t i = 0; i < f.names.size(); ++i) {
      CAPTURE(f.names[i]);
      const st::tensor_info* t = h.find(f.names[i]);
      REQUIRE(t != nullptr);
      CHECK(t->type == f.types[i]);
      CHECK(t->shape == f.shapes[i]);
      REQUIRE(t->bytes() == f.data[i].size());
      CHECK(read_range(path, h.file_offset(*t), t->bytes()) == f.data[i]);
    }
  }
}

TEST_CASE("reference files: the loader gives every tensor byte-identical",
          "[formats][safetensors][reference][load]") {
  const json m = manifest();
  lris::pipeline<lris::auto_select, lris::host_backend> p;
  // Every tensor of `f` in `loaded`, byte for byte.
  auto check = [](const file_entry& f, const st::loaded_checkpoint& loaded) {
    for (std::size_t i = 0; i < f.names.size(); ++i) {
      CAPTURE(f.names[i]);
      const st::loaded_tensor* t = loaded.find(f.names[i]);
      REQUIRE(t != nullptr);
      CHECK(t->type == f.types[i]);
      CHECK(t->shape == f.shapes[i]);
      REQUIRE(t->bytes == f.data[i].size());
      CHECK(std::equal(t->data, t->data + t->bytes, f.data[i].begin()));
    }
  };
  for (const json& j : m.at("files")) {
    const file_entry f = parse_entry(j);
    if (!f.reference_reads_it) continue;
    CAPTURE(f.path);
    const st::checkpoint ck(reference_dir() / f.path);
    for (const auto where : {st::load_target_memory::host, st::load_target_memory::device}) {
      const auto loaded = st::load(p, ck, {}, where);
      CHECK(loaded.tensors.size() == f.names.size());
      check(f, loaded);
    }
  }
  // The sharded checkpoints, through their index.
  for (const json& c : m.at("checkpoints")) {
    const fs::path dir = reference_dir() / c.at("dir").get<std::string>();
    CAPTURE(dir);
    const st::checkpoint ck(dir);
    const auto loaded = st::load(p, ck);
    std::size_t expected = 0;
    for (const json& j : m.at("files")) {
      if ((reference_dir() / j.at("path").get<std::string>()).parent_path() != dir) continue;
      const file_entry f = parse_entry(j);
      expected += f.names.size();
      check(f, loaded);
    }
    CHECK(expected > 0);
    CHECK(loaded.tensors.size() == expected);
  }
}

TEST_CASE("reference files: LRIS writes the same bytes", "[formats][safetensors][reference]") {
  const json m = manifest();
  const fs::path out = written_dir();
  json written = {{"files", json::array()}, {"checkpoints", json::array()}};
  for (const json& j : m.at("files")) {
    const file_entry f = parse_entry(j);
    CAPTURE(f.path);
    const std::vector<std::byte> reference = read_bytes(reference_dir() / f.path);
    const std::vector<std::byte> ours = f.serialized();
    if (!f.reference_reads_it) {
      // No tensors and metadata={}: the reference writes `{},"__metadata__":{}}`; LRIS
      // writes the JSON it means, as long.
      CHECK(ours.size() == reference.size());
      CHECK(ours != reference);
      CHECK_NOTHROW(st::parse_header(ours, ours.size(), f.path));
    } else {
      check_rebuilt(f, ours, reference);
    }

    // The same through save_file, for check_lris_files.py.
    const fs::path path = out / f.path;
    fs::create_directories(path.parent_path());
    const auto views = f.views();
    (void)(f.metadata ? st::save_file(path, views, *f.metadata) : st::save_file(path, views));
    CHECK(read_bytes(path) == ours);
    written["files"].push_back(f.to_json());
  }

  // Files only LRIS writes: the 6-bit types, which the reference's Python API cannot name;
  // and a mix of dtypes, shapes and names from a seed.
  file_entry f6;
  f6.path = "f6.safetensors";
  f6.metadata = st::metadata_map{{"format", "pt"}};
  const std::vector<std::pair<lris::dtype, std::vector<std::uint64_t>>> f6_tensors = {
      {lris::dtype::F6_E2M3, {4}},     {lris::dtype::F6_E3M2, {2, 8}}, {lris::dtype::F6_E2M3, {0}},
      {lris::dtype::F4, {6}},          {lris::dtype::U8, {3}},         {lris::dtype::F6_E3M2, {3, 4}},
      {lris::dtype::BOOL, {2}}};
  for (std::size_t i = 0; i < f6_tensors.size(); ++i) {
    const auto& [type, shape] = f6_tensors[i];
    std::uint64_t elements = 1;
    for (const auto d : shape) elements *= d;
    f6.names.push_back("t" + std::to_string(i) + "." + std::string(lris::to_string(type)));
    f6.types.push_back(type);
    f6.shapes.push_back(shape);
    f6.data.push_back(lris::test::random_bytes(elements * lris::bits_of(type) / 8, 100 + i));
    if (type == lris::dtype::BOOL) {
      for (auto& b : f6.data.back()) b &= std::byte{1};
    }
  }

  file_entry mixed;
  mixed.path = "mixed.safetensors";
  mixed.metadata = st::metadata_map{{"format", "pt"}, {"\xc3\xa9", "\t\"\\"}, {"z", ""}};
  std::mt19937_64 rng(7);
  for (int i = 0; i < 60; ++i) {
    lris::dtype type = lris::all_dtypes[rng() % lris::all_dtypes.size()];
    if (type == lris::dtype::F6_E2M3 || type == lris::dtype::F6_E3M2) type = lris::dtype::F16;
    std::vector<std::uint64_t> shape(rng() % 4);
    for (auto& d : shape) d = rng() % 5;
    if (type == lris::dtype::F4 && !shape.empty()) shape.back() *= 2;
    if (type == lris::dtype::F4 && shape.empty()) shape = {2};
    std::uint64_t elements = 1;
    for (const auto d : shape) elements *= d;
    mixed.names.push_back(fmt::format("block.{}.{}", rng() % 1000, i));
    mixed.types.push_back(type);
    mixed.shapes.push_back(shape);
    mixed.data.push_back(lris::test::random_bytes(elements * lris::bits_of(type) / 8, 200 + i));
    if (type == lris::dtype::BOOL) {
      for (auto& b : mixed.data.back()) b &= std::byte{1};
    }
  }
  for (const file_entry* f : {&f6, &mixed}) {
    const fs::path path = out / f->path;
    (void)st::save_file(path, f->views(), *f->metadata);
    CHECK(read_bytes(path) == f->serialized());
    written["files"].push_back(f->to_json());
  }

  // The checkpoints: the shards are files above; the index as transformers writes it
  // (json.dumps(indent=2, sort_keys=True) and a newline), which nlohmann's dump(2) matches.
  for (const json& c : m.at("checkpoints")) {
    const fs::path dir = reference_dir() / c.at("dir").get<std::string>();
    const std::vector<std::byte> index_bytes = read_bytes(dir / c.at("index").get<std::string>());
    const json index = json::parse(index_bytes.begin(), index_bytes.end());
    json weight_map = json::object();
    std::uint64_t total = 0;
    for (const json& j : m.at("files")) {
      const fs::path shard = reference_dir() / j.at("path").get<std::string>();
      if (shard.parent_path() != dir) continue;
      for (const json& t : j.at("tensors")) {
        weight_map[t.at("name").get<std::string>()] = shard.filename().string();
        total += t.at("data").get<std::string>().size() / 2;
      }
    }
    CHECK(index.at("weight_map") == weight_map);
    CHECK(index.at("metadata").at("total_size").get<std::uint64_t>() == total);
    const json ours = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    const std::string text = ours.dump(2) + "\n";
    CHECK(text == std::string(reinterpret_cast<const char*>(index_bytes.data()), index_bytes.size()));
    std::ofstream(out / c.at("dir").get<std::string>() / c.at("index").get<std::string>(),
                  std::ios::binary)
        << text;
    written["checkpoints"].push_back(c);
  }
  std::ofstream(out / "manifest.json") << written.dump(1);
}

int main(int argc, char** argv) {
  const char* dir = std::getenv("LRIS_SAFETENSORS_REFERENCE");
  if (dir == nullptr || !fs::exists(fs::path(dir) / "manifest.json")) {
    std::printf("skipped: no reference files (LRIS_SAFETENSORS_REFERENCE=%s; configure with "
                "-DLRIS_REFERENCE_PYTHON=<a python with safetensors 0.8.0>)\n",
                dir != nullptr ? dir : "unset");
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
