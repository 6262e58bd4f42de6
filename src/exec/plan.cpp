#include <lris/exec/plan.hpp>

#include <fmt/format.h>

#include <lris/error.hpp>
#include <lris/exec/detail/packing.hpp>

namespace lris::exec {

bool plan::uses_device() const noexcept {
  if (!copies.empty()) {
    return copies.from.kind == place_kind::device ||
           copies.to.kind == place_kind::device;
  }
  for (const step& s : steps) {
    if (s.dma()) return true;
  }
  return false;
}

copy_kind plan::direction() const noexcept {
  if (!copies.empty()) {
    const copy_kind k = step{copies.from, copies.to}.kind();
    return k == copy_kind::device_to_device ? copy_kind::host_to_host : k;  // as for steps
  }
  bool reads = false;
  for (const step& s : steps) {
    if (s.to.kind == place_kind::device && s.from.kind != place_kind::device) {
      return copy_kind::host_to_device;
    }
    reads = reads || (s.from.kind == place_kind::device && s.to.kind != place_kind::device);
  }
  return reads ? copy_kind::device_to_host : copy_kind::host_to_host;
}

namespace {

std::string where(const place& p, std::size_t bytes) {
  switch (p.kind) {
    case place_kind::file: return fmt::format("file {} [{}, +{})", p.file, p.offset, bytes);
    case place_kind::slot: return fmt::format("slot [{}, +{})", p.offset, bytes);
    case place_kind::device:
      return fmt::format("device {} {}", p.device, static_cast<const void*>(p.ptr));
    default: return fmt::format("{} {}", to_string(p.kind), static_cast<const void*>(p.ptr));
  }
}

bool on_other_device(const place& at, int device) {
  return at.kind == place_kind::device && device >= 0 && at.device != device;
}

[[noreturn]] void other_device(std::string_view what, const place& at, int device) {
  throw unsupported(fmt::format(
      "exec::plan: {} goes to or from device {}, but it runs on device {} (a plan for several "
      "devices needs an executor per device)",
      what, at.device, device));
}

void validate_batch(const plan& p, int device) {
  const batch& b = p.copies;
  auto fail = [&](std::string_view what) {
    throw invalid_argument(fmt::format("exec::plan: the batch ({} -> {}, {} copies{}): {}",
                                       to_string(b.from.kind), to_string(b.to.kind),
                                       b.items.size(), b.packed() ? ", packed" : "", what));
  };
  if (!p.steps.empty()) {
    fail(fmt::format("the plan also has {} steps: it is one or the other", p.steps.size()));
  }
  const auto host = [](place_kind k) { return k == place_kind::host || k == place_kind::pinned; };
  const auto reachable = [](place_kind k) {
    return k == place_kind::pinned || k == place_kind::device;
  };
  if (b.packed()) {
    if (p.slot_bytes == 0) fail("it is packed into slots, but the plan has none (slot_bytes is 0)");
    if (!(host(b.from.kind) && b.to.kind == place_kind::device) &&
        !(b.from.kind == place_kind::device && host(b.to.kind))) {
      fail("packed, it copies between host memory and a device only");
    }
    for (std::size_t c = 0; c < b.ends.size(); ++c) {
      if (b.ends[c] <= (c == 0 ? 0 : b.ends[c - 1])) fail(fmt::format("chunk {} is empty", c));
    }
    if (b.ends.back() != b.items.size()) {
      fail(fmt::format("copies {} onwards belong to no chunk", b.ends.back()));
    }
  } else {
    if (p.slot_bytes > 0) fail("as one operation it uses no slot, but the plan has slots");
    if (!reachable(b.from.kind) || !reachable(b.to.kind) ||
        (b.from.kind != place_kind::device && b.to.kind != place_kind::device)) {
      fail("as one operation it copies between pinned and device memory only, with a device at "
           "one end at least");
    }
  }
  const bool peer = p.peer_sources && b.from.kind == place_kind::device &&
                    b.to.kind == place_kind::device;
  for (const place* at : {&b.from, &b.to}) {
    if (on_other_device(*at, device) && !(peer && at == &b.from)) {
      other_device("the batch", *at, device);
    }
  }
  std::size_t c = 0, first = 0;  // the chunk copy i is in, and its first copy
  lris::detail::slot_layout slot;
  for (std::size_t i = 0; i < b.items.size(); ++i) {
    const copy_item& it = b.items[i];
    if (it.bytes == 0 || it.src == nullptr || it.dst == nullptr) {
      fail(fmt::format("copy {} ({} -> {}, {} bytes): {}", i, it.src,
                       static_cast<const void*>(it.dst), it.bytes,
                       it.bytes == 0 ? "moves no bytes" : "null address"));
    }
    if (!b.packed()) continue;
    if (i == b.ends[c]) {
      first = i;
      slot = {};
      ++c;
    }
    if (!slot.fits(it.bytes, p.slot_bytes)) {
      fail(fmt::format("chunk {} (copies {} to {}) does not fit a slot of {} bytes with its item "
                       "array, at copy {} ({} bytes)", c, first, b.ends[c] - 1, p.slot_bytes, i,
                       it.bytes));
    }
    slot.place(it.bytes);
  }
}

}  // namespace

void validate(const plan& p, int device) {
  if (!p.copies.empty()) {
    validate_batch(p, device);
    return;
  }
  LRIS_EXPECTS(p.ends.empty() ? p.steps.empty() : p.ends.back() == p.steps.size(),
               "exec::plan: steps {} onwards belong to no chunk (call cut())",
               p.ends.empty() ? 0 : p.ends.back());
  for (std::size_t c = 0; c < p.chunks(); ++c) {
    const auto steps = p.chunk(c);
    for (std::size_t i = 0; i < steps.size(); ++i) {
      const step& s = steps[i];
      auto fail = [&](std::string_view what) {
        throw invalid_argument(fmt::format("exec::plan: chunk {}, step {} ({} -> {}): {}", c, i,
                                           where(s.from, s.bytes), where(s.to, s.bytes), what));
      };
      if (s.bytes == 0) fail("moves no bytes");
      for (const place* at : {&s.from, &s.to}) {
        if (at->kind == place_kind::slot) {
          if (p.slot_bytes == 0) fail("uses a slot, but the plan has none (slot_bytes is 0)");
          if (at->offset > p.slot_bytes || s.bytes > p.slot_bytes - at->offset) {
            fail(fmt::format("passes the end of the slot ({} bytes)", p.slot_bytes));
          }
        } else if (at->kind == place_kind::file) {
          if (at->file >= p.files.size() || p.files[at->file] == nullptr) {
            fail(fmt::format("names file {}, but the plan has {}", at->file, p.files.size()));
          }
        } else if (at->ptr == nullptr) {
          fail("null address");
        } else if (on_other_device(*at, device) &&
                   !(p.peer_sources && at == &s.from && s.to.kind == place_kind::device)) {
          other_device(fmt::format("chunk {}, step {}", c, i), *at, device);
        }
      }
      if (s.from.kind == place_kind::file && s.to.kind == place_kind::file) {
        fail("file to file: read into memory first");
      }
      if (s.io() && (s.from.kind == place_kind::device || s.to.kind == place_kind::device)) {
        fail("file io goes through host memory or the slot, not device memory");
      }
      if (s.convert) {
        const std::size_t from_bits = bits_of(s.from_type);
        if (from_bits == 0 || bits_of(s.to_type) == 0) fail("converts an unknown element type");
        if (s.bytes * 8 % from_bits != 0) fail("converts a partial element");
        if (!s.from.cpu() || s.to.kind == place_kind::file || s.to.kind == place_kind::slot) {
          fail("converts only from host memory or the slot into host or device memory");
        }
      }
      // A read from a file is hashed where it lands.
      const place& hashed = s.from.kind == place_kind::file ? s.to : s.from;
      if (s.check != nullptr && !hashed.cpu()) fail("hashes only bytes the CPU can read");
    }
  }
}

std::string describe(const plan& p) {
  std::string out = fmt::format("{} plan: {} chunk(s), {} bytes, slots of {} bytes\n",
                                to_string(p.shape), p.chunks(), p.bytes, p.slot_bytes);
  if (!p.copies.empty()) {
    const batch& b = p.copies;
    auto copies = [&](std::span<const copy_item> items) {
      const char* sep = " ";
      for (const copy_item& c : items) {
        out += fmt::format("{}{} -> {}, {} bytes", sep, where(b.from.at_address(c.src), c.bytes),
                           where(b.to.at_address(c.dst), c.bytes), c.bytes);
        sep = "; ";
      }
      out += '\n';
    };
    if (!b.packed()) {
      out += fmt::format("chunk 0 (one operation, {} copies):", b.items.size());
      copies(b.items);
    }
    for (std::size_t c = 0; c < b.ends.size(); ++c) {
      out += fmt::format("chunk {} (packed in the slot, {} copies):", c, b.chunk(c).size());
      copies(b.chunk(c));
    }
    return out;
  }
  for (std::size_t c = 0; c < p.chunks(); ++c) {
    out += fmt::format("chunk {}:", c);
    const char* sep = " ";
    for (const step& s : p.chunk(c)) {
      out += fmt::format("{}{} -> {}{}{}", sep, where(s.from, s.bytes), where(s.to, s.bytes),
                         s.convert ? fmt::format(" ({} -> {})", to_string(s.from_type),
                                                 to_string(s.to_type))
                                   : std::string(),
                         s.check != nullptr ? " hashed" : "");
      sep = "; ";
    }
    out += '\n';
  }
  return out;
}

}  // namespace lris::exec
