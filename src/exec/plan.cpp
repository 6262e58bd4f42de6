#include <lris/exec/plan.hpp>

#include <fmt/format.h>

#include <lris/error.hpp>

namespace lris::exec {

bool plan::uses_device() const noexcept {
  for (const step& s : steps) {
    if (s.dma()) return true;
  }
  return false;
}

copy_kind plan::direction() const noexcept {
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

}  // namespace

void validate(const plan& p, int device) {
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
        } else if (at->kind == place_kind::device && device >= 0 && at->device != device) {
          throw unsupported(fmt::format(
              "exec::plan: chunk {}, step {} goes to or from device {}, but it runs on device {} "
              "(a plan for several devices needs an executor per device)",
              c, i, at->device, device));
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
      if (s.check != nullptr && !s.from.cpu()) fail("hashes only bytes the CPU can read");
    }
  }
}

std::string describe(const plan& p) {
  std::string out = fmt::format("{} plan: {} chunk(s), {} bytes, slots of {} bytes\n",
                                to_string(p.shape), p.chunks(), p.bytes, p.slot_bytes);
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
