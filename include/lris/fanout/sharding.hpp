#pragma once
/// @file
/// @brief fanout::sharding: which tensors are split among tensor-parallel ranks, and along which
/// dimension, by name pattern, as transformers' `tp_plan` and vLLM's column- and row-parallel
/// layers say it.
///
///   lris::fanout::sharding plan;
///   plan.add("layers.*.self_attn.q_proj", "colwise");  // weight [out, in]: rows split
///   plan.add("layers.*.self_attn.o_proj", "rowwise");  // weight [out, in]: columns split
///   auto s = plan.slice(info, /*rank=*/1, /*ranks=*/4);  // std::nullopt: replicated

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <lris/formats/load_options.hpp>
#include <lris/formats/safetensors.hpp>

namespace lris::fanout {

/// @brief How the tensors a rule names are split.
enum class split_style : unsigned char {
  replicate,  ///< every rank gets the whole tensor
  colwise,    ///< the output features: a weight's second-to-last dimension (dimension 0 of a
              ///< [out, in] matrix), a bias's only one (vLLM's ColumnParallelLinear)
  rowwise,    ///< the input features: a weight's last dimension; a bias is replicated (vLLM's
              ///< RowParallelLinear)
  dim,        ///< along the dimension the rule gives, whatever the tensor
};

/// @brief One rule: the tensors `pattern` names, split by `style` (along `dim` for
/// split_style::dim).
struct shard_rule {
  std::string pattern;
  split_style style = split_style::replicate;
  unsigned dim = 0;
};

/// @brief Rules by name pattern; the first that names a tensor decides. A tensor no rule names
/// is replicated.
///
/// Patterns are written as transformers' `tp_plan` writes them: names joined by dots, `*`
/// standing for any one name (a layer's number). A pattern names a tensor when it matches the
/// last names of the tensor's name, or all of them but the last (".weight", ".bias"): so
/// "layers.*.mlp.down_proj" names "model.layers.3.mlp.down_proj.weight".
class sharding {
 public:
  /// @brief No rule: every tensor replicated.
  sharding() = default;

  /// @brief Adds a rule. `style`: "colwise", "rowwise", "replicate", or "dim=N"; transformers'
  /// other words are read as what they mean for the weights: "colwise_rep",
  /// "local_colwise", "packed_colwise" as colwise; "local_rowwise", "packed_rowwise" as
  /// rowwise; "embedding_rowwise" (a vocabulary split) as dim=0; "gather", "local",
  /// "sequence_parallel", "replicated_with_grad_allreduce", "isolated" as replicate.
  /// @throws lris::invalid_argument naming the style (or the pattern, when it is empty or has
  /// an empty name).
  void add(std::string_view pattern, std::string_view style);
  /// @brief Adds a rule as data.
  void add(shard_rule rule);

  /// @brief Rules from a JSON object {"pattern": "style", ...}, in the object's order, as a
  /// model's `base_model_tp_plan` is written. A "base_model_tp_plan" or "tp_plan" member of a
  /// larger object (a model's config.json) is read too.
  /// @throws lris::invalid_argument naming what is not a plan, with `source` (a file name) in
  /// the message.
  [[nodiscard]] static sharding from_json(std::string_view json, std::string_view source = "plan");

  /// @brief from_json() of the file at `path`.
  /// @throws lris::invalid_argument naming the file when it cannot be read, or as from_json.
  [[nodiscard]] static sharding from_file(const std::filesystem::path& path);

  /// @brief The plan of Llama-style decoders (Llama, Mistral, Qwen, their MoE variants):
  /// attention q/k/v and MLP gate/up colwise, attention o and MLP down rowwise, experts alike,
  /// the embedding and the head split by vocabulary.
  [[nodiscard]] static sharding llama();

  [[nodiscard]] const std::vector<shard_rule>& rules() const noexcept { return rules_; }
  [[nodiscard]] bool empty() const noexcept { return rules_.empty(); }

  /// @brief The first rule that names `tensor`, or nullptr.
  [[nodiscard]] const shard_rule* rule_for(std::string_view tensor) const;

  /// @brief The slice of `t` that rank `rank` of `ranks` holds; std::nullopt when it holds
  /// the whole tensor (no rule, a replicating rule, one rank, or a rowwise bias).
  /// @throws lris::invalid_argument naming the tensor and the rule when the dimension the rule
  /// splits does not exist in it or does not divide into `ranks` equal parts.
  [[nodiscard]] std::optional<safetensors::tensor_slice> slice(const safetensors::tensor_info& t,
                                                               unsigned rank,
                                                               unsigned ranks) const;

 private:
  std::vector<shard_rule> rules_;
};

/// @brief "replicate", "colwise", "rowwise" or "dim".
[[nodiscard]] std::string_view to_string(split_style s) noexcept;

}  // namespace lris::fanout
