// GCC 12 warns of uninitialized std::function members inside std::regex's compiler at -O1 and
// up (GCC bug 105562): the standard library's code, reached through this file's std::regex.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <lris/formats/detail/load_select.hpp>

#include <openssl/evp.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <regex>
#include <set>

#include <fmt/format.h>

#include <lris/error.hpp>
#include <lris/element/convert.hpp>
#include <lris/memory/buffer.hpp>
#include <lris/memory/page_aligned_allocator.hpp>

namespace lris::safetensors::detail {

namespace {

// Fills the geometry of `s` for the slice of `t`; the shape in memory follows.
void apply_slice(selected_tensor& s, const tensor_info& t, const tensor_slice& sl,
                 const std::filesystem::path& file) {
  const slice_geometry g = geometry_of(t, sl, fmt::format("load {}", file.string()));
  s.file_offset += g.offset;
  s.rows = g.rows;
  s.row_bytes = g.row_bytes;
  s.row_stride = g.row_stride;
  s.request.shape = g.shape;
  s.request.slice = sl;
}

std::string hex(const unsigned char* p, std::size_t n) {
  std::string out;
  for (std::size_t i = 0; i < n; ++i) out += fmt::format("{:02x}", p[i]);
  return out;
}

}  // namespace

slice_geometry geometry_of(const tensor_info& t, const tensor_slice& sl, std::string_view where) {
  const auto& shape = t.shape;
  LRIS_EXPECTS(sl.ranks > 0 && sl.rank < sl.ranks, "{}: tensor \"{}\": rank {} of {} ranks", where,
               t.name, sl.rank, sl.ranks);
  LRIS_EXPECTS(sl.dim < shape.size(),
               "{}: tensor \"{}\" has {} dimensions; it cannot be sliced along dimension {}",
               where, t.name, shape.size(), sl.dim);
  LRIS_EXPECTS(shape[sl.dim] % sl.ranks == 0,
               "{}: tensor \"{}\": dimension {} ({}) does not divide into {} equal parts", where,
               t.name, sl.dim, shape[sl.dim], sl.ranks);
  std::uint64_t outer = 1, inner = 1;  // elements (the header's checks rule out overflow)
  for (std::size_t d = 0; d < sl.dim; ++d) outer *= shape[d];
  for (std::size_t d = sl.dim + 1; d < shape.size(); ++d) inner *= shape[d];
  const std::uint64_t part = shape[sl.dim] / sl.ranks;
  const std::uint64_t bits = bits_of(t.type);
  LRIS_EXPECTS(part * inner * bits % 8 == 0,
               "{}: tensor \"{}\": a slice of {} elements of {} does not end on a byte", where,
               t.name, part * inner, to_string(t.type));
  slice_geometry g;
  g.row_bytes = part * inner * bits / 8;
  g.row_stride = shape[sl.dim] * inner * bits / 8;
  g.rows = outer;
  g.offset = sl.rank * g.row_bytes;
  if (g.rows > 1 && g.row_stride == g.row_bytes) {  // one part: the rows are contiguous
    g.row_bytes *= g.rows;
    g.row_stride = g.row_bytes;
    g.rows = 1;
  }
  if (g.row_bytes == 0) g.rows = 1;
  g.shape = shape;
  g.shape[sl.dim] = part;
  return g;
}

std::regex name_regex(const std::string& pattern, std::string_view where) {
  std::size_t depth = 0, deepest = 0;
  bool escaped = false, in_class = false;
  for (const char c : pattern) {
    if (escaped) {
      escaped = false;
    } else if (c == '\\') {
      escaped = true;
    } else if (in_class) {
      in_class = c != ']';
    } else if (c == '[') {
      in_class = true;
    } else if (c == '(') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ')' && depth > 0) {
      --depth;
    }
  }
  if (deepest > max_regex_depth) {
    throw invalid_argument(fmt::format("{}: the regular expression nests {} groups deep (at most "
                                       "{})", where, deepest, max_regex_depth));
  }
  try {
    return std::regex(pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    throw invalid_argument(fmt::format("{}: bad regular expression \"{}\": {}", where, pattern,
                                       e.what()));
  }
}

bool name_matches(const std::regex& re, std::string_view name, std::string_view where) {
  if (name.size() > max_matched_name) {
    throw invalid_argument(fmt::format("{}: tensor \"{}...\" has a name of {} bytes; a regular "
                                       "expression is matched against names of at most {} (select "
                                       "it by its name)", where, name.substr(0, 64), name.size(),
                                       max_matched_name));
  }
  return std::regex_search(name.begin(), name.end(), re);
}

std::vector<selected_tensor> select_tensors(const checkpoint& ck, const load_options& o) {
  std::optional<std::regex> re;
  const std::string where = fmt::format("load {}", ck.path().string());
  if (!o.select.empty()) re.emplace(name_regex(o.select, where));
  if (o.convert_to) {  // a type nothing converts to would load every tensor as it is, silently
    bool reachable = false;
    for (const dtype from : {dtype::F32, dtype::BF16, dtype::F16, dtype::F8_E4M3, dtype::F8_E5M2}) {
      reachable = reachable || (from != *o.convert_to && can_convert(from, *o.convert_to));
    }
    if (!reachable) {
      throw unsupported(fmt::format("{}: tensors convert to BF16, F16 or F32 as they load, not to "
                                    "{}", where, to_string(*o.convert_to)));
    }
  }
  for (const auto& n : o.names) {
    LRIS_EXPECTS(ck.find(n) != nullptr, "load {}: no tensor \"{}\" in the checkpoint",
                 ck.path().string(), n);
  }
  for (const auto& [n, v] : o.expected_checksums) {
    LRIS_EXPECTS(ck.find(n) != nullptr,
                 "load {}: a checksum is given for tensor \"{}\", which is not in the checkpoint",
                 ck.path().string(), n);
  }
  const std::set<std::string_view> names(o.names.begin(), o.names.end());
  const bool all = o.names.empty() && !re;
  std::vector<selected_tensor> out;
  for (const tensor_ref& ref : ck.tensors()) {
    const tensor_info& t = *ref.info;
    if (!all && names.count(t.name) == 0 && !(re && name_matches(*re, t.name, where))) continue;
    const auto& file = ck.shards()[ref.shard].file.path();
    selected_tensor s;
    s.request.source = &ref;
    s.request.name = t.name;
    s.request.type = t.type;
    s.request.shape = t.shape;
    s.file_offset = ck.file_offset(ref);
    s.row_bytes = t.bytes();
    s.row_stride = s.row_bytes;
    if (o.slice) {
      if (const auto sl = o.slice(t)) apply_slice(s, t, *sl, file);
    }
    if (o.convert_to && *o.convert_to != t.type && can_convert(t.type, *o.convert_to)) {
      s.request.type = *o.convert_to;
    }
    const std::uint64_t elements = s.rows * s.row_bytes * 8 / std::max<std::size_t>(1, bits_of(t.type));
    s.request.bytes = s.request.type == t.type ? s.rows * s.row_bytes
                                               : elements * bits_of(s.request.type) / 8;
    if (const auto it = o.expected_checksums.find(t.name); it != o.expected_checksums.end()) {
      LRIS_EXPECTS(!s.request.slice,
                   "load {}: tensor \"{}\": a checksum covers the whole tensor, but a slice of "
                   "it is loaded",
                   file.string(), t.name);
      s.verify = true;
      s.expected_checksum = it->second;
    }
    out.push_back(std::move(s));
  }
  return out;
}

std::string sha256_hex(io::io_engine& io, const io::file& f) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    throw lris::error("sha256: OpenSSL could not start a digest");
  }
  constexpr std::size_t piece = std::size_t{16} << 20;
  const std::uint64_t size = f.size();
  buffer<page_aligned_allocator> buf(static_cast<std::size_t>(std::min<std::uint64_t>(size, piece)) + 1);
  for (std::uint64_t at = 0; at < size; at += piece) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(piece, size - at));
    io.read(f, at, {buf.data(), n});
    EVP_DigestUpdate(ctx.get(), buf.data(), n);
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  EVP_DigestFinal_ex(ctx.get(), md, &len);
  return hex(md, len);
}

std::size_t check_sha256(io::io_engine& io, const checkpoint& ck, const load_options& o) {
  std::size_t matched = 0;
  for (const auto& [file_name, want] : o.expected_sha256) {
    const std::string& name = file_name;  // a structured binding cannot be captured (clang 15)
    const auto it = std::find_if(ck.shards().begin(), ck.shards().end(), [&](const shard& s) {
      return s.file.path().filename() == name;
    });
    LRIS_EXPECTS(it != ck.shards().end(),
                 "load {}: a SHA-256 is given for \"{}\", which is no file of the checkpoint",
                 ck.path().string(), name);
    std::string lower = want;
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    const std::string got = sha256_hex(io, it->file);
    if (got != lower) {
      throw integrity_error(fmt::format("load {}: SHA-256 mismatch: expected {}, the file has {}",
                                        it->file.path().string(), want, got));
    }
    ++matched;
  }
  return matched;
}

void checksum_mismatch(const checkpoint& ck, const tensor_ref& t, std::uint64_t expected,
                       std::uint64_t actual) {
  throw integrity_error(fmt::format(
      "load {}: tensor \"{}\" (offset {}, {} bytes): checksum mismatch: expected {:016x}, the "
      "file has {:016x}",
      ck.shards()[t.shard].file.path().string(), t.info->name, ck.file_offset(t), t.info->bytes(),
      expected, actual));
}

}  // namespace lris::safetensors::detail

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
