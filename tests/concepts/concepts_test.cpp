// What each concept accepts and, as importantly, what it rejects.
#include <catch2/catch.hpp>

#include <lris/lris.hpp>

namespace {

// A backend missing `query`: not a model.
struct no_query_backend : lris::host_backend {
  bool query(event&) = delete;
};
// A backend whose batch entry point takes the wrong argument: still a backend, not a
// batch_backend.
struct unbatched_backend : lris::host_backend {
  void copy_batch_async(int, std::size_t, stream&) = delete;
};
// A backend that converts nothing.
struct unconverting_backend : lris::host_backend {
  void convert_async(void*, lris::dtype, const void*, lris::dtype, std::size_t, stream&) = delete;
};
// A backend that knows its PCI address and copies between devices.
struct pci_peer_backend : lris::host_backend {
  std::string pci_bus_id() const { return "0000:00:00.0"; }
  void copy_peer_async(void*, int, const void*, int, std::size_t, stream&) {}
  bool enable_peer_access(int) { return false; }
};
// A policy whose plan returns the wrong type.
struct bad_policy {
  static constexpr std::string_view name = "bad";
  int plan(const lris::transfer_request&) const { return 0; }
};
// A policy without a name.
struct nameless_policy {
  lris::exec::plan plan(const lris::transfer_request&) const { return {}; }
};

}  // namespace

// Models.
static_assert(lris::backend_policy<lris::host_backend>);
static_assert(lris::transfer_policy<lris::direct>);
static_assert(lris::transfer_policy<lris::staged>);
static_assert(lris::transfer_policy<lris::auto_select>);
static_assert(lris::memory_space<lris::host_space>);
static_assert(lris::batch_backend<lris::host_backend>);
static_assert(lris::convert_backend<lris::host_backend>);
static_assert(lris::pci_backend<pci_peer_backend>);
static_assert(lris::peer_backend<pci_peer_backend>);
static_assert(lris::peer_backend<lris::host_backend>);  // its devices share host memory
static_assert(lris::memory_space<lris::device_space<lris::host_backend>>);

// Rejections.
static_assert(!lris::backend_policy<int>);
static_assert(!lris::backend_policy<no_query_backend>);
// Refinements are separate: the host backend has no PCI address.
static_assert(lris::backend_policy<unbatched_backend> && !lris::batch_backend<unbatched_backend>);
static_assert(lris::backend_policy<unconverting_backend> &&
              !lris::convert_backend<unconverting_backend>);
static_assert(!lris::pci_backend<lris::host_backend>);
static_assert(!lris::transfer_policy<bad_policy>);
static_assert(!lris::transfer_policy<nameless_policy>);
static_assert(!lris::memory_space<int>);
static_assert(!lris::has_memory_properties<int>);

// Compile-time properties of the spaces.
static_assert(lris::is_host_accessible_v<lris::host_space>);
static_assert(!lris::is_pinned_v<lris::host_space>);
static_assert(lris::is_pinned_v<lris::pinned_space<lris::host_backend>>);
static_assert(!lris::is_host_accessible_v<lris::device_space<lris::host_backend>>);
static_assert(lris::is_device_accessible_v<lris::device_space<lris::host_backend>>);

// Two devices of different backends cannot be paired; the same backend can.
namespace {
struct other_backend : lris::host_backend {};
}  // namespace
static_assert(!lris::transfer_traits<lris::device_space<other_backend>,
                                     lris::device_space<lris::host_backend>>::possible);
static_assert(lris::transfer_traits<lris::device_space<lris::host_backend>,
                                    lris::device_space<lris::host_backend>>::possible);
// Host memory pinned for one backend is pageable as far as another backend is concerned.
static_assert(lris::transfer_traits<lris::device_space<other_backend>,
                                    lris::pinned_space<lris::host_backend>>::needs_staging);

TEST_CASE("memory spans are typed views", "[concepts]") {
  int v[4] = {1, 2, 3, 4};
  auto s = lris::as_host(v, 4);
  STATIC_REQUIRE(std::is_same_v<decltype(s), lris::host_span<int>>);
  CHECK(s.size_bytes() == 16);
  CHECK(s.subspan(1, 2).data() == v + 1);
  CHECK(s.host()[3] == 4);
  lris::host_span<const int> c = s;  // mutable -> const converts
  CHECK(c.size() == 4);
  auto b = lris::as_bytes(c);
  STATIC_REQUIRE(std::is_same_v<decltype(b), lris::host_span<const std::byte>>);
  CHECK(b.size() == 16);
}

// Open properties: the built-in four as tags, a tag a type claims for itself, a value property.
namespace {
struct shareable {};  // a property LRIS's core does not know
struct shared_memory_allocator : lris::page_aligned_allocator {
  using property_tags = std::tuple<shareable>;
};
}  // namespace
static_assert(lris::has_property<lris::host_space, lris::property::host_accessible>);
static_assert(!lris::has_property<lris::host_space, lris::property::pinned>);
static_assert(lris::has_property<lris::pinned_space<lris::host_backend>, lris::property::pinned>);
static_assert(lris::has_property<lris::device_space<lris::host_backend>,
                                 lris::property::device_accessible>);
static_assert(lris::has_property<shared_memory_allocator, shareable>);
static_assert(lris::has_property<shared_memory_allocator, lris::property::page_aligned>);
static_assert(!lris::has_property<lris::page_aligned_allocator, shareable>);
static_assert(lris::has_property<lris::numa_allocator, lris::property::numa_node>);
static_assert(!lris::has_property<lris::page_aligned_allocator, lris::property::numa_node>);
static_assert(lris::has_property<lris::caching_pool<lris::numa_allocator>, lris::property::numa_node>);

TEST_CASE("value properties are read through get_property", "[concepts]") {
  lris::numa_allocator numa;
  CHECK(lris::get_property(numa, lris::property::numa_node{}) == numa.node());
  lris::caching_pool pool{numa};
  CHECK(lris::get_property(pool, lris::property::numa_node{}) == numa.node());
}
