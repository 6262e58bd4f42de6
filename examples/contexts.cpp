// A context of one's own: its threads run the pipeline's transfers; completion callbacks and
// when_all instead of waiting on each transfer.
#include <atomic>
#include <cstdio>
#include <vector>

#include <lris/lris.hpp>

int main() {
  std::vector<float> layer0(16 << 20, 1.0f), layer1(16 << 20, 2.0f);
  using device_buffer = lris::buffer<lris::device_allocator<lris::host_backend>, float>;
  device_buffer d0(layer0.size()), d1(layer1.size());
  std::atomic<int> landed{0};
  // [contexts]
  auto ctx = lris::context::make({.threads = 4});  // or lris::default_context()
  lris::pipeline<lris::auto_select, lris::host_backend> p({}, lris::host_backend{0}, {},
                                                         {.context = ctx});
  std::vector<lris::transfer> layers;
  layers.push_back(p.copy(d0.span(), lris::as_host(layer0)));
  layers.push_back(p.copy(d1.span(), lris::as_host(layer1)));
  // Runs on a thread of ctx when the layer has landed; `error` is null on success.
  layers[0].on_complete([&](std::exception_ptr error) { landed += error ? 0 : 1; });
  lris::transfer both = lris::when_all(std::move(layers));
  std::printf("%llu bytes in %.3f s on %u threads\n",
              static_cast<unsigned long long>(both.wait().bytes), both.wait().seconds,
              ctx->compute().size());
  // [contexts]
  std::vector<float> back(layer1.size());
  lris::copy(lris::as_host(back), d1.span()).wait();
  while (landed.load() == 0) {
  }
  return back == layer1 ? 0 : 1;
}
