#include <lris/exec/profile.hpp>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <lris/error.hpp>

namespace lris {

namespace {
using json = nlohmann::json;

json read_json(const std::filesystem::path& path, bool& exists) {
  std::ifstream in(path);
  exists = static_cast<bool>(in);
  if (!exists) return json::object();
  try {
    json j = json::parse(in);
    if (!j.is_object()) {
      throw format_error(fmt::format("profile {}: the top level is not a JSON object",
                                     path.string()));
    }
    return j;
  } catch (const json::exception& e) {
    throw format_error(fmt::format("profile {}: not valid JSON: {}", path.string(), e.what()));
  }
}

template <class T>
void read_field(const json& entry, const char* key, T& out, const std::filesystem::path& path,
                std::string_view backend) {
  auto it = entry.find(key);
  if (it == entry.end()) return;
  if constexpr (std::is_floating_point_v<T>) {
    if (!it->is_number() || it->get<double>() < 0) {
      throw format_error(fmt::format("profile {}: \"{}\".\"{}\" must be a non-negative number, "
                                     "not {}", path.string(), backend, key, it->dump()));
    }
    out = it->get<T>();
    return;
  }
  if (!it->is_number_unsigned()) {
    throw format_error(fmt::format("profile {}: \"{}\".\"{}\" must be a non-negative integer, "
                                   "not {}", path.string(), backend, key, it->dump()));
  }
  const auto v = it->get<std::uint64_t>();
  if (v > std::numeric_limits<T>::max()) {
    throw format_error(fmt::format("profile {}: \"{}\".\"{}\" = {} is out of range",
                                   path.string(), backend, key, v));
  }
  out = static_cast<T>(v);
}
// The entry `key` of the profile file's `root` (null when there is none); format_error when it
// is not an object.
const json* entry_of(const json& root, std::string_view key, const std::filesystem::path& path) {
  auto it = root.find(std::string(key));
  if (it == root.end()) return nullptr;
  if (!it->is_object()) {
    throw format_error(fmt::format("profile {}: entry \"{}\" is not an object", path.string(),
                                   key));
  }
  return &*it;
}

// Writes `root` to `path`: a sibling file renamed over it, so a crash never leaves half a
// profile.
void write_json(const std::filesystem::path& path, const json& root) {
  std::error_code ec;
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), ec);
  if (ec) {
    throw io_error(ec.value(), fmt::format("profile {}: cannot create its directory",
                                           path.string()));
  }
  const auto tmp = std::filesystem::path(path.string() + ".tmp");
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) throw io_error(errno, fmt::format("profile {}: cannot write", tmp.string()));
    out << root.dump(2) << '\n';
    if (!out.flush()) throw io_error(errno, fmt::format("profile {}: write failed", tmp.string()));
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    throw io_error(ec.value(), fmt::format("profile {}: cannot replace it", path.string()));
  }
}

}  // namespace

std::filesystem::path default_profile_path() {
  if (const char* p = std::getenv("LRIS_PROFILE"); p && *p) return p;
  if (const char* x = std::getenv("XDG_CONFIG_HOME"); x && *x) {
    return std::filesystem::path(x) / "lris" / "profile.json";
  }
  if (const char* h = std::getenv("HOME"); h && *h) {
    return std::filesystem::path(h) / ".config" / "lris" / "profile.json";
  }
  return "lris-profile.json";
}

transfer_profile load_profile(const std::filesystem::path& path, std::string_view backend) {
  bool exists = false;
  const json root = read_json(path, exists);
  transfer_profile p;
  const json* it = entry_of(root, backend, path);
  if (it == nullptr) return p;
  read_field(*it, "parallel_min_bytes", p.parallel_min_bytes, path, backend);
  read_field(*it, "staged_min_bytes", p.staged_min_bytes, path, backend);
  read_field(*it, "batch_max_item_bytes", p.batch_max_item_bytes, path, backend);
  read_field(*it, "chunk_bytes", p.chunk_bytes, path, backend);
  read_field(*it, "workers", p.workers, path, backend);
  read_field(*it, "streams", p.streams, path, backend);
  read_field(*it, "ring_depth", p.ring_depth, path, backend);
  read_field(*it, "host_copy_gbps", p.host_copy_gbps, path, backend);
  read_field(*it, "h2d_gbps", p.h2d_gbps, path, backend);
  read_field(*it, "d2h_gbps", p.d2h_gbps, path, backend);
  if (p.chunk_bytes == 0) {
    throw format_error(fmt::format("profile {}: \"{}\".\"chunk_bytes\" must be positive",
                                   path.string(), backend));
  }
  p.source = path.string();
  return p;
}

void save_profile(const std::filesystem::path& path, std::string_view backend,
                  const transfer_profile& p) {
  bool exists = false;
  json root = read_json(path, exists);
  root[std::string(backend)] = json{{"parallel_min_bytes", p.parallel_min_bytes},
                                    {"staged_min_bytes", p.staged_min_bytes},
                                    {"batch_max_item_bytes", p.batch_max_item_bytes},
                                    {"chunk_bytes", p.chunk_bytes},
                                    {"workers", p.workers},
                                    {"streams", p.streams},
                                    {"ring_depth", p.ring_depth},
                                    {"host_copy_gbps", p.host_copy_gbps},
                                    {"h2d_gbps", p.h2d_gbps},
                                    {"d2h_gbps", p.d2h_gbps}};
  write_json(path, root);
}

std::string_view to_string(cold_read_method m) noexcept {
  switch (m) {
    case cold_read_method::direct: return "direct";
    case cold_read_method::buffered: return "buffered";
    case cold_read_method::both: return "both";
  }
  return "?";
}

disk_profile load_disk_profile(const std::filesystem::path& path, std::string_view disk) {
  bool exists = false;
  const json root = read_json(path, exists);
  disk_profile p;
  const json* it = entry_of(root, disk, path);
  if (it == nullptr) return p;
  if (auto m = it->find("method"); m != it->end()) {
    const std::string name = m->is_string() ? m->get<std::string>() : std::string();
    bool known = false;
    for (const auto k : {cold_read_method::direct, cold_read_method::buffered,
                         cold_read_method::both}) {
      if (name == to_string(k)) {
        p.method = k;
        known = true;
      }
    }
    if (!known) {
      throw format_error(fmt::format("profile {}: \"{}\".\"method\" must be \"direct\", "
                                     "\"buffered\" or \"both\", not {}", path.string(), disk,
                                     m->dump()));
    }
  }
  read_field(*it, "workers", p.workers, path, disk);
  read_field(*it, "buffered_every", p.buffered_every, path, disk);
  read_field(*it, "read_gbps", p.read_gbps, path, disk);
  if (p.buffered_every < 2) {
    throw format_error(fmt::format("profile {}: \"{}\".\"buffered_every\" must be at least 2, "
                                   "not {}", path.string(), disk, p.buffered_every));
  }
  p.source = path.string();
  return p;
}

void save_disk_profile(const std::filesystem::path& path, std::string_view disk,
                       const disk_profile& p) {
  bool exists = false;
  json root = read_json(path, exists);
  root[std::string(disk)] = json{{"method", std::string(to_string(p.method))},
                                 {"workers", p.workers},
                                 {"buffered_every", p.buffered_every},
                                 {"read_gbps", p.read_gbps}};
  write_json(path, root);
}

}  // namespace lris
