#include <lris/formats/safetensors.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "fail.hpp"

namespace lris::safetensors {

namespace {

using detail::fail;

using json = nlohmann::json;

// A pass over the header's JSON that finds the first key given twice in one object (the
// reference's parser refuses it; nlohmann's keeps the last). Its own pass, linear in the
// header: nlohmann's parse callback rescans a whole object at each nested object's end,
// quadratic in the tensors (27 s for a header of 50,000).
struct duplicate_keys final : nlohmann::json_sax<json> {
  std::vector<std::set<std::string, std::less<>>> open;  // the keys of each object open now
  std::optional<std::string> first;                      // the first duplicate, if any

  bool key(string_t& k) override {
    if (!open.back().insert(k).second && !first) first = k;
    return true;
  }
  bool start_object(std::size_t) override {
    open.emplace_back();
    return true;
  }
  bool end_object() override {
    open.pop_back();
    return true;
  }
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_array(std::size_t) override { return true; }
  bool end_array() override { return true; }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    return false;  // the parse proper reports it
  }
};

// Well-formed UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF.
// Returns the offset of the first bad byte, or std::string_view::npos.
std::size_t first_bad_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  for (std::size_t i = 0; i < n;) {
    const unsigned c = p[i];
    std::size_t len = 0;
    unsigned lo = 0x80, hi = 0xBF;
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return i;
    }
    if (i + len > n) return i;
    if (p[i + 1] < lo || p[i + 1] > hi) return i;
    for (std::size_t k = 2; k < len; ++k) {
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return i;
    }
    i += len;
  }
  return std::string_view::npos;
}

std::uint64_t read_le64(const std::byte* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<std::uint8_t>(p[i]);
  return v;
}

}  // namespace

std::string_view to_string(error_kind k) noexcept {
  switch (k) {
    case error_kind::file_too_small: return "file_too_small";
    case error_kind::header_too_large: return "header_too_large";
    case error_kind::header_past_end: return "header_past_end";
    case error_kind::header_not_utf8: return "header_not_utf8";
    case error_kind::header_bad_start: return "header_bad_start";
    case error_kind::invalid_json: return "invalid_json";
    case error_kind::duplicate_key: return "duplicate_key";
    case error_kind::metadata_not_strings: return "metadata_not_strings";
    case error_kind::entry_not_object: return "entry_not_object";
    case error_kind::missing_field: return "missing_field";
    case error_kind::unknown_dtype: return "unknown_dtype";
    case error_kind::bad_shape: return "bad_shape";
    case error_kind::shape_overflow: return "shape_overflow";
    case error_kind::sub_byte_misaligned: return "sub_byte_misaligned";
    case error_kind::bad_offsets: return "bad_offsets";
    case error_kind::size_mismatch: return "size_mismatch";
    case error_kind::overlap: return "overlap";
    case error_kind::gap: return "gap";
    case error_kind::data_not_covered: return "data_not_covered";
    case error_kind::index_invalid: return "index_invalid";
    case error_kind::shard_outside_directory: return "shard_outside_directory";
    case error_kind::shard_missing: return "shard_missing";
    case error_kind::index_mismatch: return "index_mismatch";
    case error_kind::duplicate_tensor: return "duplicate_tensor";
    case error_kind::no_safetensors: return "no_safetensors";
  }
  return "?";
}

std::uint64_t tensor_info::elements() const noexcept {
  std::uint64_t n = 1;
  for (std::uint64_t d : shape) n *= d;  // validated not to overflow
  return n;
}

const tensor_info* header::find(std::string_view name) const noexcept {
  for (const auto& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

header parse_header(std::span<const std::byte> prefix, std::uint64_t file_bytes,
                    const std::filesystem::path& file) {
  header h;
  h.file = file;
  h.file_bytes = file_bytes;
  if (file_bytes < 8 || prefix.size() < 8) {
    fail(error_kind::file_too_small, file,
         fmt::format("{} bytes: too small for the 8-byte header length", file_bytes));
  }
  const std::uint64_t n = read_le64(prefix.data());
  if (n > max_header_bytes) {
    fail(error_kind::header_too_large, file,
         fmt::format("header length {} at offset 0 is over the limit of {} bytes", n,
                     max_header_bytes));
  }
  if (8 + n > file_bytes || 8 + n > prefix.size()) {
    fail(error_kind::header_past_end, file,
         fmt::format("header length {} at offset 0 goes past the end of the file ({} bytes)", n,
                     file_bytes));
  }
  h.header_bytes = n;
  h.data_offset = 8 + n;
  const std::string_view text(reinterpret_cast<const char*>(prefix.data() + 8),
                              static_cast<std::size_t>(n));
  if (const std::size_t bad = first_bad_utf8(text); bad != std::string_view::npos) {
    fail(error_kind::header_not_utf8, file,
         fmt::format("the header is not UTF-8: bad byte 0x{:02x} at file offset {}",
                     static_cast<unsigned char>(text[bad]), 8 + bad));
  }
  if (text.empty() || text.front() != '{') {
    fail(error_kind::header_bad_start, file,
         "the header does not start with '{' at file offset 8");
  }

  // Parse, refusing a key twice in one object (the reference's parser does; nlohmann's
  // would keep the last).
  json root;
  try {
    root = json::parse(text);
  } catch (const json::exception& e) {
    fail(error_kind::invalid_json, file, fmt::format("the header is not JSON: {}", e.what()));
  }
  duplicate_keys keys;
  (void)json::sax_parse(text, &keys);
  if (keys.first) {
    fail(error_kind::duplicate_key, file, fmt::format("key \"{}\" appears twice in the header",
                                                       *keys.first));
  }
  if (!root.is_object()) fail(error_kind::invalid_json, file, "the header is not a JSON object");

  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) {
        fail(error_kind::metadata_not_strings, file, "__metadata__ is not an object");
      }
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) {
          fail(error_kind::metadata_not_strings, file,
               fmt::format("__metadata__ \"{}\" is not a string", m.key()));
        }
        h.metadata.emplace(m.key(), m.value().get<std::string>());
      }
      continue;
    }
    auto bad = [&](error_kind kind, const std::string& what) {
      fail(kind, file, fmt::format("tensor \"{}\": {}", name, what));
    };
    if (!v.is_object()) bad(error_kind::entry_not_object, "its entry is not an object");
    for (const char* field : {"dtype", "shape", "data_offsets"}) {
      if (!v.contains(field)) bad(error_kind::missing_field, fmt::format("no \"{}\"", field));
    }
    tensor_info t;
    t.name = name;
    const json& dt = v["dtype"];
    const auto type = dt.is_string() ? dtype_from_string(dt.get<std::string>()) : std::nullopt;
    if (!type) bad(error_kind::unknown_dtype, fmt::format("unknown dtype {}", dt.dump()));
    t.type = *type;
    const json& shape = v["shape"];
    if (!shape.is_array()) bad(error_kind::bad_shape, "shape is not an array");
    std::uint64_t elements = 1;
    for (const json& d : shape) {
      if (!d.is_number_unsigned()) {
        bad(error_kind::bad_shape, fmt::format("shape {} has an entry that is not a "
                                               "non-negative integer", shape.dump()));
      }
      const auto dim = d.get<std::uint64_t>();
      if (dim != 0 && elements > UINT64_MAX / dim) {
        bad(error_kind::shape_overflow, fmt::format("shape {} has more than 2^64 elements",
                                                    shape.dump()));
      }
      elements *= dim;
      t.shape.push_back(dim);
    }
    const std::uint64_t bits = bits_of(t.type);
    if (elements > UINT64_MAX / bits) {
      bad(error_kind::shape_overflow, fmt::format("{} x {} bits overflows 64 bits", elements,
                                                  bits));
    }
    if (elements * bits % 8 != 0) {
      bad(error_kind::sub_byte_misaligned,
          fmt::format("{} elements of {} ({} bits each) do not end on a byte boundary",
                      elements, to_string(t.type), bits));
    }
    const std::uint64_t bytes = elements * bits / 8;
    const json& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
        !off[1].is_number_unsigned() || off[0].get<std::uint64_t>() > off[1].get<std::uint64_t>()) {
      bad(error_kind::bad_offsets,
          fmt::format("data_offsets {} is not [begin, end] with begin <= end", off.dump()));
    }
    t.begin = off[0].get<std::uint64_t>();
    t.end = off[1].get<std::uint64_t>();
    if (t.end - t.begin != bytes) {
      bad(error_kind::size_mismatch,
          fmt::format("data_offsets [{}, {}] (file offset {}) hold {} bytes but {} {} needs {}",
                      t.begin, t.end, h.data_offset + t.begin, t.end - t.begin,
                      to_string(t.type), shape.dump(), bytes));
    }
    h.tensors.push_back(std::move(t));
  }

  // The tensors tile the data section exactly: from 0, each where the last ended, to its end.
  std::sort(h.tensors.begin(), h.tensors.end(), [](const tensor_info& a, const tensor_info& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::uint64_t at = 0;
  const tensor_info* previous = nullptr;
  for (const tensor_info& t : h.tensors) {
    if (t.begin < at) {
      fail(error_kind::overlap, file,
           fmt::format("tensor \"{}\" at data offset {} (file offset {}) overlaps \"{}\", which "
                       "ends at {}", t.name, t.begin, h.data_offset + t.begin,
                       previous ? previous->name : "", at));
    }
    if (t.begin > at) {
      fail(error_kind::gap, file,
           fmt::format("{} bytes at data offset {} (file offset {}) before tensor \"{}\" belong "
                       "to no tensor", t.begin - at, at, h.data_offset + at, t.name));
    }
    at = t.end;
    previous = &t;
  }
  if (h.data_offset + at != file_bytes) {
    fail(error_kind::data_not_covered, file,
         h.data_offset + at < file_bytes
             ? fmt::format("{} bytes after the last tensor (from file offset {}) belong to no "
                           "tensor", file_bytes - h.data_offset - at, h.data_offset + at)
             : fmt::format("the tensors end at file offset {}, past the end of the file ({} "
                           "bytes)", h.data_offset + at, file_bytes));
  }
  return h;
}

header read_header(const std::filesystem::path& path) { return read_header(io::file(path)); }

header read_header(const io::file& f) {
  const std::uint64_t size = f.size();
  auto read_at = [&](std::byte* into, std::size_t n, std::uint64_t at) {
    std::size_t done = 0;
    while (done < n) {
      const ssize_t r = ::pread(f.fd(), into + done, n - done, static_cast<off_t>(at + done));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        throw io_error(r < 0 ? errno : EIO, fmt::format("cannot read the header of {} at offset {}",
                                                        f.path().string(), at + done));
      }
      done += static_cast<std::size_t>(r);
    }
  };
  std::vector<std::byte> prefix(static_cast<std::size_t>(std::min<std::uint64_t>(size, 8)));
  read_at(prefix.data(), prefix.size(), 0);
  if (prefix.size() == 8) {
    const std::uint64_t n = read_le64(prefix.data());
    if (n <= max_header_bytes && 8 + n <= size) {
      prefix.resize(static_cast<std::size_t>(8 + n));
      read_at(prefix.data() + 8, static_cast<std::size_t>(n), 8);
    }
  }
  return parse_header(prefix, size, f.path());
}

}  // namespace lris::safetensors
