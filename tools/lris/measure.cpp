#include "measure.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "../common/raw_copy_team.hpp"

#include <lris/error.hpp>
#include <lris/system/format_bytes.hpp>

namespace lris::tool {

namespace {
using clock_type = std::chrono::steady_clock;
double seconds_since(clock_type::time_point t) {
  return std::chrono::duration<double>(clock_type::now() - t).count();
}
}  // namespace

double measure_gbps(std::size_t bytes, const std::function<void()>& op, int min_samples,
                    double min_seconds) {
  op();  // warm-up: first-use costs (thread start, slot allocation) are not the rate
  // Batch small operations so a sample is long enough to time.
  int batch = 1;
  for (;;) {
    const auto t = clock_type::now();
    for (int i = 0; i < batch; ++i) op();
    const double s = seconds_since(t);
    if (s >= 0.002 || batch >= (1 << 20)) break;
    batch *= s > 0 ? std::max(2, static_cast<int>(0.002 / s) + 1) : 16;
  }
  std::vector<double> rates;
  const auto start = clock_type::now();
  while (static_cast<int>(rates.size()) < min_samples || seconds_since(start) < min_seconds) {
    const auto t = clock_type::now();
    for (int i = 0; i < batch; ++i) op();
    rates.push_back(static_cast<double>(bytes) * batch / seconds_since(t) / 1e9);
    if (rates.size() >= 1000) break;
  }
  std::nth_element(rates.begin(), rates.begin() + rates.size() / 2, rates.end());
  return rates[rates.size() / 2];
}

ceiling measure_host_copy_ceiling(void* dst, const void* src, std::size_t bytes,
                                  unsigned max_threads) {
  ceiling best;
  for (unsigned t = 1;; t = std::min(t * 2, max_threads)) {
    raw_copy_team team(t);
    const double g = measure_gbps(bytes, [&] { team.copy(dst, src, bytes); });
    if (g > best.gbps) best = {g, t};
    if (t >= max_threads) break;
  }
  return best;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

void prefault(void* p, std::size_t bytes) {
  const long page = ::sysconf(_SC_PAGESIZE);
  auto* c = static_cast<volatile char*>(p);
  for (std::size_t off = 0; off < bytes; off += static_cast<std::size_t>(page)) c[off] = 1;
}

std::string size_label(std::size_t bytes) { return format_bytes(bytes); }

device_name parse_device(const std::string& text) {
  const auto colon = text.find(':');
  device_name d{text.substr(0, colon), 0};
  if (colon != std::string::npos) {
    try {
      d.index = std::stoi(text.substr(colon + 1));
    } catch (const std::exception&) {
      throw invalid_argument(fmt::format("--device \"{}\": the device number is not a number", text));
    }
  }
  return d;
}

std::size_t parse_size(const std::string& text) {
  std::size_t pos = 0;
  unsigned long long v = 0;
  auto not_a_size = [&] {
    return invalid_argument(fmt::format("'{}' is not a size (examples: 4096, 64K, 16M, 1G)", text));
  };
  // std::stoull takes "-4096" as 2^64 - 4096: only digits may start a size.
  if (text.empty() || text.front() < '0' || text.front() > '9') throw not_a_size();
  try {
    v = std::stoull(text, &pos);
  } catch (const std::exception&) {
    throw not_a_size();
  }
  std::string suffix = text.substr(pos);
  if (!suffix.empty() && (suffix.back() == 'B' || suffix.back() == 'b')) suffix.pop_back();
  int shift = 0;
  if (suffix.empty()) shift = 0;
  else if (suffix == "K" || suffix == "k" || suffix == "Ki") shift = 10;
  else if (suffix == "M" || suffix == "m" || suffix == "Mi") shift = 20;
  else if (suffix == "G" || suffix == "g" || suffix == "Gi") shift = 30;
  else throw invalid_argument(fmt::format("'{}' has an unknown unit (use K, M or G)", text));
  if (shift && v > (~0ull >> shift)) {
    throw invalid_argument(fmt::format("'{}' is too large", text));
  }
  return static_cast<std::size_t>(v << shift);
}

progress_bar::progress_bar(std::string label)
    : label_(std::move(label)), tty_(::isatty(STDERR_FILENO) == 1) {}

progress_bar::~progress_bar() { done(); }

void progress_bar::update(double fraction) {
  if (!tty_ || finished_) return;
  static thread_local auto last = clock_type::now() - std::chrono::seconds(1);
  if (fraction < 1.0 && clock_type::now() - last < std::chrono::milliseconds(50)) return;
  last = clock_type::now();
  fraction = std::clamp(fraction, 0.0, 1.0);
  if (fraction == last_draw_) return;
  last_draw_ = fraction;
  constexpr int width = 30;
  const int filled = static_cast<int>(fraction * width);
  fmt::print(stderr, "\r  {:<28} [{}{}] {:3.0f}%", label_, std::string(filled, '#'),
             std::string(width - filled, '.'), fraction * 100);
  std::fflush(stderr);
}

void progress_bar::done() {
  if (finished_) return;
  finished_ = true;
  if (tty_ && last_draw_ >= 0) fmt::print(stderr, "\r{:70}\r", "");
}

std::string make_cold(const std::string& path) {
  ::sync();
  bool dropped = false;
  if (::geteuid() == 0) {
    std::ofstream drop("/proc/sys/vm/drop_caches");
    dropped = static_cast<bool>(drop << "3\n");
  }
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
  return dropped ? "page cache dropped (drop_caches, as root) before each cold read"
                 : "file evicted with POSIX_FADV_DONTNEED before each cold read (not root)";
}

}  // namespace lris::tool
