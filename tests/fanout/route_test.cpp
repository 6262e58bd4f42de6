#include <catch2/catch.hpp>

#include "support/what_contains.hpp"

#include <string>
#include <vector>

#include <lris/error.hpp>
#include <lris/fanout/nccl.hpp>
#include <lris/fanout/route.hpp>

namespace fo = lris::fanout;
using lris::test::what_contains;

namespace {
std::vector<std::string> names(std::size_t n) {
  std::vector<std::string> v;
  for (std::size_t d = 0; d < n; ++d) v.push_back("cuda:" + std::to_string(d));
  return v;
}
}  // namespace

TEST_CASE("choose_route: one device is a plain load") {
  const auto r = fo::choose_route(fo::device_links::uniform(names(1), fo::link_kind::unknown));
  CHECK(r.path == fo::fan_path::dma);
  CHECK_THAT(r.reason, Catch::Contains("plain load"));
}

TEST_CASE("choose_route: a pair without NVLink sends every device over its own link") {
  auto links = fo::device_links::uniform(names(4), fo::link_kind::nvlink);
  links.set(2, 3, fo::link_kind::pcie, "PCIe through one host bridge (NVML)");
  const auto r = fo::choose_route(links);
  CHECK(r.path == fo::fan_path::dma);
  CHECK_THAT(r.reason, Catch::Contains("cuda:2 reaches cuda:3 by PCIe through one host bridge"));

  const auto unknown = fo::choose_route(fo::device_links::uniform(names(2), fo::link_kind::unknown));
  CHECK(unknown.path == fo::fan_path::dma);
  CHECK_THAT(unknown.reason, Catch::Contains("an unknown link (nothing tells)"));
  const auto none = fo::choose_route(fo::device_links::uniform(names(2), fo::link_kind::none));
  CHECK_THAT(none.reason, Catch::Contains("no peer access"));
}

TEST_CASE("choose_route: NVLink everywhere crosses PCIe once per chunk, by peer copies") {
  const auto r = fo::choose_route(fo::device_links::uniform(names(8), fo::link_kind::nvlink));
  CHECK(r.path == fo::fan_path::peer);
  CHECK_THAT(r.reason, Catch::Contains("NVLink between every pair"));
  CHECK_THAT(r.reason, Catch::Contains("NCCL's broadcast only when asked for"));
}

TEST_CASE("device_links: every pair, whatever the diagonal says") {
  // As links_of fills them: the pairs set, the diagonal left unknown.
  auto links = fo::device_links::uniform(names(3), fo::link_kind::unknown);
  for (std::size_t a = 0; a < 3; ++a) {
    for (std::size_t b = 0; b < 3; ++b) {
      if (a != b) links.set(a, b, fo::link_kind::nvlink, "NVLink (NVML)");
    }
  }
  CHECK(links.every_pair(fo::link_kind::nvlink));
  CHECK(fo::choose_route(links).path == fo::fan_path::peer);
  links.set(1, 0, fo::link_kind::pcie);
  CHECK_FALSE(links.every_pair(fo::link_kind::nvlink));
  CHECK(fo::device_links::uniform(names(1), fo::link_kind::unknown).every_pair(fo::link_kind::nvlink));
}

TEST_CASE("device_links: a pair outside the devices is refused", "[errors]") {
  auto links = fo::device_links::uniform(names(2), fo::link_kind::pcie);
  CHECK_THROWS_MATCHES(links.set(0, 2, fo::link_kind::nvlink), lris::invalid_argument,
                       what_contains("devices 0 and 2 of 2"));
  fo::device_links bad;
  bad.names = names(2);
  CHECK_THROWS_AS(fo::choose_route(bad), lris::invalid_argument);
}

TEST_CASE("nccl_library: a library that is not there says why, and makes no group", "[errors]") {
  const fo::nccl_library missing("cuda", "/nonexistent/libnccl.so.2");
  CHECK_FALSE(missing.available());
  CHECK_THAT(missing.why(), Catch::Contains("/nonexistent/libnccl.so.2"));
  CHECK(missing.describe().empty());
  CHECK_THROWS_MATCHES(fo::nccl_group(missing, {0}), lris::unsupported,
                       what_contains("NCCL is not available: /nonexistent/libnccl.so.2"));
}

TEST_CASE("nccl_library: a library without NCCL's entry points names the missing ones",
          "[errors]") {
  const fo::nccl_library wrong("cuda", "libc.so.6");
  CHECK_FALSE(wrong.available());
  CHECK_THAT(wrong.why(), Catch::Contains("libc.so.6 lacks ncclGetVersion, ncclCommInitAll"));
}

TEST_CASE("nccl_library: where NCCL is installed, it loads and names its version") {
  const fo::nccl_library nccl("cuda");
  if (!nccl.available()) {
    CHECK_FALSE(nccl.why().empty());
    return;
  }
  CHECK_THAT(nccl.describe(), Catch::StartsWith("NCCL 2.") && Catch::EndsWith("(libnccl.so.2)"));
  // Without a GPU, or for a device that does not exist, the communicators are a typed error
  // naming the devices, never a crash.
  CHECK_THROWS_MATCHES(fo::nccl_group(nccl, {4096}), lris::device_error,
                       what_contains("ncclCommInitAll for devices 4096 failed"));
}
