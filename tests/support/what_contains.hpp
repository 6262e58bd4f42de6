#pragma once
// A Catch2 matcher for exceptions whose what() contains a text, for REQUIRE_THROWS_MATCHES:
//   REQUIRE_THROWS_MATCHES(f(), lris::invalid_argument, what_contains("100 bytes"));

#include <exception>
#include <string>

#include <catch2/catch.hpp>

namespace lris::test {

class what_contains : public Catch::MatcherBase<std::exception> {
 public:
  explicit what_contains(std::string text) : text_(std::move(text)) {}
  bool match(const std::exception& e) const override {
    return std::string(e.what()).find(text_) != std::string::npos;
  }
  std::string describe() const override { return "has a message containing \"" + text_ + "\""; }

 private:
  std::string text_;
};

}  // namespace lris::test
