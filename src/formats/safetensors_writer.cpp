#include <lris/formats/safetensors_writer.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <iterator>
#include <numeric>
#include <string_view>
#include <unordered_set>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <lris/error.hpp>
#include <lris/io/engine.hpp>
#include <lris/io/file.hpp>

namespace lris::safetensors {

namespace {

using json = nlohmann::json;

// A JSON string as serde_json writes it: nlohmann escapes the same characters the same way
// (\" \\ \b \f \n \r \t, other controls as \u00xx in lower case, nothing else), and refuses
// what is not UTF-8, which the reference cannot hold in a Rust String either.
std::string escaped(const std::string& s) { return json(s).dump(); }

// For messages: the name as the header would spell it, or with U+FFFD where it is not UTF-8.
std::string printable(const std::string& s) {
  return json(s).dump(-1, ' ', false, json::error_handler_t::replace);
}

[[noreturn]] void refuse(std::string_view where, const std::string& what) {
  throw invalid_argument(fmt::format("{}: {}", where, what));
}

std::uint64_t checked_bytes(const tensor_to_write& t, std::string_view where) {
  auto bad = [&](const std::string& what) {
    refuse(where, fmt::format("tensor {}: {}", printable(t.name), what));
  };
  const std::uint64_t bits = bits_of(t.type);
  if (bits == 0) bad(fmt::format("dtype value {} is not a dtype", static_cast<int>(t.type)));
  std::uint64_t elements = 1;
  for (const std::uint64_t d : t.shape) {
    if (d != 0 && elements > UINT64_MAX / d) {
      bad(fmt::format("shape [{}] has more than 2^64 elements", fmt::join(t.shape, ",")));
    }
    elements *= d;
  }
  if (elements > UINT64_MAX / bits) {
    bad(fmt::format("{} elements of {} bits overflow 64 bits", elements, bits));
  }
  if (elements * bits % 8 != 0) {
    bad(fmt::format("{} elements of {} ({} bits each) do not end on a byte boundary", elements,
                    to_string(t.type), bits));
  }
  const std::uint64_t bytes = elements * bits / 8;
  if (t.bytes != bytes) {
    bad(fmt::format("{} bytes given but {} [{}] holds {}", t.bytes, to_string(t.type),
                    fmt::join(t.shape, ","), bytes));
  }
  return bytes;
}

// The layout of plan_file; `metadata` null for none; `where` starts every message.
layout plan(std::span<const tensor_to_write> tensors, const metadata_map* metadata,
            std::string_view where) {
  std::unordered_set<std::string_view> names;
  for (const tensor_to_write& t : tensors) {
    if (t.name == "__metadata__") {
      // The reference writes it, as a second "__metadata__" key that no reader accepts.
      refuse(where, "tensor \"__metadata__\": the name is the metadata's");
    }
    if (!names.insert(t.name).second) {
      refuse(where, fmt::format("tensor {} appears twice", printable(t.name)));
    }
    (void)checked_bytes(t, where);
  }

  // The reference's order: by dtype, the last of its enum first, then by name, bytewise
  // (std::string compares as unsigned bytes, as Rust's String does).
  std::vector<std::size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const tensor_to_write& l = tensors[a];
    const tensor_to_write& r = tensors[b];
    return l.type != r.type ? l.type > r.type : l.name < r.name;
  });

  layout out;
  out.tensors.reserve(tensors.size());
  std::uint64_t at = 0;
  for (const std::size_t i : order) {
    const tensor_to_write& t = tensors[i];
    if (t.bytes > UINT64_MAX - at) refuse(where, "the tensors hold more than 2^64 bytes");
    placed_tensor p;
    p.info.name = t.name;
    p.info.type = t.type;
    p.info.shape = t.shape;
    p.info.begin = at;
    p.info.end = at + t.bytes;
    p.input = i;
    at = p.info.end;
    out.tensors.push_back(std::move(p));
  }

  // Compact JSON: __metadata__ first, then the tensors in data order.
  std::string text = "{";
  auto key = [&](const std::string& k) {
    if (text.size() > 1) text += ',';
    text += escaped(k);
    text += ':';
  };
  if (metadata != nullptr) {
    key("__metadata__");
    text += '{';
    bool first = true;
    for (const auto& [k, v] : *metadata) {
      if (!first) text += ',';
      first = false;
      try {
        text += escaped(k);
        text += ':';
        text += escaped(v);
      } catch (const json::exception&) {
        refuse(where, fmt::format("__metadata__ {}: the key or its value is not UTF-8",
                                  printable(k)));
      }
    }
    text += '}';
  }
  for (const placed_tensor& p : out.tensors) {
    try {
      key(p.info.name);
    } catch (const json::exception&) {
      refuse(where, fmt::format("tensor {}: the name is not UTF-8", printable(p.info.name)));
    }
    fmt::format_to(std::back_inserter(text),
                   R"({{"dtype":"{}","shape":[{}],"data_offsets":[{},{}]}})",
                   to_string(p.info.type), fmt::join(p.info.shape, ","), p.info.begin,
                   p.info.end);
  }
  text += '}';
  // Spaces up to a multiple of 8, so that the data starts 8-aligned in the file.
  text.append((8 - text.size() % 8) % 8, ' ');
  if (text.size() > max_header_bytes) {
    refuse(where, fmt::format("the header would be {} bytes, over the {} any reader accepts",
                              text.size(), max_header_bytes));
  }

  out.header.resize(8 + text.size());
  const std::uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out.header[i] = static_cast<std::byte>((n >> (8 * i)) & 0xff);
  std::memcpy(out.header.data() + 8, text.data(), text.size());
  for (placed_tensor& p : out.tensors) p.file_offset = out.header.size() + p.info.begin;
  return out;
}

std::vector<tensor_to_write> sizes_of(std::span<const tensor_view> tensors) {
  std::vector<tensor_to_write> out;
  out.reserve(tensors.size());
  for (const tensor_view& t : tensors) out.push_back({t.name, t.type, t.shape, t.data.size()});
  return out;
}

std::vector<std::byte> serialize_impl(std::span<const tensor_view> tensors,
                                      const metadata_map* metadata) {
  const layout l = plan(sizes_of(tensors), metadata, "safetensors");
  std::vector<std::byte> out(static_cast<std::size_t>(l.file_bytes()));
  std::memcpy(out.data(), l.header.data(), l.header.size());
  for (const placed_tensor& p : l.tensors) {
    const auto data = tensors[p.input].data;
    if (!data.empty()) std::memcpy(out.data() + p.file_offset, data.data(), data.size());
  }
  return out;
}

// Rethrown with the target's name in front; io_error's what() already ends with the errno's
// text, which the new one appends again.
[[noreturn]] void rethrow_naming(const io_error& e, std::string_view where) {
  std::string what = e.what();
  const std::string tail = ": " + e.code().message();
  if (what.size() >= tail.size() && what.ends_with(tail)) what.resize(what.size() - tail.size());
  throw io_error(e.code().value(), fmt::format("{}: {}", where, what));
}

std::filesystem::path temporary_beside(const std::filesystem::path& path) {
  static std::atomic<std::uint64_t> counter{0};
  const auto ticks = std::chrono::steady_clock::now().time_since_epoch().count();
  return path.parent_path() / fmt::format(".{}.{}-{}-{}.tmp", path.filename().string(),
                                          ::getpid(), counter++, ticks);
}

// Writes the pieces of a file, which come in file order and touch: small ones gathered into
// one buffer, so that a checkpoint of many small tensors is not a write per tensor.
class piece_writer {
 public:
  piece_writer(io::io_engine& engine, io::file& f) : engine_(engine), file_(f) {}

  void put(std::uint64_t at, std::span<const std::byte> bytes) {
    if (bytes.empty()) return;
    if (bytes.size() >= straight_bytes) {
      flush();
      add(engine_.write(file_, at, bytes));
      return;
    }
    if (pending_.empty()) pending_at_ = at;
    pending_.insert(pending_.end(), bytes.begin(), bytes.end());
    if (pending_.size() >= gather_bytes) flush();
  }
  void flush() {
    if (pending_.empty()) return;
    add(engine_.write(file_, pending_at_, pending_));
    pending_.clear();
  }
  [[nodiscard]] io::io_stats& stats() noexcept { return stats_; }

 private:
  // Pieces this large go straight from the caller's memory; smaller ones are copied into
  // writes of up to gather_bytes.
  static constexpr std::size_t straight_bytes = std::size_t{1} << 20;
  static constexpr std::size_t gather_bytes = std::size_t{8} << 20;

  void add(const io::io_stats& s) {
    if (first_) {
      stats_ = s;
      first_ = false;
    } else {
      stats_.add_counters(s);
    }
  }

  io::io_engine& engine_;
  io::file& file_;
  std::vector<std::byte> pending_;
  std::uint64_t pending_at_ = 0;
  io::io_stats stats_;
  bool first_ = true;
};

io::io_stats save_impl(const std::filesystem::path& path, std::span<const tensor_view> tensors,
                       const metadata_map* metadata) {
  const std::string where = fmt::format("safetensors {}", path.string());
  const layout l = plan(sizes_of(tensors), metadata, where);
  const auto start = std::chrono::steady_clock::now();
  const std::filesystem::path temp = temporary_beside(path);
  io::io_stats stats;
  try {
    {
      io::io_engine engine;
      io::file f(temp, io::open_mode::create);
      piece_writer out(engine, f);
      out.put(0, l.header);
      for (const placed_tensor& p : l.tensors) out.put(p.file_offset, tensors[p.input].data);
      out.flush();
      f.sync();
      stats = out.stats();
    }
    if (::rename(temp.c_str(), path.c_str()) != 0) {
      throw io_error(errno, fmt::format("cannot rename {} to {}", temp.string(), path.string()));
    }
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(temp, ec);
    try {
      throw;
    } catch (const io_error& e) {
      rethrow_naming(e, where);
    }
  }
  // The rename lasts once the directory is on the disk too. Best effort: some file systems
  // refuse fsync on a directory, and the file is in place either way.
  const auto dir = path.parent_path().empty() ? std::filesystem::path(".") : path.parent_path();
  if (const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); fd >= 0) {
    (void)::fsync(fd);
    ::close(fd);
  }
  stats.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

}  // namespace

std::uint64_t layout::file_bytes() const noexcept {
  return header.size() + (tensors.empty() ? 0 : tensors.back().info.end);
}

layout plan_file(std::span<const tensor_to_write> tensors) {
  return plan(tensors, nullptr, "safetensors");
}

layout plan_file(std::span<const tensor_to_write> tensors, const metadata_map& metadata) {
  return plan(tensors, &metadata, "safetensors");
}

std::vector<std::byte> serialize(std::span<const tensor_view> tensors) {
  return serialize_impl(tensors, nullptr);
}

std::vector<std::byte> serialize(std::span<const tensor_view> tensors,
                                 const metadata_map& metadata) {
  return serialize_impl(tensors, &metadata);
}

io::io_stats save_file(const std::filesystem::path& path, std::span<const tensor_view> tensors) {
  return save_impl(path, tensors, nullptr);
}

io::io_stats save_file(const std::filesystem::path& path, std::span<const tensor_view> tensors,
                       const metadata_map& metadata) {
  return save_impl(path, tensors, &metadata);
}

}  // namespace lris::safetensors
