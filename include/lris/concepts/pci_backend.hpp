#pragma once
/// @file
/// @brief pci_backend: a backend whose device has a PCI address.

#include <concepts>
#include <string>

#include <lris/concepts/backend_policy.hpp>

namespace lris {

/// @brief A backend whose device sits at a PCI address: `pci_bus_id()` returns it as
/// "0000:1b:00.0" (lower-case hex). The driver's counters of that device's link (NVML) are
/// found by it, with no device numbering to map.
template <class B>
concept pci_backend = backend_policy<B> && requires(const B& b) {
  { b.pci_bus_id() } -> std::same_as<std::string>;
};

}  // namespace lris
