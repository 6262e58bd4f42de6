// A stand-in for NCCL with the entry points LRIS loads (fanout/nccl.hpp), for testing the nccl
// route on the host backend, whose "devices" are host memory: a broadcast is a memcpy from the
// root rank's send buffer (as NCCL, the others' are not read) into every rank's receive
// buffer, done when its group ends. Faults are injected through fake_nccl_fail(); fake_nccl_counts() tells what
// was called. Not thread-safe: one test at a time drives it.
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <thread>
#include <vector>

namespace {

struct clique;
struct comm {
  clique* group = nullptr;
  int rank = 0;
};
struct clique {
  int ranks = 0;
  int alive = 0;
};
struct op {
  const void* send;
  void* recv;
  std::size_t bytes;
  int rank;
  int root;
};

// 1: init fails, 2: broadcast fails, 3: the communicators report an asynchronous error,
// 4: init takes 1.5 s
std::atomic<int> fail{0};
int depth = 0;
std::vector<op> pending;
// inits, broadcasts, group ends, destroys, aborts, the most groups of communicators alive at once
std::atomic<long> counts[6] = {};
std::atomic<long> alive_groups{0};

// The calls of one broadcast, one per rank: the root's send buffer into every receive buffer.
void run(const std::vector<op>& ops) {
  const void* from = nullptr;
  for (const op& o : ops) {
    if (o.rank == o.root) from = o.send;
  }
  if (from == nullptr) return;  // no root among them: nothing to send (NCCL would hang)
  for (const op& o : ops) {
    if (o.recv != from) std::memcpy(o.recv, from, o.bytes);
  }
}

void drop(comm* c) {
  if (--c->group->alive == 0) {
    delete c->group;
    --alive_groups;
  }
  delete c;
}

}  // namespace

extern "C" {

void fake_nccl_fail(int what) { fail = what; }
long fake_nccl_count(int which) { return counts[which].load(); }
void fake_nccl_reset() {
  fail = 0;
  depth = 0;
  pending.clear();
  for (auto& c : counts) c = 0;
  alive_groups = 0;
}

int ncclGetVersion(int* version) {
  *version = 22809;
  return 0;
}

int ncclCommInitAll(void** comms, int n, const int*) {
  if (fail == 1) return 1;  // ncclUnhandledCudaError
  if (fail == 4) std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  auto* g = new clique{n, n};
  const long now = ++alive_groups;
  for (long most = counts[5]; now > most && !counts[5].compare_exchange_weak(most, now);) {
  }
  for (int r = 0; r < n; ++r) comms[r] = new comm{g, r};
  ++counts[0];
  return 0;
}

int ncclCommDestroy(void* c) {
  drop(static_cast<comm*>(c));
  ++counts[3];
  return 0;
}

int ncclCommAbort(void* c) {
  drop(static_cast<comm*>(c));
  ++counts[4];
  return 0;
}

int ncclGroupStart() {
  ++depth;
  return 0;
}

int ncclGroupEnd() {
  if (depth > 0 && --depth == 0) {
    run(pending);
    pending.clear();
    ++counts[2];
  }
  return 0;
}

int ncclBroadcast(const void* send, void* recv, std::size_t count, int datatype, int root,
                  void* c, void*) {
  if (fail == 2 || datatype != 1) return 3;  // ncclInternalError; only ncclUint8 is asked for
  const op o{send, recv, count, static_cast<comm*>(c)->rank, root};
  if (depth > 0) {
    pending.push_back(o);
  } else {
    run({o});
  }
  ++counts[1];
  return 0;
}

int ncclCommGetAsyncError(void*, int* error) {
  *error = fail == 3 ? 2 : 0;  // ncclSystemError
  return 0;
}

const char* ncclGetErrorString(int result) {
  switch (result) {
    case 1: return "unhandled cuda error";
    case 2: return "unhandled system error";
    case 3: return "internal error";
    default: return "no error";
  }
}

const char* ncclGetLastError(void*) { return fail != 0 ? "injected by the test" : ""; }

}  // extern "C"
