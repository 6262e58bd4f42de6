// The record of lost GPUs and what LRIS_CUDA_TRY / LRIS_HIP_TRY throw, without a GPU: the
// runtime failures are built by hand, as the try macros would report them. Every test starts
// from an empty record.
#include <catch2/catch.hpp>

#include "support/what_contains.hpp"

#include <set>
#include <string>
#include <thread>
#include <vector>

#include <lris/error.hpp>
#include <lris/gpu/detail/runtime_failure.hpp>
#include <lris/gpu/device_health.hpp>

using lris::detail::fail_runtime_call;
using lris::detail::find_device_loss;
using lris::detail::runtime_failure;
using lris::test::what_contains;

namespace {

constexpr int illegal_address = 700;  // cudaErrorIllegalAddress
constexpr int launch_failure = 719;   // cudaErrorLaunchFailure

runtime_failure sticky(int device, const char* call, int line, const char* runtime = "CUDA") {
  return {runtime, illegal_address, "cudaErrorIllegalAddress", "an illegal memory access",
          device, true, false, call, "fake_backend.inl", line};
}

runtime_failure ordinary(int device, const char* call, bool out_of_memory = false) {
  return {"CUDA", out_of_memory ? 2 : 1,
          out_of_memory ? "cudaErrorMemoryAllocation" : "cudaErrorInvalidValue",
          "described", device, false, out_of_memory, call, "fake_backend.inl", 7};
}

// Forgets every loss before and after the test.
struct empty_record {
  empty_record() { lris::detail::forget_device_losses_for_testing(); }
  ~empty_record() { lris::detail::forget_device_losses_for_testing(); }
};

}  // namespace

TEST_CASE_METHOD(empty_record, "a sticky error throws device_lost naming the failure",
                 "[gpu][health]") {
  REQUIRE(find_device_loss("CUDA", 3) == nullptr);
  try {
    fail_runtime_call<lris::cuda_error>(sticky(3, "cudaStreamSynchronize(s)", 10));
    FAIL("no exception");
  } catch (const lris::device_lost& e) {
    const std::string what = e.what();
    CHECK_THAT(what, Catch::Contains("CUDA device 3 is lost"));
    CHECK_THAT(what, Catch::Contains("cudaStreamSynchronize(s) failed on device 3"));
    CHECK_THAT(what, Catch::Contains("cudaErrorIllegalAddress (an illegal memory access)"));
    CHECK_THAT(what, Catch::Contains("fake_backend.inl:10"));
    CHECK(e.code() == illegal_address);
    CHECK(e.device() == 3);
  }
  // A device_error like the runtime errors, so that handlers of those see it too.
  CHECK_THROWS_AS(fail_runtime_call<lris::cuda_error>(sticky(3, "cudaMalloc(&p, 64)", 11)),
                  lris::device_error);
  const auto* loss = find_device_loss("CUDA", 3);
  REQUIRE(loss != nullptr);
  CHECK(loss->device == 3);
  CHECK(loss->code == illegal_address);
  CHECK_THAT(loss->what, Catch::Contains("cudaStreamSynchronize(s)"));
}

TEST_CASE_METHOD(empty_record, "a later failure on a lost device still names the first",
                 "[gpu][health]") {
  CHECK_THROWS_AS(fail_runtime_call<lris::cuda_error>(sticky(1, "cudaStreamSynchronize(s)", 10)),
                  lris::device_lost);
  runtime_failure second = sticky(1, "cudaMemcpyAsync(d, s, n, k, st)", 20);
  second.code = launch_failure;
  second.error_name = "cudaErrorLaunchFailure";
  try {
    fail_runtime_call<lris::cuda_error>(second);
    FAIL("no exception");
  } catch (const lris::device_lost& e) {
    const std::string what = e.what();
    // What failed now, then the first failure: its call, error and place.
    CHECK_THAT(what, Catch::StartsWith("cudaMemcpyAsync(d, s, n, k, st) failed on device 1: "
                                       "cudaErrorLaunchFailure"));
    CHECK_THAT(what, Catch::Contains("CUDA device 1 was lost earlier in this process: "
                                     "cudaStreamSynchronize(s) failed on device 1: "
                                     "cudaErrorIllegalAddress"));
    CHECK_THAT(what, Catch::Contains("fake_backend.inl:10"));
    CHECK(e.code() == illegal_address);  // the first failure's
  }
  // A non-sticky error of a lost device is a consequence of the loss: reported as the loss.
  REQUIRE_THROWS_MATCHES(fail_runtime_call<lris::cuda_error>(ordinary(1, "cudaFree(p)")),
                         lris::device_lost, what_contains("cudaStreamSynchronize(s)"));
  CHECK_THAT(find_device_loss("CUDA", 1)->what, Catch::Contains("fake_backend.inl:10"));
  // What the backends ask before each call on the device.
  REQUIRE_THROWS_MATCHES(
      lris::detail::throw_if_device_lost("CUDA", 1, "cuda_backend::copy_async"),
      lris::device_lost,
      what_contains("cuda_backend::copy_async: CUDA device 1 was lost earlier in this process: "
                    "cudaStreamSynchronize(s) failed on device 1"));
}

TEST_CASE_METHOD(empty_record, "other devices and the other runtime are unaffected",
                 "[gpu][health]") {
  CHECK_THROWS_AS(fail_runtime_call<lris::cuda_error>(sticky(3, "cudaStreamSynchronize(s)", 10)),
                  lris::device_lost);
  CHECK(find_device_loss("CUDA", 4) == nullptr);
  CHECK(find_device_loss("HIP", 3) == nullptr);
  CHECK_NOTHROW(lris::detail::throw_if_device_lost("CUDA", 4, "cuda_backend::copy_async"));
  CHECK_NOTHROW(lris::detail::throw_if_device_lost("HIP", 3, "hip_backend::copy_async"));
  CHECK_THROWS_AS(fail_runtime_call<lris::cuda_error>(ordinary(4, "cudaMemset(p, 0, 8)")),
                  lris::cuda_error);
  // Device 4 is lost in its own right, with its own first failure.
  CHECK_THROWS_AS(fail_runtime_call<lris::cuda_error>(sticky(4, "cudaEventSynchronize(e)", 40)),
                  lris::device_lost);
  CHECK_THAT(find_device_loss("CUDA", 4)->what, Catch::Contains("cudaEventSynchronize(e)"));
  CHECK_THAT(find_device_loss("CUDA", 3)->what, Catch::Contains("cudaStreamSynchronize(s)"));
}

TEST_CASE_METHOD(empty_record, "errors that are not sticky throw as they always did",
                 "[gpu][health]") {
  try {
    fail_runtime_call<lris::cuda_error>(ordinary(0, "cudaMemcpyAsync(d, s, n, k, st)"));
    FAIL("no exception");
  } catch (const lris::device_lost&) {
    FAIL("a device_lost for an error that is not sticky");
  } catch (const lris::cuda_error& e) {
    CHECK_THAT(std::string(e.what()),
               Catch::Equals("cudaMemcpyAsync(d, s, n, k, st) failed on device 0: "
                             "cudaErrorInvalidValue (described) at fake_backend.inl:7"));
    CHECK(e.code() == 1);
  }
  CHECK_THROWS_AS(fail_runtime_call<lris::cuda_error>(ordinary(0, "cudaMalloc(&p, n)", true)),
                  lris::out_of_memory);
  runtime_failure hip = ordinary(0, "hipMemcpyAsync(d, s, n, k, st)");
  hip.runtime = "HIP";
  CHECK_THROWS_AS(fail_runtime_call<lris::hip_error>(hip), lris::hip_error);
  CHECK(find_device_loss("CUDA", 0) == nullptr);
  CHECK(find_device_loss("HIP", 0) == nullptr);
}

TEST_CASE_METHOD(empty_record, "a loss on a device the runtime could not name counts for all",
                 "[gpu][health]") {
  CHECK_THROWS_MATCHES(fail_runtime_call<lris::cuda_error>(sticky(-1, "cudaGetLastError()", 5)),
                       lris::device_lost, what_contains("a CUDA device is lost"));
  for (int device : {-1, 0, 7}) {
    const auto* loss = find_device_loss("CUDA", device);
    REQUIRE(loss != nullptr);
    CHECK_THAT(loss->what, Catch::Contains("cudaGetLastError()"));
  }
  CHECK(find_device_loss("HIP", 0) == nullptr);
}

TEST_CASE_METHOD(empty_record, "threads failing at once: one first failure for all of them",
                 "[gpu][health]") {
  constexpr int threads = 8;
  std::vector<std::string> calls(threads);
  std::vector<const lris::detail::device_loss*> seen(threads);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    calls[t] = "call_" + std::to_string(t) + "()";
    pool.emplace_back([&, t] {
      seen[t] = &lris::detail::record_device_loss("CUDA", 2, illegal_address, calls[t]);
    });
  }
  for (auto& t : pool) t.join();
  const std::set<const lris::detail::device_loss*> distinct(seen.begin(), seen.end());
  REQUIRE(distinct.size() == 1);
  CHECK(find_device_loss("CUDA", 2) == *distinct.begin());
}
