#pragma once
// Timing helpers shared by `lris bench`, `lris calibrate` and `lris demo`.

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

namespace lris::tool {

/// The median rate in GB/s of `op` moving `bytes` per call. Calls are batched so that each
/// timed sample lasts at least ~2 ms; at least `min_samples` samples and `min_seconds` in all.
double measure_gbps(std::size_t bytes, const std::function<void()>& op, int min_samples = 5,
                    double min_seconds = 0.05);

/// The best rate of raw_copy_team (plain memcpy, one slice per thread, no LRIS code) over
/// 1, 2, 4, ... up to `max_threads` threads, and the thread count that reached it.
struct ceiling {
  double gbps = 0;
  unsigned threads = 0;
};
ceiling measure_host_copy_ceiling(void* dst, const void* src, std::size_t bytes,
                                  unsigned max_threads);

/// The median of `v` (the upper one of an even count); 0 for none.
double median(std::vector<double> v);

/// Touches every page so that first-touch faults stay out of timings.
void prefault(void* p, std::size_t bytes);

/// Evicts the file from the page cache: drop_caches as root (after a sync), and in any case
/// POSIX_FADV_DONTNEED on the file, which drops its clean pages without privileges. Returns
/// which of the two it did, for the report.
std::string make_cold(const std::string& path);

/// "64 KiB", "1 GiB": sizes for table headers.
std::string size_label(std::size_t bytes);

/// Parses "64K", "1M", "1G", "4096" into bytes; throws lris::invalid_argument naming the text.
std::size_t parse_size(const std::string& text);

/// A --device value: "cuda:1" is {"cuda", 1}, "host" is {"host", 0}; throws
/// lris::invalid_argument naming the text when the number is not one.
struct device_name {
  std::string kind;
  int index = 0;
};
device_name parse_device(const std::string& text);

/// A progress bar on stderr, redrawn at most every 50 ms, only when stderr is a terminal.
class progress_bar {
 public:
  explicit progress_bar(std::string label);
  ~progress_bar();
  progress_bar(const progress_bar&) = delete;
  progress_bar& operator=(const progress_bar&) = delete;
  void update(double fraction);
  void done();

 private:
  std::string label_;
  bool tty_;
  bool finished_ = false;
  double last_draw_ = -1;
};

}  // namespace lris::tool
