#include <catch2/catch.hpp>

#include "support/what_contains.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <lris/error.hpp>
#include <lris/exec/profile.hpp>

namespace fs = std::filesystem;

namespace {
// This process's directory of profile files, removed when the tests end.
struct test_dir {
  fs::path path = fs::temp_directory_path() / ("lris-profile-test-" + std::to_string(::getpid()));
  ~test_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};
fs::path temp_file(const char* name) {
  static const test_dir dir;
  fs::create_directories(dir.path);
  return dir.path / name;
}
void write(const fs::path& p, const char* text) { std::ofstream(p) << text; }
}  // namespace

TEST_CASE("profiles round-trip per backend and keep other entries", "[profile]") {
  const auto path = temp_file("a/b/profile.json");
  fs::remove(path);
  lris::transfer_profile host;
  host.parallel_min_bytes = 123456;
  host.chunk_bytes = 1 << 22;
  host.workers = 6;
  lris::save_profile(path, "host:0", host);
  lris::transfer_profile gpu;
  gpu.staged_min_bytes = 777;
  gpu.batch_max_item_bytes = 4321;
  lris::save_profile(path, "cuda:0", gpu);

  auto h = lris::load_profile(path, "host:0");
  CHECK(h.parallel_min_bytes == 123456);
  CHECK(h.chunk_bytes == (1u << 22));
  CHECK(h.workers == 6);
  CHECK(h.source == path.string());
  CHECK(lris::load_profile(path, "cuda:0").staged_min_bytes == 777);
  CHECK(lris::load_profile(path, "cuda:0").batch_max_item_bytes == 4321);
  // An unknown backend or a missing file gives the defaults.
  CHECK(lris::load_profile(path, "hip:3") == lris::transfer_profile{});
  CHECK(lris::load_profile(path.string() + ".missing", "host:0").source == "defaults");
}

TEST_CASE("malformed profiles are format errors naming the file and key", "[profile][errors]") {
  const auto path = temp_file("bad.json");
  SECTION("not JSON") {
    write(path, "{ nope");
    REQUIRE_THROWS_MATCHES(lris::load_profile(path, "host:0"), lris::format_error,
                           lris::test::what_contains(path.string()) &&
                               lris::test::what_contains("not valid JSON"));
  }
  SECTION("not an object") {
    write(path, "[1,2]");
    REQUIRE_THROWS_MATCHES(lris::load_profile(path, "host:0"), lris::format_error,
                           lris::test::what_contains("not a JSON object"));
  }
  SECTION("negative number") {
    write(path, R"({"host:0": {"workers": -3}})");
    REQUIRE_THROWS_MATCHES(lris::load_profile(path, "host:0"), lris::format_error,
                           lris::test::what_contains("\"host:0\".\"workers\""));
  }
  SECTION("out of range") {
    write(path, R"({"host:0": {"workers": 99999999999}})");
    REQUIRE_THROWS_MATCHES(lris::load_profile(path, "host:0"), lris::format_error,
                           lris::test::what_contains("out of range"));
  }
  SECTION("zero chunk") {
    write(path, R"({"host:0": {"chunk_bytes": 0}})");
    REQUIRE_THROWS_MATCHES(lris::load_profile(path, "host:0"), lris::format_error,
                           lris::test::what_contains("chunk_bytes"));
  }
  SECTION("entry not an object") {
    write(path, R"({"host:0": 5})");
    REQUIRE_THROWS_MATCHES(lris::load_profile(path, "host:0"), lris::format_error,
                           lris::test::what_contains("is not an object"));
  }
}

TEST_CASE("the profile path follows LRIS_PROFILE, then XDG_CONFIG_HOME, then HOME",
          "[profile]") {
  ::setenv("LRIS_PROFILE", "/x/p.json", 1);
  CHECK(lris::default_profile_path() == fs::path("/x/p.json"));
  ::unsetenv("LRIS_PROFILE");
  ::setenv("XDG_CONFIG_HOME", "/cfg", 1);
  CHECK(lris::default_profile_path() == fs::path("/cfg/lris/profile.json"));
  ::unsetenv("XDG_CONFIG_HOME");
  ::setenv("HOME", "/home/u", 1);
  CHECK(lris::default_profile_path() == fs::path("/home/u/.config/lris/profile.json"));
}

TEST_CASE("save_profile reports a directory it cannot create", "[profile][errors]") {
  const auto file = temp_file("plainfile");
  write(file, "x");
  REQUIRE_THROWS_AS(lris::save_profile(file / "sub" / "p.json", "host:0", {}), lris::io_error);
}

TEST_CASE("disk profiles round-trip beside the backends' entries", "[profile]") {
  const auto path = temp_file("disks/profile.json");
  fs::remove(path);
  lris::transfer_profile host;
  host.workers = 5;
  lris::save_profile(path, "host:0", host);
  lris::disk_profile d;
  d.method = lris::cold_read_method::both;
  d.workers = 12;
  d.buffered_every = 3;
  d.read_gbps = 2.5;
  lris::save_disk_profile(path, "disk 259:1", d);
  const auto got = lris::load_disk_profile(path, "disk 259:1");
  CHECK(got.method == lris::cold_read_method::both);
  CHECK(got.workers == 12);
  CHECK(got.buffered_every == 3);
  CHECK(got.read_gbps == 2.5);
  CHECK(got.source == path.string());
  CHECK(lris::load_profile(path, "host:0").workers == 5);  // kept
  CHECK(lris::load_disk_profile(path, "disk 8:0") == lris::disk_profile{});
  CHECK(lris::load_disk_profile(path.string() + ".missing", "disk 259:1").source == "defaults");
  CHECK(lris::to_string(lris::cold_read_method::buffered) == "buffered");
}

TEST_CASE("malformed disk profiles are format errors naming the file and key",
          "[profile][errors]") {
  const auto path = temp_file("bad-disk.json");
  SECTION("unknown method") {
    write(path, R"({"disk 8:0": {"method": "mmap"}})");
    REQUIRE_THROWS_MATCHES(lris::load_disk_profile(path, "disk 8:0"), lris::format_error,
                           lris::test::what_contains(path.string()) &&
                               lris::test::what_contains("\"disk 8:0\".\"method\"") &&
                               lris::test::what_contains("\"mmap\""));
  }
  SECTION("method not a string") {
    write(path, R"({"disk 8:0": {"method": 1}})");
    REQUIRE_THROWS_MATCHES(lris::load_disk_profile(path, "disk 8:0"), lris::format_error,
                           lris::test::what_contains("must be \"direct\", \"buffered\" or \"both\""));
  }
  SECTION("buffered_every below 2") {
    write(path, R"({"disk 8:0": {"method": "both", "buffered_every": 1}})");
    REQUIRE_THROWS_MATCHES(lris::load_disk_profile(path, "disk 8:0"), lris::format_error,
                           lris::test::what_contains("\"buffered_every\" must be at least 2"));
  }
  SECTION("negative workers") {
    write(path, R"({"disk 8:0": {"workers": -1}})");
    REQUIRE_THROWS_MATCHES(lris::load_disk_profile(path, "disk 8:0"), lris::format_error,
                           lris::test::what_contains("\"disk 8:0\".\"workers\""));
  }
  SECTION("entry not an object") {
    write(path, R"({"disk 8:0": "fast"})");
    REQUIRE_THROWS_MATCHES(lris::load_disk_profile(path, "disk 8:0"), lris::format_error,
                           lris::test::what_contains("is not an object"));
  }
}
