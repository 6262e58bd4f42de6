// Files: read a file into memory and write memory into a file through the io engine
// (io_uring, O_DIRECT for data not in the page cache). With a GPU backend the same calls take
// device spans and go through the pinned ring.
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <vector>

#include <lris/lris.hpp>

int main() {
  const auto path = std::filesystem::temp_directory_path() / "lris_files_example.bin";
  std::vector<float> weights(1 << 20);
  std::iota(weights.begin(), weights.end(), 0.0f);

  // [files]
  // Write a buffer into a file, then read it back: any offset, any size, any memory.
  {
    lris::io::file out(path, lris::io::open_mode::write);
    lris::write_file(out, 0, lris::as_host(weights)).wait();
    out.sync();
  }
  lris::io::file in(path);
  std::vector<float> back(weights.size());
  lris::transfer_stats st = lris::read_file(lris::as_host(back), in, 0).wait();
  std::printf("%.2f GB/s: %s\n", st.gbps(), st.io.c_str());  // what the io engine did, and why
  // [files]

  std::filesystem::remove(path);
  return back == weights ? 0 : 1;
}
