#include <lris/gpu/device_health.hpp>

#include <atomic>
#include <memory>
#include <utility>

#include <fmt/format.h>

#include <lris/error.hpp>

namespace lris::detail {

namespace {

// A list that only grows (a process loses few devices), newest first. Entries are immutable
// once published and live until the process exits, so readers walk it without a lock: while
// no device was lost, a query is one atomic load.
struct loss_node {
  device_loss loss;
  const loss_node* next = nullptr;
};

std::atomic<const loss_node*> losses{nullptr};

bool matches(const device_loss& l, std::string_view runtime, int device) noexcept {
  return l.runtime == runtime && (l.device == device || l.device < 0 || device < 0);
}

// The oldest matching entry: the first loss of the device.
const device_loss* find_from(const loss_node* n, std::string_view runtime, int device) noexcept {
  const device_loss* found = nullptr;
  for (; n != nullptr; n = n->next) {
    if (matches(n->loss, runtime, device)) found = &n->loss;
  }
  return found;
}

}  // namespace

const device_loss* find_device_loss(std::string_view runtime, int device) noexcept {
  const loss_node* head = losses.load(std::memory_order_acquire);
  if (head == nullptr) return nullptr;
  return find_from(head, runtime, device);
}

const device_loss& record_device_loss(std::string_view runtime, int device, int code,
                                      std::string what) {
  auto fresh = std::make_unique<loss_node>();
  fresh->loss = device_loss{std::string(runtime), device, code, std::move(what)};
  const loss_node* head = losses.load(std::memory_order_acquire);
  for (;;) {
    if (const device_loss* earlier = find_from(head, runtime, device)) return *earlier;
    fresh->next = head;
    if (losses.compare_exchange_weak(head, fresh.get(), std::memory_order_acq_rel,
                                     std::memory_order_acquire)) {
      return fresh.release()->loss;
    }
  }
}

void throw_device_lost(const device_loss& loss, std::string_view now) {
  const std::string device =
      loss.device < 0 ? fmt::format("a {} device", loss.runtime)
                      : fmt::format("{} device {}", loss.runtime, loss.device);
  constexpr std::string_view consequence =
      "the error is sticky: the device's context cannot recover, and every later call on the "
      "device in this process fails with lris::device_lost (a new process is needed to use it "
      "again)";
  if (now == loss.what) {
    throw device_lost(fmt::format("{} is lost: {}; {}", device, loss.what, consequence),
                      loss.code, loss.device);
  }
  throw device_lost(fmt::format("{}: {} was lost earlier in this process: {}; {}", now, device,
                                loss.what, consequence),
                    loss.code, loss.device);
}

void forget_device_losses_for_testing() noexcept {
  const loss_node* n = losses.exchange(nullptr, std::memory_order_acq_rel);
  while (n != nullptr) {
    const loss_node* next = n->next;
    delete n;
    n = next;
  }
}

}  // namespace lris::detail
