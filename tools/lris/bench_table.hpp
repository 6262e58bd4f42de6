#pragma once
// A table of `lris bench`: rows of one transfer measured at several sizes, each cell with its
// ratio to a ceiling measured in the same run.

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <lris/config.hpp>
#include <lris/exec/stats.hpp>

namespace lris::tool {

struct bench_row {
  std::string name;
  double ceiling = 0;                       // GB/s this row is compared with
  std::vector<std::string> paths;           // per size: the path LRIS took, "-" for baselines
  std::vector<double> gbps;                 // per size
};

struct bench_table {
  std::string title;
  std::string ceiling_note;  // what the ceilings are and where they were measured
  std::vector<std::size_t> sizes;
  std::vector<bench_row> rows;
};

/// One transfer of `bytes`; returns its stats (empty `policy` for non-LRIS baselines).
using bench_op = std::function<transfer_stats(std::size_t bytes)>;

/// Measures `op` at every size of `t` into a new row compared with `ceiling`.
void add_row(bench_table& t, std::string name, double ceiling, const bench_op& op,
             double seconds, bool tty);

void print_table(const bench_table& t);
nlohmann::json table_json(const bench_table& t);

#if LRIS_HAS_CUDA()
/// Host <-> GPU paths on device 0 against cudaMemcpy from pinned memory, and many small
/// buffers; nothing when no CUDA device is usable.
std::vector<bench_table> cuda_bench(const std::vector<std::size_t>& sizes, double seconds,
                                    bool tty);
#endif

}  // namespace lris::tool
