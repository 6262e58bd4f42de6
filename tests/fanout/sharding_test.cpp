// fanout::sharding: patterns as transformers' tp_plan writes them, the styles and the
// dimensions they split, JSON plans, and the errors that name the tensor, rule or style.
#include <catch2/catch.hpp>

#include "support/what_contains.hpp"

#include <lris/error.hpp>
#include <lris/fanout/sharding.hpp>

using lris::dtype;
using lris::fanout::sharding;
using lris::fanout::split_style;
using lris::safetensors::tensor_info;
using lris::test::what_contains;

namespace {
tensor_info info(std::string name, std::vector<std::uint64_t> shape) {
  return {std::move(name), dtype::BF16, std::move(shape), 0, 0};
}
}  // namespace

TEST_CASE("sharding: a pattern names a module's weight and bias, or a tensor, with * for one name") {
  sharding s;
  s.add("layers.*.self_attn.q_proj", "colwise");
  s.add("layers.*.mlp.down_proj", "rowwise");
  CHECK(s.rule_for("model.layers.3.self_attn.q_proj.weight")->style == split_style::colwise);
  CHECK(s.rule_for("layers.12.self_attn.q_proj.bias") != nullptr);
  CHECK(s.rule_for("model.layers.3.mlp.down_proj.weight")->style == split_style::rowwise);
  CHECK(s.rule_for("model.layers.3.self_attn.k_proj.weight") == nullptr);
  CHECK(s.rule_for("model.layers.3.x.self_attn.q_proj.weight") == nullptr);  // * is one name
  CHECK(s.rule_for("model.layers.3.self_attn.q_proj.weight.extra") == nullptr);
  CHECK(s.rule_for("q_proj.weight") == nullptr);
}

TEST_CASE("sharding: colwise splits the output features, rowwise the input features") {
  sharding s;
  s.add("q", "colwise");
  s.add("o", "rowwise");
  s.add("e", "embedding_rowwise");
  s.add("x", "dim=2");
  s.add("r", "replicate");
  // [out, in] weights
  auto q = s.slice(info("q.weight", {64, 32}), 1, 4);
  REQUIRE(q);
  CHECK(q->dim == 0);
  CHECK(q->rank == 1);
  CHECK(q->ranks == 4);
  CHECK(s.slice(info("q.bias", {64}), 1, 4)->dim == 0);
  CHECK(s.slice(info("o.weight", {64, 32}), 3, 4)->dim == 1);
  CHECK_FALSE(s.slice(info("o.bias", {64}), 3, 4));  // added once, whole
  // stacked experts [E, out, in]
  CHECK(s.slice(info("q.weight", {8, 64, 32}), 0, 2)->dim == 1);
  CHECK(s.slice(info("o.weight", {8, 64, 32}), 0, 2)->dim == 2);
  CHECK(s.slice(info("e.weight", {1000, 32}), 0, 2)->dim == 0);
  CHECK(s.slice(info("x.weight", {2, 2, 8}), 0, 2)->dim == 2);
  CHECK_FALSE(s.slice(info("r.weight", {64, 32}), 0, 2));
  CHECK_FALSE(s.slice(info("q.weight", {64, 32}), 0, 1));  // one rank holds everything
  CHECK_FALSE(s.slice(info("unnamed", {64, 32}), 0, 2));
}

TEST_CASE("sharding: the first rule that names a tensor decides") {
  sharding s;
  s.add("layers.0.mlp.up_proj", "replicate");
  s.add("layers.*.mlp.up_proj", "colwise");
  CHECK_FALSE(s.slice(info("layers.0.mlp.up_proj.weight", {8, 8}), 0, 2));
  CHECK(s.slice(info("layers.1.mlp.up_proj.weight", {8, 8}), 0, 2));
}

TEST_CASE("sharding: plans from JSON keep their order; a config's base_model_tp_plan is read") {
  auto s = sharding::from_json(R"({"layers.*.a": "rowwise", "layers.*.b": "colwise_rep"})");
  REQUIRE(s.rules().size() == 2);
  CHECK(s.rules()[0].pattern == "layers.*.a");
  CHECK(s.rules()[1].style == split_style::colwise);
  auto c = sharding::from_json(
      R"({"hidden_size": 8, "base_model_tp_plan": {"layers.*.self_attn.o_proj": "rowwise"}})");
  REQUIRE(c.rules().size() == 1);
  CHECK(c.rules()[0].style == split_style::rowwise);
}

TEST_CASE("sharding: llama's plan splits attention and MLP, experts alike, and the vocabulary") {
  const auto s = sharding::llama();
  CHECK(s.slice(info("model.layers.0.self_attn.k_proj.weight", {1024, 4096}), 0, 2)->dim == 0);
  CHECK(s.slice(info("model.layers.0.self_attn.o_proj.weight", {4096, 4096}), 0, 2)->dim == 1);
  CHECK(s.slice(info("model.layers.7.mlp.experts.3.down_proj.weight", {64, 128}), 0, 2)->dim == 1);
  CHECK(s.slice(info("model.embed_tokens.weight", {32000, 4096}), 0, 2)->dim == 0);
  CHECK(s.slice(info("lm_head.weight", {32000, 4096}), 0, 2)->dim == 0);
  CHECK_FALSE(s.slice(info("model.layers.0.input_layernorm.weight", {4096}), 0, 2));
}

TEST_CASE("sharding: errors name the style, the pattern, the tensor and the rule") {
  sharding s;
  CHECK_THROWS_MATCHES(s.add("a.b", "sideways"), lris::invalid_argument,
                       what_contains("\"sideways\" is not a style"));
  CHECK_THROWS_MATCHES(s.add("a..b", "colwise"), lris::invalid_argument,
                       what_contains("pattern \"a..b\" has an empty name"));
  CHECK_THROWS_MATCHES(s.add("", "colwise"), lris::invalid_argument,
                       what_contains("empty pattern"));
  CHECK_THROWS_MATCHES(s.add("a", "dim=x"), lris::invalid_argument,
                       what_contains("\"dim=x\" is not dim=N"));
  s.add("w", "colwise");
  s.add("z", "dim=3");
  CHECK_THROWS_MATCHES(s.slice(info("w.weight", {10, 4}), 0, 4), lris::invalid_argument,
                       what_contains("tensor \"w.weight\": dimension 0 (10) does not divide into "
                                     "4 equal parts (rule \"w\": colwise)"));
  CHECK_THROWS_MATCHES(s.slice(info("z.weight", {8, 8}), 0, 2), lris::invalid_argument,
                       what_contains("cannot be split along dimension 3"));
  CHECK_THROWS_MATCHES(s.slice(info("w.weight", {8, 8}), 2, 2), lris::invalid_argument,
                       what_contains("rank 2 of 2 ranks"));
  CHECK_THROWS_MATCHES(sharding::from_file("/nonexistent/tp.json"), lris::invalid_argument,
                       what_contains("sharding /nonexistent/tp.json: cannot be read"));
  CHECK_THROWS_MATCHES(sharding::from_json("{", "tp.json"), lris::invalid_argument,
                       what_contains("sharding tp.json: not JSON"));
  CHECK_THROWS_MATCHES(sharding::from_json("[1]", "tp.json"), lris::invalid_argument,
                       what_contains("a plan is a JSON object"));
  CHECK_THROWS_MATCHES(sharding::from_json(R"({"a": 3})", "tp.json"), lris::invalid_argument,
                       what_contains("pattern \"a\": the style is number"));
  CHECK_THROWS_MATCHES(sharding::from_json(R"({"a": "up"})", "tp.json"), lris::invalid_argument,
                       what_contains("(in tp.json)"));
}
