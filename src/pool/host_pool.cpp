#include <lris/pool/host_pool.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <thread>
#include <utility>

#include <fmt/format.h>

#include <lris/element/checksum.hpp>
#include <lris/error.hpp>
#include <lris/memory/numa_allocator.hpp>

#include "../detail/shared_memory.hpp"

namespace lris::pool {

namespace {

constexpr std::uint64_t pool_magic = 0x4c52495320504f4cULL;  // "LRIS POL"
constexpr std::uint32_t pool_version = 2;
constexpr int max_users = 256;
constexpr std::uint64_t data_alignment = std::uint64_t{2} << 20;
constexpr std::uint64_t tensor_alignment = 4096;
constexpr std::size_t max_name = 255;
constexpr std::size_t max_dims = 8;
constexpr std::string_view prefix = "lris-pool-";
constexpr std::uint64_t max_data_bytes = std::uint64_t{1} << 56;
constexpr std::uint32_t max_directory = std::uint32_t{1} << 24;

enum : std::uint32_t { entry_free = 0, entry_filling = 1, entry_ready = 2 };

std::string segment(const std::string& name) { return fmt::format("/{}{}", prefix, name); }

std::uint64_t round_up(std::uint64_t n, std::uint64_t to) { return (n + to - 1) / to * to; }

void check_name(const char* who, const std::string& name) {
  if (!detail::segment_name_ok(name) || name.size() > 200 - prefix.size()) {
    throw invalid_argument(fmt::format("{}: \"{}\" is not a pool name (letters, digits, '-', "
                                       "'_', '.'; at most {})", who, name,
                                       200 - prefix.size()));
  }
}

}  // namespace

struct host_pool::header {
  std::atomic<std::uint64_t> ready;  // pool_magic once the creator has made it
  std::uint32_t version;
  std::uint32_t max_tensors;
  pthread_mutex_t mutex;
  pthread_mutex_t registration;  // held while a process registers the data with a GPU runtime
  std::uint64_t directory_offset;
  std::uint64_t data_offset;
  std::uint64_t data_bytes;
  std::uint64_t used;                     // data placed so far
  std::atomic<std::uint32_t> count;       // directory entries in use
  std::atomic<std::uint64_t> generation;  // publications
  std::int32_t numa_node;
  std::uint32_t numa_bound;
  char numa_note[160];
  std::uint32_t persistent;
  std::uint32_t removed;  // its name was removed: later attachers must not use it
  detail::process_id creator;
  struct user {
    detail::process_id id;
    std::uint32_t handles;  // host_pool objects of the process attached
  } users[max_users];
};

struct host_pool::entry {
  std::atomic<std::uint32_t> state;
  std::uint32_t type;
  std::uint32_t ndim;
  std::uint32_t name_len;
  char name[max_name + 1];
  std::uint64_t shape[max_dims];
  std::uint64_t offset;
  std::uint64_t bytes;
  std::uint64_t checksum;
  std::uint64_t generation;
  detail::process_id filler;  // pid 0: none (given up, or published)
};

static_assert(std::atomic<std::uint32_t>::is_always_lock_free &&
              std::atomic<std::uint64_t>::is_always_lock_free);

namespace {

// The segment's layout for `data_bytes` of data and `max_tensors` entries.
template <class Header, class Entry>
struct layout {
  std::uint64_t directory_offset = round_up(sizeof(Header), 64);
  std::uint64_t data_offset;
  std::uint64_t total;
  layout(std::uint64_t data_bytes, std::uint32_t max_tensors)
      : data_offset(round_up(directory_offset + std::uint64_t{max_tensors} * sizeof(Entry),
                             data_alignment)),
        total(data_offset + round_up(data_bytes, tensor_alignment)) {}
};

// The open segment of pool `name`: its descriptor and size, or ENOENT.
struct opened {
  int fd = -1;
  off_t size = 0;
};

opened open_segment(const char* who, const std::string& name) {
  const int fd = ::shm_open(segment(name).c_str(), O_RDWR, 0600);
  if (fd < 0) {
    const int e = errno;
    throw io_error(e, e == ENOENT ? fmt::format("{} \"{}\": no such pool (lris pool list shows "
                                                "them)", who, name)
                                  : fmt::format("{} \"{}\": cannot open /dev/shm{}", who, name,
                                                segment(name)));
  }
  return {fd, 0};
}

// Removes the name of pool `name` when it still names the segment open on `fd` (not a later
// pool made under the same name).
void unlink_if_same(const std::string& name, int fd) {
  struct stat mine {}, named {};
  const std::string path = fmt::format("/dev/shm/{}{}", prefix, name);
  if (::fstat(fd, &mine) == 0 && ::stat(path.c_str(), &named) == 0 && mine.st_ino == named.st_ino &&
      mine.st_dev == named.st_dev) {
    ::shm_unlink(segment(name).c_str());
  }
}

}  // namespace

host_pool::host_pool(std::string name, void* map, std::size_t map_bytes, bool attached, int fd)
    : name_(std::move(name)), map_(map), map_bytes_(map_bytes), attached_(attached), fd_(fd) {}

host_pool::host_pool(host_pool&& o) noexcept
    : name_(std::move(o.name_)), map_(std::exchange(o.map_, nullptr)),
      map_bytes_(std::exchange(o.map_bytes_, 0)), attached_(std::exchange(o.attached_, false)),
      fd_(std::exchange(o.fd_, -1)),
      index_mutex_(std::move(o.index_mutex_)), index_(std::move(o.index_)),
      indexed_(std::exchange(o.indexed_, 0)) {}

host_pool& host_pool::operator=(host_pool&& o) noexcept {
  if (this != &o) {
    detach();
    name_ = std::move(o.name_);
    map_ = std::exchange(o.map_, nullptr);
    map_bytes_ = std::exchange(o.map_bytes_, 0);
    attached_ = std::exchange(o.attached_, false);
    fd_ = std::exchange(o.fd_, -1);
    index_mutex_ = std::move(o.index_mutex_);
    index_ = std::move(o.index_);
    indexed_ = std::exchange(o.indexed_, 0);
  }
  return *this;
}

host_pool::~host_pool() { detach(); }

host_pool host_pool::create(const std::string& name, std::uint64_t data_bytes,
                            pool_options options) {
  check_name("host_pool::create", name);
  if (data_bytes == 0) {
    throw invalid_argument(fmt::format("host_pool::create \"{}\": a pool of 0 bytes", name));
  }
  if (options.max_tensors == 0) {
    throw invalid_argument(fmt::format("host_pool::create \"{}\": room for 0 tensors", name));
  }
  if (data_bytes > max_data_bytes || options.max_tensors > max_directory) {
    throw invalid_argument(fmt::format("host_pool::create \"{}\": {} bytes and {} tensors (at "
                                       "most {} bytes and {} tensors)", name, data_bytes,
                                       options.max_tensors, max_data_bytes, max_directory));
  }
  if (options.numa_node >= 0) (void)numa_allocator(options.numa_node);  // throws if none
  const layout<header, entry> l(data_bytes, options.max_tensors);
  const int fd = ::shm_open(segment(name).c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd < 0) {
    const int e = errno;
    throw io_error(e, e == EEXIST ? fmt::format("host_pool::create \"{}\": a pool of that name "
                                                "exists (attach to it, or drop it)", name)
                                  : fmt::format("host_pool::create \"{}\": cannot make "
                                                "/dev/shm{}", name, segment(name)));
  }
  const auto fail = [&](int e, const std::string& what) {
    ::close(fd);
    ::shm_unlink(segment(name).c_str());
    throw io_error(e, fmt::format("host_pool::create \"{}\": {}", name, what));
  };
  if (::ftruncate(fd, static_cast<off_t>(l.total)) != 0) {
    fail(errno, fmt::format("cannot size /dev/shm{} to {} bytes", segment(name), l.total));
  }
  // The segment's pages come from /dev/shm as they are first touched; one its file system
  // cannot give would raise SIGBUS there. A pool the free space cannot hold is refused now,
  // and the header's and directory's pages (written by the CPU) are allocated now.
  struct statvfs fs {};
  if (::fstatvfs(fd, &fs) == 0) {
    const std::uint64_t free_bytes = std::uint64_t{fs.f_bavail} * fs.f_frsize;
    if (free_bytes < l.total) {
      fail(ENOSPC, fmt::format("/dev/shm has {} bytes free; the pool needs {} ({} of data, {} "
                               "tensors). A container's /dev/shm is 64 MiB unless it is given "
                               "more (docker run --shm-size)", free_bytes, l.total, data_bytes,
                               options.max_tensors));
    }
  }
  if (const int e = ::posix_fallocate(fd, 0, static_cast<off_t>(l.data_offset)); e != 0) {
    fail(e, fmt::format("cannot allocate the {} bytes of its header and directory in /dev/shm",
                        l.data_offset));
  }
  void* map = ::mmap(nullptr, l.total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) fail(errno, fmt::format("cannot map {} bytes", l.total));
  host_pool p(name, map, l.total, true, fd);
  auto* h = static_cast<header*>(map);
  h->creator = detail::self_process();  // first: an attacher that finds it unfinished asks it
  detail::init_robust_mutex(&h->mutex);
  detail::init_robust_mutex(&h->registration);
  h->version = pool_version;
  h->max_tensors = options.max_tensors;
  h->directory_offset = l.directory_offset;
  h->data_offset = l.data_offset;
  h->data_bytes = data_bytes;
  h->used = 0;
  h->count.store(0);
  h->generation.store(0);
  h->numa_node = options.numa_node;
  h->numa_bound = 0;
  h->persistent = options.persistent ? 1 : 0;
  h->removed = 0;
  h->users[0] = {h->creator, 1};
  if (options.numa_node >= 0) {
    // Before any page is touched: tmpfs keeps the policy for the segment's pages, whichever
    // process touches them first.
    std::string why;
    h->numa_bound = bind_to_node(p.data(), round_up(data_bytes, tensor_alignment),
                                 options.numa_node, why) ? 1 : 0;
    std::snprintf(h->numa_note, sizeof h->numa_note, "%s", why.c_str());
  }
  h->ready.store(pool_magic, std::memory_order_release);
  return p;
}

host_pool host_pool::attach(const std::string& name) {
  check_name("host_pool::attach", name);
  for (int attempt = 0;; ++attempt) {
    opened o = open_segment("host_pool::attach", name);
    const auto fail = [&](auto error) {
      ::close(o.fd);
      throw error;
    };
    // A creator may be sizing and making it now: wait for it, briefly.
    struct stat st {};
    void* map = MAP_FAILED;
    header* h = nullptr;
    for (int i = 0; i < 2000; ++i) {
      if (::fstat(o.fd, &st) == 0 && st.st_size >= static_cast<off_t>(sizeof(header))) {
        if (map == MAP_FAILED) {
          map = ::mmap(nullptr, sizeof(header), PROT_READ | PROT_WRITE, MAP_SHARED, o.fd, 0);
          if (map == MAP_FAILED) fail(io_error(errno, fmt::format("host_pool::attach \"{}\": "
                                                                  "cannot map it", name)));
          h = static_cast<header*>(map);
        }
        if (h->ready.load(std::memory_order_acquire) == pool_magic) break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (h == nullptr || h->ready.load(std::memory_order_acquire) != pool_magic) {
      const bool gone = h == nullptr || h->creator.pid == 0 || !detail::alive(h->creator);
      const std::string creator =
          h != nullptr && h->creator.pid != 0
              ? fmt::format(" (its creator, pid {}, is {})", h->creator.pid,
                            gone ? "gone" : "still making it")
              : "";
      if (map != MAP_FAILED) ::munmap(map, sizeof(header));
      if (gone) {  // never to be finished: removed, so that the next open makes it anew
        unlink_if_same(name, o.fd);
        fail(io_error(ENOENT, fmt::format("host_pool::attach \"{}\": no such pool (an unfinished "
                                          "one{} was removed)", name, creator)));
      }
      fail(format_error(fmt::format("host_pool::attach \"{}\": /dev/shm{} is not a finished "
                                    "pool{}", name, segment(name), creator)));
    }
    if (h->version != pool_version) {
      const auto v = h->version;
      ::munmap(map, sizeof(header));
      fail(format_error(fmt::format("host_pool::attach \"{}\": a pool of version {}, not {}",
                                    name, v, pool_version)));
    }
    const bool sane = h->max_tensors > 0 && h->max_tensors <= max_directory &&
                      h->data_bytes > 0 && h->data_bytes <= max_data_bytes &&
                      h->directory_offset == layout<header, entry>(h->data_bytes, h->max_tensors).directory_offset &&
                      h->data_offset == layout<header, entry>(h->data_bytes, h->max_tensors).data_offset;
    const std::uint64_t total = sane ? h->data_offset + round_up(h->data_bytes, tensor_alignment) : 0;
    ::munmap(map, sizeof(header));
    if (!sane || static_cast<std::uint64_t>(st.st_size) != total) {
      fail(format_error(fmt::format("host_pool::attach \"{}\": /dev/shm{} holds {} bytes; its "
                                    "header says {}", name, segment(name), st.st_size, total)));
    }
    map = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, o.fd, 0);
    const int map_errno = errno;
    if (map == MAP_FAILED) {
      ::close(o.fd);
      throw io_error(map_errno, fmt::format("host_pool::attach \"{}\": cannot map {} bytes", name,
                                            total));
    }
    host_pool p(name, map, total, false, o.fd);  // counted once registered below
    h = static_cast<header*>(map);
    p.lock();
    if (h->removed != 0) {  // dropped (or its last user left) between our open and now
      unlink_if_same(name, o.fd);  // its remover may have died before unlinking it
      p.unlock();
      if (attempt < 3) continue;
      throw io_error(ENOENT, fmt::format("host_pool::attach \"{}\": no such pool (it was just "
                                         "removed)", name));
    }
    const detail::process_id me = detail::self_process();
    int slot = -1;
    for (int i = 0; i < max_users && slot < 0; ++i) {
      if (h->users[i].id == me) slot = i;
    }
    for (int i = 0; i < max_users && slot < 0; ++i) {
      if (h->users[i].id.pid == 0 || !detail::alive(h->users[i].id)) {
        h->users[i] = {me, 0};  // free, or of a process that died: its place is free
        slot = i;
      }
    }
    if (slot < 0) {
      p.unlock();
      throw invalid_argument(fmt::format("host_pool::attach \"{}\": {} processes are attached "
                                         "already, the most a pool counts", name, max_users));
    }
    ++h->users[slot].handles;
    p.attached_ = true;
    p.unlock();
    return p;
  }
}

host_pool host_pool::open(const std::string& name, std::uint64_t data_bytes,
                          pool_options options) {
  for (int attempt = 0;; ++attempt) {
    try {
      return create(name, data_bytes, options);
    } catch (const io_error& e) {
      if (e.code().value() != EEXIST) throw;
    }
    try {
      return attach(name);
    } catch (const io_error& e) {  // gone between the two: make it again
      if (e.code().value() != ENOENT || attempt >= 3) throw;
    }
  }
}

bool host_pool::drop(const std::string& name) {
  check_name("host_pool::drop", name);
  const int fd = ::shm_open(segment(name).c_str(), O_RDWR, 0600);
  if (fd < 0) return false;
  bool dropped = false;
  struct stat st {};
  void* map = MAP_FAILED;
  if (::fstat(fd, &st) == 0 && st.st_size >= static_cast<off_t>(sizeof(header))) {
    map = ::mmap(nullptr, sizeof(header), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  }
  auto* h = map == MAP_FAILED ? nullptr : static_cast<header*>(map);
  if (h != nullptr && h->ready.load(std::memory_order_acquire) == pool_magic) {
    // Under its lock: marked, then its name removed if it still names it, so that neither its
    // attached processes nor this call ever unlink a later pool of the name.
    const int r = pthread_mutex_lock(&h->mutex);
    if (r == EOWNERDEAD) pthread_mutex_consistent(&h->mutex);
    if (r == 0 || r == EOWNERDEAD) {
      if (h->removed == 0) {
        h->removed = 1;
        unlink_if_same(name, fd);
        dropped = true;
      }
      pthread_mutex_unlock(&h->mutex);
    }
  } else {  // unfinished, or not a pool: its name goes if it is still this segment's
    unlink_if_same(name, fd);
    dropped = true;
  }
  if (map != MAP_FAILED) ::munmap(map, sizeof(header));
  ::close(fd);
  return dropped;
}

std::vector<pool_info> host_pool::list() {
  std::vector<pool_info> out;
  DIR* d = ::opendir("/dev/shm");
  if (d == nullptr) return out;
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    const std::string_view n = e->d_name;
    if (n.starts_with(prefix)) names.emplace_back(n.substr(prefix.size()));
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  for (const auto& n : names) {
    try {
      // Looked at without being counted as a user: a pool whose users are gone stays as is.
      opened o = open_segment("host_pool::list", n);
      struct stat st {};
      void* map = MAP_FAILED;
      if (::fstat(o.fd, &st) == 0 && st.st_size >= static_cast<off_t>(sizeof(header))) {
        map = ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ | PROT_WRITE,
                     MAP_SHARED, o.fd, 0);
      }
      ::close(o.fd);
      if (map == MAP_FAILED) continue;
      host_pool p(n, map, static_cast<std::size_t>(st.st_size), false, -1);
      const auto* h = static_cast<const header*>(map);
      if (h->ready.load(std::memory_order_acquire) != pool_magic || h->version != pool_version ||
          static_cast<std::uint64_t>(st.st_size) !=
              h->data_offset + round_up(h->data_bytes, tensor_alignment)) {
        pool_info broken;
        broken.name = n;
        broken.numa_note = "not a finished pool of this version";
        out.push_back(std::move(broken));
        continue;
      }
      pool_info i = p.info();
      if (i.users == 0 && !i.persistent) {
        // Every process that used it died without leaving it: freed by the one that finds it.
        drop(n);
        continue;
      }
      out.push_back(std::move(i));
    } catch (const std::exception&) {  // gone meanwhile
    }
  }
  return out;
}

void host_pool::lock() {
  auto* h = static_cast<header*>(map_);
  const int r = pthread_mutex_lock(&h->mutex);
  if (r == EOWNERDEAD) {
    // Its holder died inside: every change under the lock is a single store or a claim whose
    // filler is checked for life, so the state is whole.
    pthread_mutex_consistent(&h->mutex);
  } else if (r != 0) {
    throw io_error(r, fmt::format("host_pool \"{}\": cannot lock", name_));
  }
}

void host_pool::unlock() noexcept { pthread_mutex_unlock(&static_cast<header*>(map_)->mutex); }

host_pool::registration_lock host_pool::lock_registration() {
  auto* h = static_cast<header*>(map_);
  const int r = pthread_mutex_lock(&h->registration);
  if (r == EOWNERDEAD) {
    pthread_mutex_consistent(&h->registration);  // a process died registering: nothing to mend
  } else if (r != 0) {
    throw io_error(r, fmt::format("host_pool \"{}\": cannot take the registration lock", name_));
  }
  return registration_lock(&h->registration);
}

host_pool::registration_lock::~registration_lock() {
  if (mutex_ != nullptr) pthread_mutex_unlock(static_cast<pthread_mutex_t*>(mutex_));
}

void host_pool::detach() noexcept {
  if (map_ == nullptr) return;
  auto* h = static_cast<header*>(map_);
  if (attached_) {
    try {
      lock();
      const detail::process_id me = detail::self_process();
      int live = 0;
      for (auto& u : h->users) {
        if (u.id.pid == 0) continue;
        if (u.id == me && u.handles > 1) {
          --u.handles;  // another host_pool of this process still uses it
          ++live;
        } else if (u.id == me || !detail::alive(u.id)) {
          u = {};
        } else {
          ++live;
        }
      }
      if (live == 0 && h->persistent == 0 && h->removed == 0) {
        h->removed = 1;
        unlink_if_same(name_, fd_);  // not a later pool of the name
      }
      unlock();
    } catch (...) {
      unlock();
    }
  }
  ::munmap(std::exchange(map_, nullptr), map_bytes_);
  if (fd_ >= 0) ::close(std::exchange(fd_, -1));
}

host_pool::entry* host_pool::entries() const noexcept {
  auto* h = static_cast<header*>(map_);
  return reinterpret_cast<entry*>(static_cast<std::byte*>(map_) + h->directory_offset);
}

std::byte* host_pool::data() const noexcept {
  return static_cast<std::byte*>(map_) + static_cast<header*>(map_)->data_offset;
}

std::uint64_t host_pool::data_bytes() const noexcept {
  return static_cast<header*>(map_)->data_bytes;
}

std::optional<std::uint32_t> host_pool::lookup(std::string_view name) {
  // Entries below `count` have their name, type, shape and place for good: no pool lock
  // needed, only this process's index's.
  std::lock_guard hold(*index_mutex_);
  auto* h = static_cast<header*>(map_);
  const std::uint32_t n = std::min(h->count.load(std::memory_order_acquire), h->max_tensors);
  const entry* es = entries();
  for (; indexed_ < n; ++indexed_) {
    const entry& e = es[indexed_];
    index_.emplace(std::string(e.name, std::min<std::size_t>(e.name_len, max_name)), indexed_);
  }
  const auto it = index_.find(std::string(name));
  if (it == index_.end()) return std::nullopt;
  return it->second;
}

pool_tensor host_pool::view(const entry& e) const {
  const auto* h = static_cast<const header*>(map_);
  if (e.name_len > max_name || e.ndim > max_dims || e.offset > h->data_bytes ||
      e.bytes > h->data_bytes - e.offset || !dtype_from_string(to_string(static_cast<dtype>(e.type)))) {
    throw format_error(fmt::format("host_pool \"{}\": directory entry {} is damaged (name of {} "
                                   "bytes, {} dimensions, {} bytes at offset {} of {})", name_,
                                   &e - entries(), e.name_len, e.ndim, e.bytes, e.offset,
                                   h->data_bytes));
  }
  pool_tensor t;
  t.name = std::string_view(e.name, e.name_len);
  t.type = static_cast<dtype>(e.type);
  t.shape.assign(e.shape, e.shape + e.ndim);
  t.data = data() + e.offset;
  t.bytes = e.bytes;
  t.offset = e.offset;
  t.checksum = e.checksum;
  return t;
}

pool_info host_pool::info() {
  auto* h = static_cast<header*>(map_);
  pool_info i;
  i.name = name_;
  lock();
  struct unlock_at_end {
    host_pool* p;
    ~unlock_at_end() { p->unlock(); }
  } guard{this};
  i.data_bytes = h->data_bytes;
  i.used_bytes = h->used;
  const std::uint32_t n = std::min(h->count.load(), h->max_tensors);
  for (std::uint32_t k = 0; k < n; ++k) {
    const auto s = entries()[k].state.load(std::memory_order_acquire);
    if (s == entry_ready) ++i.tensors;
    if (s == entry_filling) ++i.filling;
  }
  for (const auto& u : h->users) {
    if (u.id.pid != 0 && detail::alive(u.id)) ++i.users;
  }
  i.numa_node = h->numa_node;
  i.numa_bound = h->numa_bound != 0;
  i.numa_note.assign(h->numa_note, strnlen(h->numa_note, sizeof h->numa_note));
  i.persistent = h->persistent != 0;
  i.generation = h->generation.load();
  return i;
}

std::optional<pool_tensor> host_pool::find(std::string_view name) {
  const auto k = lookup(name);
  if (!k) return std::nullopt;
  const entry& e = entries()[*k];
  if (e.state.load(std::memory_order_acquire) != entry_ready) return std::nullopt;
  return view(e);
}

std::vector<pool_tensor> host_pool::tensors() {
  std::vector<pool_tensor> out;
  auto* h = static_cast<header*>(map_);
  const std::uint32_t n = std::min(h->count.load(std::memory_order_acquire), h->max_tensors);
  for (std::uint32_t k = 0; k < n; ++k) {
    const entry& e = entries()[k];
    if (e.state.load(std::memory_order_acquire) == entry_ready) out.push_back(view(e));
  }
  return out;
}

std::optional<pool_tensor> host_pool::wait(std::string_view name,
                                           std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (auto t = find(name)) return t;
    const auto k = lookup(name);
    if (!k) return std::nullopt;  // nobody claimed it
    lock();
    const entry& e = entries()[*k];
    const bool ready = e.state.load(std::memory_order_acquire) == entry_ready;
    const detail::process_id filler = e.filler;
    unlock();
    if (ready) continue;  // published between the look and the lock
    if (filler.pid == 0 || !detail::alive(filler)) return std::nullopt;
    if (std::chrono::steady_clock::now() >= until) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

pool_claim host_pool::claim(std::string_view name, dtype type,
                            std::span<const std::uint64_t> shape, std::uint64_t bytes) {
  if (name.empty() || name.size() > max_name) {
    throw invalid_argument(fmt::format("host_pool \"{}\": tensor name \"{}\" is {} bytes long "
                                       "(1 to {})", name_, name, name.size(), max_name));
  }
  if (shape.size() > max_dims) {
    throw invalid_argument(fmt::format("host_pool \"{}\": tensor \"{}\" has {} dimensions (at "
                                       "most {})", name_, name, shape.size(), max_dims));
  }
  auto* h = static_cast<header*>(map_);
  const detail::process_id me = detail::self_process();
  lock();
  struct unlock_at_end {
    host_pool* p;
    ~unlock_at_end() { p->unlock(); }
  } guard{this};
  pool_claim c;
  c.bytes = bytes;
  if (const auto k = lookup(name)) {
    entry& e = entries()[*k];
    const bool same_shape = e.ndim == shape.size() && std::equal(shape.begin(), shape.end(), e.shape);
    if (e.type != static_cast<std::uint32_t>(type) || !same_shape || e.bytes != bytes) {
      throw invalid_argument(fmt::format(
          "host_pool \"{}\": tensor \"{}\" is there as {} of {} dimensions, {} bytes; asked for "
          "{} of {} dimensions, {} bytes", name_, name, to_string(static_cast<dtype>(e.type)),
          e.ndim, e.bytes, to_string(type), shape.size(), bytes));
    }
    c.index = *k;
    c.data = data() + e.offset;
    const auto s = e.state.load(std::memory_order_acquire);
    if (s == entry_ready) {
      c.what = pool_claim::state::ready;
    } else if (e.filler.pid != 0 && (e.filler == me || detail::alive(e.filler))) {
      // Filled by a live process; by this one too: another thread of it fills it now.
      c.what = pool_claim::state::busy;
    } else {
      e.filler = me;  // its filler died or gave up: ours now
      c.what = pool_claim::state::claimed;
      c.taken_over = true;
    }
    return c;
  }
  const std::uint32_t n = h->count.load();
  if (n >= h->max_tensors) {
    throw out_of_memory(fmt::format("host_pool \"{}\": no room for tensor \"{}\": the directory "
                                    "holds {} tensors, its most", name_, name, n),
                        static_cast<std::size_t>(bytes));
  }
  const std::uint64_t offset = round_up(h->used, tensor_alignment);
  if (offset > h->data_bytes || bytes > h->data_bytes - offset) {
    throw out_of_memory(fmt::format("host_pool \"{}\": no room for tensor \"{}\" of {} bytes: "
                                    "{} of {} bytes are left", name_, name, bytes,
                                    h->data_bytes - std::min(offset, h->data_bytes),
                                    h->data_bytes),
                        static_cast<std::size_t>(bytes));
  }
  entry& e = entries()[n];
  e.state.store(entry_filling, std::memory_order_relaxed);
  e.type = static_cast<std::uint32_t>(type);
  e.ndim = static_cast<std::uint32_t>(shape.size());
  e.name_len = static_cast<std::uint32_t>(name.size());
  std::memcpy(e.name, name.data(), name.size());
  e.name[name.size()] = '\0';
  std::copy(shape.begin(), shape.end(), e.shape);
  e.offset = offset;
  e.bytes = bytes;
  e.checksum = 0;
  e.generation = 0;
  e.filler = me;
  h->used = offset + bytes;
  h->count.store(n + 1, std::memory_order_release);  // the entry is whole before it counts
  c.what = pool_claim::state::claimed;
  c.index = n;
  c.data = data() + offset;
  return c;
}

void host_pool::check_room(std::span<const wanted> tensors, std::string_view what) {
  auto* h = static_cast<header*>(map_);
  lock();
  struct unlock_at_end {
    host_pool* p;
    ~unlock_at_end() { p->unlock(); }
  } guard{this};
  // The claims simulated as claim() places them: each new tensor page-aligned after the last.
  std::uint32_t entries_needed = 0;
  std::uint64_t at = h->used, bytes_needed = 0;
  bool fits = true;
  for (const wanted& t : tensors) {
    if (lookup(t.name)) continue;
    ++entries_needed;
    const std::uint64_t offset = round_up(at, tensor_alignment);
    fits = fits && offset <= h->data_bytes && t.bytes <= h->data_bytes - offset;
    bytes_needed += offset - at + t.bytes;
    at = offset + t.bytes;
  }
  const std::uint32_t n = h->count.load();
  if (fits && entries_needed <= h->max_tensors - std::min(n, h->max_tensors)) return;
  throw out_of_memory(fmt::format("host_pool \"{}\": {} needs {} tensors more and {} bytes; the "
                                  "pool has room for {} tensors more and {} bytes (nothing was "
                                  "claimed)", name_, what, entries_needed, bytes_needed,
                                  h->max_tensors - std::min(n, h->max_tensors),
                                  h->data_bytes - std::min(h->used, h->data_bytes)),
                      static_cast<std::size_t>(bytes_needed));
}

std::uint64_t host_pool::publish(const pool_claim& c) {
  auto* h = static_cast<header*>(map_);
  const detail::process_id me = detail::self_process();
  const std::uint32_t n = h->count.load(std::memory_order_acquire);
  entry* e = c.index < n ? &entries()[c.index] : nullptr;
  const auto not_ours = [&] {
    return e == nullptr || c.what != pool_claim::state::claimed ||
           e->state.load(std::memory_order_acquire) != entry_filling;
  };
  if (not_ours()) {
    throw invalid_argument(fmt::format("host_pool \"{}\": publish of entry {}, which this process "
                                       "has not claimed", name_, c.index));
  }
  // The bytes are hashed where they lie, outside the lock.
  const std::uint64_t sum = block_checksum(data() + e->offset, e->bytes);
  lock();
  if (!(e->filler == me) || not_ours()) {
    unlock();
    throw invalid_argument(fmt::format("host_pool \"{}\": publish of tensor \"{}\", which another "
                                       "process took over", name_,
                                       std::string_view(e->name, e->name_len)));
  }
  e->checksum = sum;
  e->generation = h->generation.fetch_add(1) + 1;
  e->filler = {};
  e->state.store(entry_ready, std::memory_order_release);
  unlock();
  return sum;
}

void host_pool::abandon(const pool_claim& c) noexcept {
  auto* h = static_cast<header*>(map_);
  if (c.what != pool_claim::state::claimed || c.index >= h->count.load()) return;
  try {
    lock();
    entry& e = entries()[c.index];
    if (e.filler == detail::self_process() && e.state.load() == entry_filling) e.filler = {};
    unlock();
  } catch (...) {
  }
}

void host_pool::verify(std::string_view name) {
  const auto t = find(name);
  if (!t) {
    throw invalid_argument(fmt::format("host_pool \"{}\": no ready tensor \"{}\"", name_, name));
  }
  const std::uint64_t sum = block_checksum(t->data, t->bytes);
  if (sum != t->checksum) {
    throw integrity_error(fmt::format("host_pool \"{}\": tensor \"{}\" ({} bytes at offset {} of "
                                      "the pool's data) has checksum {:016x}; it was published "
                                      "with {:016x}", name_, name, t->bytes, t->offset, sum,
                                      t->checksum));
  }
}

}  // namespace lris::pool
