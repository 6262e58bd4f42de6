// The safetensors writer: headers the reference (safetensors 0.8.0) wrote for the same tensors,
// kept here byte for byte; files through the io engine; and every input the writer refuses.
// safetensors_reference_test compares with whole files the reference writes at test time.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <lris/error.hpp>
#include <lris/formats/safetensors.hpp>
#include <lris/formats/safetensors_writer.hpp>

#include "support/random_bytes.hpp"
#include "support/what_contains.hpp"

namespace st = lris::safetensors;
using lris::dtype;
using lris::test::what_contains;
using namespace std::string_literals;

namespace {

std::string header_text(const st::layout& l) {
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<std::uint8_t>(l.header[i]);
  REQUIRE(n == l.header.size() - 8);
  return {reinterpret_cast<const char*>(l.header.data()) + 8, l.header.size() - 8};
}

std::filesystem::path test_dir() {
  const auto dir = std::filesystem::current_path() / "safetensors_test_files" / "writer";
  std::filesystem::create_directories(dir);
  return dir;
}

std::vector<std::byte> file_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::vector<char> v{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  std::vector<std::byte> out(v.size());
  std::memcpy(out.data(), v.data(), v.size());
  return out;
}

// What is in `dir` besides `keep`: a writer that failed or finished leaves nothing there.
std::vector<std::string> others_in(const std::filesystem::path& dir, const std::string& keep) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().filename() != keep) out.push_back(e.path().filename().string());
  }
  return out;
}

}  // namespace

TEST_CASE("safetensors writer: the reference's order, offsets and header",
          "[formats][safetensors][writer]") {
  // serialize({"b": float32[2], "a": float32[2], "c": uint8[3], "d": float64[1], "B": int8[1],
  //            "s": int64 scalar, "e": float16[3,0], "f4": float4_e2m1fn_x2[2,1]},
  //           metadata={"format": "pt"}) in safetensors 0.8.0.
  const std::vector<st::tensor_to_write> tensors = {
      {"b", dtype::F32, {2}, 8},   {"a", dtype::F32, {2}, 8},     {"c", dtype::U8, {3}, 3},
      {"d", dtype::F64, {1}, 8},   {"B", dtype::I8, {1}, 1},      {"s", dtype::I64, {}, 8},
      {"e", dtype::F16, {3, 0}, 0}, {"f4", dtype::F4, {2, 2}, 2}};
  const st::layout l = st::plan_file(tensors, {{"format", "pt"}});
  CHECK(header_text(l) ==
        R"({"__metadata__":{"format":"pt"},"s":{"dtype":"I64","shape":[],"data_offsets":[0,8]},)"
        R"("d":{"dtype":"F64","shape":[1],"data_offsets":[8,16]},)"
        R"("a":{"dtype":"F32","shape":[2],"data_offsets":[16,24]},)"
        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[24,32]},)"
        R"("e":{"dtype":"F16","shape":[3,0],"data_offsets":[32,32]},)"
        R"("B":{"dtype":"I8","shape":[1],"data_offsets":[32,33]},)"
        R"("c":{"dtype":"U8","shape":[3],"data_offsets":[33,36]},)"
        R"("f4":{"dtype":"F4","shape":[2,2],"data_offsets":[36,38]}}  )");
  CHECK(l.data_offset() == 8 + 472);
  CHECK(l.file_bytes() == 8 + 472 + 38);
  const std::vector<std::size_t> inputs = {5, 3, 1, 0, 6, 4, 2, 7};
  REQUIRE(l.tensors.size() == inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const st::placed_tensor& p = l.tensors[i];
    CHECK(p.input == inputs[i]);
    CHECK(p.info.name == tensors[p.input].name);
    CHECK(p.info.shape == tensors[p.input].shape);
    CHECK(p.file_offset == l.data_offset() + p.info.begin);
    CHECK(p.info.bytes() == tensors[p.input].bytes);
  }

  // The example of the reference's own tests: a header of exactly 64 bytes, no padding.
  const std::vector<st::tensor_to_write> one = {{"attn.0", dtype::F32, {1, 2, 3}, 24}};
  CHECK(header_text(st::plan_file(one)) ==
        R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})");
}

TEST_CASE("safetensors writer: escapes and name order as serde_json and Rust",
          "[formats][safetensors][writer]") {
  // Control characters, quote, backslash, slash, DEL, é, U+2028 and an emoji in one name;
  // names ordered bytewise ("" < "\0..." < "Z" < "z" < "é").
  const std::string odd = "\x00\x01\x08\t\n\x0b\x0c\r\x1f \"\\/\x7f\xc3\xa9\xe2\x80\xa8\xf0\x9f\x98\x80"s;
  const std::vector<st::tensor_to_write> tensors = {{odd, dtype::U8, {1}, 1},
                                                    {"", dtype::U8, {0}, 0},
                                                    {"z", dtype::U8, {1}, 1},
                                                    {"\xc3\xa9", dtype::U8, {1}, 1},
                                                    {"Z", dtype::U8, {1}, 1}};
  const st::layout l = st::plan_file(tensors, {{"k\n", "v\xc3\xa9\x01"}});
  CHECK(header_text(l) ==
        R"({"__metadata__":{"k\n":"v)" "\xc3\xa9" R"(\u0001"},)"
        R"("":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},)"
        R"("\u0000\u0001\b\t\n\u000b\f\r\u001f \"\\/)" "\x7f\xc3\xa9\xe2\x80\xa8\xf0\x9f\x98\x80"
        R"(":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
        R"("Z":{"dtype":"U8","shape":[1],"data_offsets":[1,2]},)"
        R"("z":{"dtype":"U8","shape":[1],"data_offsets":[2,3]},)"
        "\"\xc3\xa9\"" R"(:{"dtype":"U8","shape":[1],"data_offsets":[3,4]}}       )");
  // And the parser reads back every name as it was given.
  std::vector<std::byte> file = l.header;
  file.resize(l.file_bytes());
  const st::header h = st::parse_header(file, file.size(), "escapes");
  CHECK(h.metadata.at("k\n") == "v\xc3\xa9\x01");
  for (const auto& t : tensors) CHECK(h.find(t.name) != nullptr);
}

TEST_CASE("safetensors writer: no tensors, empty and absent metadata",
          "[formats][safetensors][writer]") {
  CHECK(header_text(st::plan_file({})) == "{}      ");
  CHECK(header_text(st::plan_file({}, {{"k", "v"}})) == R"({"__metadata__":{"k":"v"}}      )");
  // Where the reference writes `{},"__metadata__":{}}`, which is not JSON.
  CHECK(header_text(st::plan_file({}, {})) == R"({"__metadata__":{}}     )");
  // metadata={} with tensors: written, empty.
  const std::vector<st::tensor_to_write> t = {{"t", dtype::U8, {1}, 1}};
  CHECK(header_text(st::plan_file(t, {})) ==
        R"({"__metadata__":{},"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}} )");
  for (const auto& l : {st::plan_file({}), st::plan_file({}, {}), st::plan_file(t, {})}) {
    std::vector<std::byte> file = l.header;
    file.resize(l.file_bytes());
    CHECK_NOTHROW(st::parse_header(file, file.size(), "empty"));
  }
}

TEST_CASE("safetensors writer: every dtype, in the reference's order",
          "[formats][safetensors][writer]") {
  std::vector<st::tensor_to_write> tensors;
  for (const dtype d : lris::all_dtypes) {
    // Eight elements end on a byte boundary for every width.
    tensors.push_back({std::string(lris::to_string(d)), d, {2, 4}, lris::bits_of(d)});
  }
  const st::layout l = st::plan_file(tensors);
  REQUIRE(l.tensors.size() == lris::all_dtypes.size());
  for (std::size_t i = 0; i < l.tensors.size(); ++i) {
    CHECK(l.tensors[i].info.type == lris::all_dtypes[lris::all_dtypes.size() - 1 - i]);
  }
  CHECK(l.data_offset() % 8 == 0);
}

TEST_CASE("safetensors writer: serialize and save_file write the same bytes",
          "[formats][safetensors][writer]") {
  const auto w = lris::test::random_bytes(4 << 20, 1);  // past the gathering of small pieces
  const auto b = lris::test::random_bytes(6, 2);
  const auto f6 = lris::test::random_bytes(3, 3);
  const std::vector<st::tensor_view> tensors = {{"w", dtype::F32, {1024, 1024}, w},
                                                {"b", dtype::BF16, {3}, b},
                                                {"f6", dtype::F6_E3M2, {4}, f6},
                                                {"none", dtype::F64, {0, 7}, {}}};
  const st::metadata_map meta = {{"format", "pt"}, {"note", "\xc3\xbcnicode"}};
  const std::vector<std::byte> mem = st::serialize(tensors, meta);

  const auto dir = test_dir() / "save";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const auto path = dir / "model.safetensors";
  const lris::io::io_stats stats = st::save_file(path, tensors, meta);
  CHECK(stats.bytes == mem.size());
  CHECK(file_bytes(path) == mem);
  CHECK(others_in(dir, "model.safetensors").empty());

  const st::header h = st::read_header(path);
  CHECK(h.metadata == meta);
  REQUIRE(h.tensors.size() == 4);
  for (const auto& t : tensors) {
    const st::tensor_info* info = h.find(t.name);
    REQUIRE(info != nullptr);
    CHECK(info->type == t.type);
    CHECK(info->shape == t.shape);
    REQUIRE(info->bytes() == t.data.size());
    CHECK(std::equal(t.data.begin(), t.data.end(), mem.begin() + h.file_offset(*info)));
  }

  // Saving again replaces the file whole.
  const std::vector<st::tensor_view> smaller = {{"b", dtype::BF16, {3}, b}};
  (void)st::save_file(path, smaller);
  CHECK(file_bytes(path) == st::serialize(smaller));
  CHECK(others_in(dir, "model.safetensors").empty());
}

TEST_CASE("safetensors writer: a failed save leaves the old file and nothing else",
          "[formats][safetensors][writer][errors]") {
  const auto dir = test_dir() / "failed";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const auto path = dir / "model.safetensors";
  const auto b = lris::test::random_bytes(8, 4);
  const std::vector<st::tensor_view> good = {{"t", dtype::F32, {2}, b}};
  (void)st::save_file(path, good);
  const std::vector<std::byte> before = file_bytes(path);

  const std::vector<st::tensor_view> bad = {{"t", dtype::F32, {3}, b}};
  REQUIRE_THROWS_MATCHES(st::save_file(path, bad), lris::invalid_argument,
                         what_contains(path.string()));
  CHECK(file_bytes(path) == before);
  CHECK(others_in(dir, "model.safetensors").empty());

  // A directory that does not exist: an io_error naming the file, which is not created.
  const auto missing = dir / "no such directory" / "model.safetensors";
  REQUIRE_THROWS_MATCHES(st::save_file(missing, good), lris::io_error,
                         what_contains(missing.string()));
  // A directory in the way of the rename: refused, the temporary file removed.
  std::filesystem::create_directories(dir / "taken.safetensors" / "x");
  REQUIRE_THROWS_MATCHES(st::save_file(dir / "taken.safetensors", good), lris::io_error,
                         what_contains("taken.safetensors"));
  std::filesystem::remove_all(dir / "taken.safetensors");
  CHECK(others_in(dir, "model.safetensors").empty());
}

TEST_CASE("safetensors writer: refused inputs name the tensor",
          "[formats][safetensors][writer][errors]") {
  using t = st::tensor_to_write;
  struct refused {
    const char* what;
    std::vector<t> tensors;
    std::string message;  // in what(), besides the tensor's name
  };
  // The largest tensor has 2^61 - 1 bytes (its bits count in 64 bits); nine pass 2^64 bytes.
  std::vector<t> nine_largest;
  for (int i = 0; i < 9; ++i) {
    const std::uint64_t n = (1ull << 61) - 1;
    nine_largest.push_back({"w." + std::to_string(i), dtype::U8, {n}, n});
  }
  const std::vector<refused> cases = {
      {"duplicate", {{"w.0", dtype::F32, {1}, 4}, {"w.0", dtype::F16, {2}, 4}}, "twice"},
      {"reserved", {{"__metadata__", dtype::F32, {1}, 4}}, "the metadata's"},
      {"too few bytes", {{"w.0", dtype::F32, {2, 3}, 20}}, "20 bytes given but F32 [2,3] holds 24"},
      {"too many bytes", {{"w.0", dtype::U8, {}, 2}}, "2 bytes given but U8 [] holds 1"},
      {"f4 odd", {{"w.0", dtype::F4, {3}, 2}}, "do not end on a byte boundary"},
      {"f6 odd", {{"w.0", dtype::F6_E2M3, {2, 3}, 5}}, "do not end on a byte boundary"},
      {"shape overflow", {{"w.0", dtype::U8, {1ull << 32, 1ull << 32}, 0}}, "more than 2^64"},
      {"bytes overflow", {{"w.0", dtype::F64, {1ull << 62}, 0}}, "overflow 64 bits"},
      {"not a dtype", {{"w.0", static_cast<dtype>(200), {1}, 1}}, "is not a dtype"},
      {"not utf-8", {{"w.\xff", dtype::U8, {1}, 1}}, "not UTF-8"},
      {"total overflow", nine_largest, "more than 2^64 bytes"},
  };
  for (const refused& c : cases) {
    CAPTURE(c.what);
    try {
      (void)st::plan_file(c.tensors);
      FAIL("accepted");
    } catch (const lris::invalid_argument& e) {
      const std::string what = e.what();
      CAPTURE(what);
      CHECK(what.find(c.message) != std::string::npos);
      if (std::string(c.what) != "total overflow") {
        const std::string name = c.tensors[0].name == "w.\xff" ? "\"w.\xef\xbf\xbd\"" :
                                 "\"" + c.tensors[0].name + "\"";
        CHECK(what.find(name) != std::string::npos);
      }
    }
  }

  // Metadata that is not UTF-8, and a header no reader would open.
  const std::vector<t> one = {{"w", dtype::U8, {1}, 1}};
  REQUIRE_THROWS_MATCHES(st::plan_file(one, {{"k\xfe", "v"}}), lris::invalid_argument,
                         what_contains("not UTF-8"));
  REQUIRE_THROWS_MATCHES(st::plan_file(one, {{"k", "v\xc0\xaf"}}), lris::invalid_argument,
                         what_contains("__metadata__ \"k\""));
  REQUIRE_THROWS_MATCHES(st::plan_file(one, {{"k", std::string(st::max_header_bytes, 'x')}}),
                         lris::invalid_argument, what_contains("over the 100000000"));

  // Views: the span's size is the tensor's size.
  const auto b = lris::test::random_bytes(7, 5);
  const std::vector<st::tensor_view> short_view = {{"layer.1.w", dtype::I16, {4}, b}};
  REQUIRE_THROWS_MATCHES(st::serialize(short_view), lris::invalid_argument,
                         what_contains("\"layer.1.w\": 7 bytes given but I16 [4] holds 8"));
}
