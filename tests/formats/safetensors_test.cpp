// The safetensors header parser: valid files of every shape of entry, and a negative corpus in
// which every file breaks exactly one rule and must be refused with that rule's error.
#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <lris/formats/safetensors.hpp>

namespace st = lris::safetensors;
using st::error_kind;

namespace {

// A file: the 8-byte length (or `length` when given), the header text, `data` bytes of data.
std::filesystem::path make_file(const std::string& name, const std::string& header_text,
                                std::size_t data, long long length = -1) {
  const auto dir = std::filesystem::current_path() / "safetensors_test_files";
  std::filesystem::create_directories(dir);
  const auto path = dir / name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  const std::uint64_t n = length >= 0 ? static_cast<std::uint64_t>(length) : header_text.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  out << header_text;
  for (std::size_t i = 0; i < data; ++i) out.put(static_cast<char>(i * 7 + 1));
  return path;
}

error_kind kind_of(const std::filesystem::path& p) {
  try {
    (void)st::read_header(p);
  } catch (const st::error& e) {
    INFO(e.what());
    CHECK(std::string(e.what()).find(p.string()) != std::string::npos);  // names the file
    return e.kind();
  }
  FAIL("accepted: " << p.string());
  return error_kind::invalid_json;
}

}  // namespace

TEST_CASE("safetensors: a valid header, every kind of entry", "[formats][safetensors]") {
  const std::string h = R"({"__metadata__":{"format":"pt","note":"ünïcode"},)"
                        R"("w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},)"
                        R"("b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]},)"
                        R"("scalar":{"dtype":"I64","shape":[],"data_offsets":[32,40]},)"
                        R"("empty":{"dtype":"F16","shape":[0,5],"data_offsets":[40,40]},)"
                        R"("f4":{"dtype":"F4","shape":[6],"data_offsets":[40,43]},)"
                        R"("f6":{"dtype":"F6_E3M2","shape":[4],"data_offsets":[43,46]},)"
                        R"("fnuz":{"dtype":"F8_E4M3FNUZ","shape":[2],"data_offsets":[46,48]}}   )";
  const auto p = make_file("valid.safetensors", h, 48);
  const st::header hd = st::read_header(p);
  CHECK(hd.header_bytes == h.size());
  CHECK(hd.data_offset == 8 + h.size());
  REQUIRE(hd.tensors.size() == 7);
  CHECK(hd.metadata.at("format") == "pt");
  CHECK(hd.metadata.at("note") == "ünïcode");
  const st::tensor_info* w = hd.find("w");
  REQUIRE(w != nullptr);
  CHECK(w->type == lris::dtype::F32);
  CHECK(w->shape == std::vector<std::uint64_t>{2, 3});
  CHECK(w->elements() == 6);
  CHECK(w->bytes() == 24);
  CHECK(hd.file_offset(*w) == 8 + h.size());
  CHECK(hd.find("scalar")->elements() == 1);
  CHECK(hd.find("empty")->bytes() == 0);
  CHECK(hd.find("missing") == nullptr);
  // In data order.
  for (std::size_t i = 1; i < hd.tensors.size(); ++i) {
    CHECK(hd.tensors[i - 1].end == hd.tensors[i].begin);
  }
  // No tensors at all, and no data: valid.
  CHECK(st::read_header(make_file("nothing.safetensors", "{}", 0)).tensors.empty());
}

TEST_CASE("safetensors: the negative corpus, one rule broken per file",
          "[formats][safetensors][errors]") {
  const std::string ok_entry = R"("t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  struct bad_file {
    const char* name;
    std::string header;
    std::size_t data;
    long long length;  // -1: the header's size
    error_kind kind;
  };
  const std::vector<bad_file> corpus = {
      {"too_small", "", 0, -2, error_kind::file_too_small},
      {"header_too_large", "{}", 0, 100'000'001, error_kind::header_too_large},
      {"header_past_end", "{}", 0, 50, error_kind::header_past_end},
      {"not_utf8", "{\"t\xff\":1}", 0, -1, error_kind::header_not_utf8},
      {"overlong_utf8", "{\"\xc0\xaf\":1}", 0, -1, error_kind::header_not_utf8},
      {"leading_space", " {}", 0, -1, error_kind::header_bad_start},
      {"not_json", "{not json", 0, -1, error_kind::invalid_json},
      {"array_root", "{}[]", 0, -1, error_kind::invalid_json},
      {"duplicate_tensor", "{" + ok_entry + "," + ok_entry + "}", 8, -1, error_kind::duplicate_key},
      {"duplicate_field", R"({"t":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
       8, -1, error_kind::duplicate_key},
      {"metadata_number", R"({"__metadata__":{"a":1}})", 0, -1, error_kind::metadata_not_strings},
      {"metadata_array", R"({"__metadata__":["a"]})", 0, -1, error_kind::metadata_not_strings},
      {"entry_string", R"({"t":"F32"})", 0, -1, error_kind::entry_not_object},
      {"no_dtype", R"({"t":{"shape":[2],"data_offsets":[0,8]}})", 8, -1, error_kind::missing_field},
      {"no_offsets", R"({"t":{"dtype":"F32","shape":[2]}})", 8, -1, error_kind::missing_field},
      {"unknown_dtype", R"({"t":{"dtype":"F128","shape":[2],"data_offsets":[0,8]}})", 8, -1,
       error_kind::unknown_dtype},
      {"lowercase_dtype", R"({"t":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}})", 8, -1,
       error_kind::unknown_dtype},
      {"negative_dim", R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8, -1,
       error_kind::bad_shape},
      {"float_dim", R"({"t":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8, -1,
       error_kind::bad_shape},
      {"shape_overflow",
       R"({"t":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8, -1,
       error_kind::shape_overflow},
      {"bytes_overflow", R"({"t":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]}})",
       8, -1, error_kind::shape_overflow},
      {"f4_odd", R"({"t":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}})", 2, -1,
       error_kind::sub_byte_misaligned},
      {"offsets_reversed", R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8, -1,
       error_kind::bad_offsets},
      {"offsets_three", R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8,9]}})", 8, -1,
       error_kind::bad_offsets},
      {"size_mismatch", R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8, -1,
       error_kind::size_mismatch},
      {"overlap",
       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
       12, -1, error_kind::overlap},
      {"gap",
       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})",
       20, -1, error_kind::gap},
      {"gap_at_start", R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12, -1,
       error_kind::gap},
      {"trailing_data", "{" + ok_entry + "}", 9, -1, error_kind::data_not_covered},
      {"data_missing", "{" + ok_entry + "}", 7, -1, error_kind::data_not_covered},
  };
  REQUIRE(corpus.size() >= 20);
  for (const auto& b : corpus) {
    CAPTURE(b.name);
    std::filesystem::path p;
    if (b.length == -2) {  // four bytes: not even a header length
      p = std::filesystem::current_path() / "safetensors_test_files" / "too_small";
      std::filesystem::create_directories(p.parent_path());
      std::ofstream(p, std::ios::binary) << "abcd";
    } else {
      p = make_file(b.name, b.header, b.data, b.length);
    }
    const error_kind got = kind_of(p);
    CHECK(st::to_string(got) == st::to_string(b.kind));
  }
}

TEST_CASE("safetensors: errors name the tensor and the offset", "[formats][safetensors][errors]") {
  const auto p = make_file("named.safetensors",
                           R"({"layer.0.w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8);
  try {
    (void)st::read_header(p);
    FAIL("accepted");
  } catch (const st::error& e) {
    const std::string what = e.what();
    CHECK(what.find("\"layer.0.w\"") != std::string::npos);
    CHECK(what.find("file offset") != std::string::npos);
    CHECK(what.find("needs 12") != std::string::npos);
  }
  REQUIRE_THROWS_AS(st::read_header("/nonexistent/model.safetensors"), lris::io_error);
}
