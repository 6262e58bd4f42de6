#include <lris/fanout/fan_out_plan.hpp>

#include <algorithm>
#include <numeric>

#include <lris/error.hpp>

namespace lris::fanout {

namespace {

// Appends the copy of [lo, hi) of a piece to `out`, merged with the last copy when both sides
// continue it.
void emit(std::vector<delivery>& out, const chunk_piece& pc, std::uint64_t lo, std::uint64_t hi,
          std::byte* to) {
  const delivery d{static_cast<std::size_t>(pc.at + (lo - pc.begin)), to, hi - lo};
  if (!out.empty()) {
    delivery& last = out.back();
    if (last.from + last.bytes == d.from && last.to + last.bytes == d.to) {
      last.bytes += d.bytes;
      return;
    }
  }
  out.push_back(d);
}

// The tensor's cut unit: its rows when a device's part is strided and a row fits in a chunk.
std::uint64_t cut_unit(const fan_tensor& t, std::size_t chunk_bytes) {
  for (const part& p : t.parts) {
    if (p.strided() && p.row_stride <= chunk_bytes) return p.row_stride;
  }
  return 1;
}

}  // namespace

std::uint64_t fan_plan::storage_bytes() const noexcept {
  std::uint64_t n = 0;
  for (const auto& c : chunks) n += c.bytes;
  return n;
}

std::uint64_t fan_plan::device_bytes(std::size_t d) const noexcept {
  std::uint64_t n = 0;
  for (const auto& t : tensors) n += d < t.parts.size() ? t.parts[d].bytes() : 0;
  return n;
}

std::vector<delivery> fan_plan::deliveries(std::size_t c, std::size_t d) const {
  std::vector<delivery> out;
  for (const chunk_piece& pc : chunks.at(c).pieces) {
    const part& p = tensors[pc.tensor].parts.at(d);
    if (p.bytes() == 0) continue;
    if (!p.strided()) {
      const std::uint64_t lo = std::max(pc.begin, p.offset);
      const std::uint64_t hi = std::min(pc.end, p.offset + p.bytes());
      if (hi > lo) emit(out, pc, lo, hi, p.dst + (lo - p.offset));
      continue;
    }
    // Rows that overlap [begin, end): from the first whose end passes begin to the last whose
    // start is before end.
    const std::uint64_t stride = p.row_stride;
    const std::uint64_t first = pc.begin < p.offset + p.row_bytes
                                    ? 0
                                    : (pc.begin - p.offset - p.row_bytes) / stride + 1;
    const std::uint64_t last =
        pc.end <= p.offset ? 0 : std::min(p.rows, (pc.end - p.offset + stride - 1) / stride);
    for (std::uint64_t r = first; r < last; ++r) {
      const std::uint64_t start = p.offset + r * stride;
      const std::uint64_t lo = std::max(pc.begin, start);
      const std::uint64_t hi = std::min(pc.end, start + p.row_bytes);
      if (hi > lo) emit(out, pc, lo, hi, p.dst + r * p.row_bytes + (lo - start));
    }
  }
  return out;
}

fan_plan plan_fan_out(std::vector<fan_tensor> tensors, std::size_t devices,
                      std::size_t chunk_bytes, std::size_t align, std::uint64_t gap) {
  LRIS_EXPECTS(chunk_bytes > 0 && align > 0,
               "plan_fan_out: chunks of {} bytes aligned to {}: neither may be 0", chunk_bytes,
               align);
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const fan_tensor& t = tensors[i];
    LRIS_EXPECTS(t.parts.size() == devices,
                 "plan_fan_out: tensor {} has {} parts for {} devices", i, t.parts.size(),
                 devices);
    for (std::size_t d = 0; d < devices; ++d) {
      const part& p = t.parts[d];
      if (p.bytes() == 0) continue;
      const std::uint64_t reach =
          p.offset + (p.rows - 1) * (p.rows > 1 ? p.row_stride : 0) + p.row_bytes;
      LRIS_EXPECTS(reach <= t.bytes && (p.rows == 1 || p.row_stride >= p.row_bytes),
                   "plan_fan_out: tensor {} (file offset {}, {} bytes): device {}'s part ({} "
                   "rows of {} bytes every {} from {}) lies outside it",
                   i, t.file_offset, t.bytes, d, p.rows, p.row_bytes, p.row_stride, p.offset);
      LRIS_EXPECTS(p.dst != nullptr, "plan_fan_out: tensor {}: device {}'s part has no memory",
                   i, d);
    }
  }
  fan_plan plan;
  plan.devices = devices;
  plan.tensors = std::move(tensors);
  std::vector<std::size_t> order(plan.tensors.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    const fan_tensor &x = plan.tensors[a], &y = plan.tensors[b];
    return x.shard != y.shard ? x.shard < y.shard : x.file_offset < y.file_offset;
  });

  fan_chunk* open = nullptr;  // the chunk being filled
  auto start = [&](std::size_t shard, std::uint64_t at) {
    plan.chunks.push_back({shard, at, 0, static_cast<std::size_t>(at % align), {}});
    open = &plan.chunks.back();
  };
  for (const std::size_t i : order) {
    const fan_tensor& t = plan.tensors[i];
    bool wanted = false;
    for (const part& p : t.parts) wanted = wanted || p.bytes() > 0;
    if (!wanted) continue;
    const std::uint64_t unit = cut_unit(t, chunk_bytes);
    std::uint64_t pos = 0;
    while (pos < t.bytes) {
      const std::uint64_t at = t.file_offset + pos;
      const std::uint64_t end = open ? open->file_offset + open->bytes : 0;
      if (open && (open->shard != t.shard || at < end || at - end > gap)) open = nullptr;
      if (!open) start(t.shard, at);
      const std::uint64_t used = at - open->file_offset;
      std::uint64_t take = std::min<std::uint64_t>(t.bytes - pos, chunk_bytes - std::min<std::uint64_t>(used, chunk_bytes));
      if (take < t.bytes - pos) take = take / unit * unit;
      if (take == 0) {
        if (used == 0) take = std::min<std::uint64_t>(t.bytes - pos, chunk_bytes);  // a row past a chunk
        else {
          open = nullptr;
          continue;
        }
      }
      open->pieces.push_back({i, pos, pos + take, static_cast<std::size_t>(open->at + used)});
      open->bytes = used + take;
      pos += take;
    }
  }
  for (const auto& c : plan.chunks) plan.buffer_bytes = std::max<std::size_t>(plan.buffer_bytes, c.at + c.bytes);
  return plan;
}

}  // namespace lris::fanout
