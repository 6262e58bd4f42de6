#include <lris/fanout/sharding.hpp>

#include <fstream>
#include <sstream>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <lris/error.hpp>

namespace lris::fanout {

namespace {

// The names of a dotted name, in order.
std::vector<std::string_view> names_of(std::string_view s) {
  std::vector<std::string_view> out;
  std::size_t at = 0;
  while (true) {
    const std::size_t dot = s.find('.', at);
    out.push_back(s.substr(at, dot == std::string_view::npos ? std::string_view::npos : dot - at));
    if (dot == std::string_view::npos) return out;
    at = dot + 1;
  }
}

// The pattern's names equal those of `name` that end at `end` (exclusive).
bool matches_at(const std::vector<std::string_view>& pattern,
                const std::vector<std::string_view>& name, std::size_t end) {
  if (end < pattern.size()) return false;
  const std::size_t first = end - pattern.size();
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] != "*" && pattern[i] != name[first + i]) return false;
  }
  return true;
}

struct style_word {
  std::string_view word;
  split_style style;
  unsigned dim;
};
constexpr style_word style_words[] = {
    {"replicate", split_style::replicate, 0},
    {"replicated", split_style::replicate, 0},
    {"colwise", split_style::colwise, 0},
    {"colwise_rep", split_style::colwise, 0},
    {"local_colwise", split_style::colwise, 0},
    {"packed_colwise", split_style::colwise, 0},
    {"rowwise", split_style::rowwise, 0},
    {"local_rowwise", split_style::rowwise, 0},
    {"packed_rowwise", split_style::rowwise, 0},
    {"rowwise_rep", split_style::rowwise, 0},
    {"embedding_rowwise", split_style::dim, 0},
    {"gather", split_style::replicate, 0},
    {"local", split_style::replicate, 0},
    {"isolated", split_style::replicate, 0},
    {"sequence_parallel", split_style::replicate, 0},
    {"replicated_with_grad_allreduce", split_style::replicate, 0},
};

}  // namespace

std::string_view to_string(split_style s) noexcept {
  switch (s) {
    case split_style::replicate: return "replicate";
    case split_style::colwise: return "colwise";
    case split_style::rowwise: return "rowwise";
    case split_style::dim: return "dim";
  }
  return "?";
}

void sharding::add(shard_rule rule) {
  LRIS_EXPECTS(!rule.pattern.empty(), "sharding: an empty pattern (style {})",
               to_string(rule.style));
  for (const auto n : names_of(rule.pattern)) {
    LRIS_EXPECTS(!n.empty(), "sharding: pattern \"{}\" has an empty name (two dots, or a dot at "
                             "an end)", rule.pattern);
  }
  rules_.push_back(std::move(rule));
}

void sharding::add(std::string_view pattern, std::string_view style) {
  shard_rule r{std::string(pattern), split_style::replicate, 0};
  if (style.starts_with("dim=")) {
    const std::string digits(style.substr(4));
    LRIS_EXPECTS(!digits.empty() && digits.size() <= 2 &&
                     digits.find_first_not_of("0123456789") == std::string::npos,
                 "sharding: pattern \"{}\": \"{}\" is not dim=N with N a dimension", pattern,
                 style);
    r.style = split_style::dim;
    r.dim = static_cast<unsigned>(std::stoul(digits));
    add(std::move(r));
    return;
  }
  for (const auto& w : style_words) {
    if (w.word == style) {
      r.style = w.style;
      r.dim = w.dim;
      add(std::move(r));
      return;
    }
  }
  throw invalid_argument(fmt::format(
      "sharding: pattern \"{}\": \"{}\" is not a style (colwise, rowwise, replicate, dim=N, or "
      "one of transformers' tp_plan words)", pattern, style));
}

sharding sharding::from_json(std::string_view json, std::string_view source) {
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(json);
  } catch (const nlohmann::json::exception& e) {
    throw invalid_argument(fmt::format("sharding {}: not JSON: {}", source, e.what()));
  }
  for (const char* key : {"base_model_tp_plan", "tp_plan"}) {
    if (j.is_object() && j.contains(key) && j[key].is_object()) {
      j = nlohmann::ordered_json(j[key]);
      break;
    }
  }
  LRIS_EXPECTS(j.is_object(), "sharding {}: a plan is a JSON object {{\"pattern\": \"style\"}}, "
                              "not {}", source, j.type_name());
  sharding out;
  for (const auto& [pattern, style] : j.items()) {
    LRIS_EXPECTS(style.is_string(), "sharding {}: pattern \"{}\": the style is {}, not a string",
                 source, pattern, style.type_name());
    try {
      out.add(pattern, style.get<std::string>());
    } catch (const invalid_argument& e) {
      throw invalid_argument(fmt::format("{} (in {})", e.what(), source));
    }
  }
  return out;
}

sharding sharding::from_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw invalid_argument(fmt::format("sharding {}: cannot be read", path.string()));
  std::stringstream text;
  text << in.rdbuf();
  return from_json(text.str(), path.string());
}

sharding sharding::llama() {
  sharding s;
  s.add("embed_tokens", "embedding_rowwise");
  for (const char* block : {"layers.*.self_attn", "layers.*.mlp", "layers.*.mlp.experts.*",
                            "layers.*.mlp.shared_expert"}) {
    for (const char* col : {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"}) {
      s.add(fmt::format("{}.{}", block, col), "colwise");
    }
    for (const char* row : {"o_proj", "down_proj"}) {
      s.add(fmt::format("{}.{}", block, row), "rowwise");
    }
  }
  s.add("lm_head", "colwise");
  return s;
}

const shard_rule* sharding::rule_for(std::string_view tensor) const {
  if (rules_.empty()) return nullptr;
  const auto name = names_of(tensor);
  for (const auto& r : rules_) {
    const auto pattern = names_of(r.pattern);
    if (matches_at(pattern, name, name.size()) ||
        (name.size() > 1 && matches_at(pattern, name, name.size() - 1))) {
      return &r;
    }
  }
  return nullptr;
}

std::optional<safetensors::tensor_slice> sharding::slice(const safetensors::tensor_info& t,
                                                         unsigned rank, unsigned ranks) const {
  LRIS_EXPECTS(ranks > 0 && rank < ranks, "sharding: tensor \"{}\": rank {} of {} ranks", t.name,
               rank, ranks);
  if (ranks == 1) return std::nullopt;
  const shard_rule* r = rule_for(t.name);
  if (r == nullptr || r->style == split_style::replicate) return std::nullopt;
  const std::size_t dims = t.shape.size();
  unsigned dim = r->dim;
  if (r->style == split_style::colwise) {
    if (dims == 0) return std::nullopt;
    dim = dims >= 2 ? static_cast<unsigned>(dims - 2) : 0;
  } else if (r->style == split_style::rowwise) {
    if (dims < 2) return std::nullopt;  // a row-parallel layer's bias is added once, whole
    dim = static_cast<unsigned>(dims - 1);
  }
  LRIS_EXPECTS(dim < dims,
               "sharding: tensor \"{}\" ({} dimensions) cannot be split along dimension {} "
               "(rule \"{}\": {})", t.name, dims, dim, r->pattern, to_string(r->style));
  LRIS_EXPECTS(t.shape[dim] % ranks == 0,
               "sharding: tensor \"{}\": dimension {} ({}) does not divide into {} equal parts "
               "(rule \"{}\": {})", t.name, dim, t.shape[dim], ranks, r->pattern,
               to_string(r->style));
  return safetensors::tensor_slice{dim, rank, ranks};
}

}  // namespace lris::fanout
