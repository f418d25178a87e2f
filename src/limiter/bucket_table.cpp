#include "limiter/bucket_table.hpp"

#include <algorithm>
#include <bit>
#include <cassert>
#include <thread>

namespace sluice::limiter {
namespace {

/// A one-byte test-and-test-and-set lock: a shard's critical section is a hash probe and a few integer
/// operations, shorter than a futex round trip. Yields after a short spin so a preempted holder can run.
class spin_lock {
 public:
  void lock() noexcept {
    for (unsigned spins = 0;;) {
      if (!locked_.exchange(true, std::memory_order_acquire)) return;
      while (locked_.load(std::memory_order_relaxed)) {
        if (++spins < 128) {
#if defined(__x86_64__) || defined(__i386__)
          __builtin_ia32_pause();
#endif
        } else {
          std::this_thread::yield();
        }
      }
    }
  }
  void unlock() noexcept { locked_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> locked_{false};
};

/// std::allocator that adds what it hands out to a counter, so memory_bytes() reports the map's real
/// allocation (slot array and group metadata share one buffer) rather than a copy of Boost's formula.
template <class T>
struct counting_allocator {
  using value_type = T;

  explicit counting_allocator(std::atomic<std::size_t>* counter) noexcept : bytes(counter) {}
  template <class U>
  counting_allocator(const counting_allocator<U>& other) noexcept : bytes(other.bytes) {}  // NOLINT

  T* allocate(std::size_t n) {
    T* p = std::allocator<T>{}.allocate(n);
    bytes->fetch_add(n * sizeof(T), std::memory_order_relaxed);
    return p;
  }
  void deallocate(T* p, std::size_t n) noexcept {
    bytes->fetch_sub(n * sizeof(T), std::memory_order_relaxed);
    std::allocator<T>{}.deallocate(p, n);
  }
  template <class U>
  bool operator==(const counting_allocator<U>& other) const noexcept {
    return bytes == other.bytes;
  }

  std::atomic<std::size_t>* bytes;
};

using map_type = boost::unordered_flat_map<std::uint64_t, bucket_state, boost::hash<std::uint64_t>,
                                           std::equal_to<std::uint64_t>,
                                           counting_allocator<std::pair<const std::uint64_t, bucket_state>>>;

constexpr std::size_t max_ops = 64;

/// Recency in units of 2^20 ns (~1.05 ms); 32 bits wrap after ~52 days, and ages are taken modulo that.
std::uint32_t stamp_of(time_point now) {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count();
  return static_cast<std::uint32_t>(static_cast<std::uint64_t>(ns) >> 20);
}

/// Log-scale age classes, four per doubling: 0..127.
unsigned age_bin(std::uint32_t age) {
  if (age < 4) return age;
  const unsigned lg = static_cast<unsigned>(std::bit_width(age)) - 1;
  return lg * 4 + ((age >> (lg - 2)) & 3);
}
constexpr unsigned age_bins = 128;

}  // namespace

struct alignas(64) bucket_table::shard {
  shard() : map(0, boost::hash<std::uint64_t>{}, std::equal_to<std::uint64_t>{}, map_type::allocator_type(&allocated)) {}

  /// Drops buckets until at most target remain: every full one, then the least recently used (by age class;
  /// within the cut class, in slot order). Two passes over the shard. Requires lock.
  void trim_to(std::uint64_t target, time_point now) {
    const std::uint32_t now_stamp = stamp_of(now);
    std::uint32_t histogram[age_bins] = {};
    const std::size_t freed = erase_if(map, [&](const map_type::value_type& kv) {
      if (token_bucket::is_full(kv.second, now)) return true;
      ++histogram[age_bin(now_stamp - kv.second.last_used)];
      return false;
    });
    lossless.fetch_add(freed, std::memory_order_relaxed);
    if (map.size() > target) {
      const std::uint64_t excess = map.size() - target;
      std::uint64_t older = 0;
      unsigned cut = age_bins - 1;
      while (older + histogram[cut] < excess) older += histogram[cut--];
      std::uint64_t from_cut = excess - older;
      const std::size_t dropped = erase_if(map, [&](const map_type::value_type& kv) {
        const unsigned bin = age_bin(now_stamp - kv.second.last_used);
        if (bin > cut) return true;
        if (bin == cut && from_cut > 0) {
          --from_cut;
          return true;
        }
        return false;
      });
      lossy.fetch_add(dropped, std::memory_order_relaxed);
    }
    size.store(map.size(), std::memory_order_relaxed);
  }

  /// Stores a new bucket, making room first when the shard is at its bound. Requires lock.
  bucket_state& insert(std::uint64_t key, const bucket_state& state, time_point now, bucket_state& overflow) {
    if (bound == 0) {
      // Nowhere to keep it: the bucket is forgotten as soon as it is made.
      lossy.fetch_add(1, std::memory_order_relaxed);
      overflow = state;
      return overflow;
    }
    if (map.size() >= bound) {
      // Free a batch (1/32 of the bound) so a flood of new clients pays for a pass only every so often.
      const std::uint64_t batch = std::max<std::uint64_t>(1, bound / 32);
      trim_to(bound - batch, now);
    }
    auto [it, inserted] = map.try_emplace(key, state);
    size.store(map.size(), std::memory_order_relaxed);
    return it->second;
  }

  spin_lock lock;
  std::uint64_t bound = 0;  ///< guarded by lock
  std::atomic<std::size_t> allocated{0};
  map_type map;  ///< guarded by lock
  // Written under lock, read without it by the metrics.
  std::atomic<std::uint64_t> size{0};
  std::atomic<std::uint64_t> lossless{0};
  std::atomic<std::uint64_t> lossy{0};
};

bucket_table::bucket_table(std::uint64_t max_keys) : bucket_table(max_keys, random_sip_key()) {}

bucket_table::bucket_table(std::uint64_t max_keys, const sip_key& seed, std::size_t shards) : seed_(seed) {
  if (shards == 0) {
    shards = 1;
    while (shards < max_shards && max_keys / (shards * 2) >= min_keys_per_shard) shards *= 2;
  }
  shard_count_ = std::bit_ceil(std::min(shards, max_shards));
  shard_mask_ = shard_count_ - 1;
  shards_ = std::make_unique<shard[]>(shard_count_);
  rebound(max_keys, time_point{});
}

bucket_table::~bucket_table() = default;

std::size_t bucket_table::shard_of(std::uint64_t key) const { return (key >> 32) & shard_mask_; }

bool bucket_table::apply(std::span<bucket_op> ops, time_point now) {
  assert(ops.size() <= max_ops);
  std::size_t shard_index[max_ops];
  std::size_t locked[max_ops];
  std::size_t locked_count = 0;
  for (std::size_t i = 0; i < ops.size(); ++i) {
    const std::size_t s = shard_of(ops[i].key);
    shard_index[i] = s;
    std::size_t pos = locked_count;
    while (pos > 0 && locked[pos - 1] > s) --pos;
    if (pos > 0 && locked[pos - 1] == s) continue;
    std::copy_backward(locked + pos, locked + locked_count, locked + locked_count + 1);
    locked[pos] = s;
    ++locked_count;
  }
  // One global order (ascending shard index) for multi-shard decisions, so two of them cannot deadlock.
  for (std::size_t i = 0; i < locked_count; ++i) shards_[locked[i]].lock.lock();

  const bucket_state fresh = token_bucket::full_state(now);
  bucket_state* found[max_ops];
  bool allowed = true;
  for (std::size_t i = 0; i < ops.size(); ++i) {
    auto& map = shards_[shard_index[i]].map;
    const auto it = map.find(ops[i].key);
    found[i] = it == map.end() ? nullptr : &it->second;
    ops[i].had_token = ops[i].bucket->has_token(found[i] ? *found[i] : fresh, now);
    if (ops[i].enforced && !ops[i].had_token) allowed = false;
  }

  const std::uint32_t stamp = stamp_of(now);
  // Existing buckets first: an insert may trim its shard or rehash, which would move what found[] points at.
  for (std::size_t i = 0; i < ops.size(); ++i) {
    if (!found[i]) continue;
    if (allowed && ops[i].had_token) ops[i].bucket->take(*found[i], now);
    found[i]->last_used = stamp;
    ops[i].state = *found[i];
  }
  for (std::size_t i = 0; i < ops.size(); ++i) {
    if (found[i]) continue;
    bucket_state state = fresh;
    state.last_used = stamp;
    // A rejected request leaves no new bucket behind: a full bucket is the same as none.
    if (allowed) {
      bucket_state overflow;
      bucket_state& stored = shards_[shard_index[i]].insert(ops[i].key, state, now, overflow);
      if (ops[i].bucket->has_token(stored, now)) ops[i].bucket->take(stored, now);
      state = stored;
    }
    ops[i].state = state;
  }

  for (std::size_t i = locked_count; i > 0; --i) shards_[locked[i - 1]].lock.unlock();
  return allowed;
}

std::uint64_t bucket_table::size() const {
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < shard_count_; ++i) total += shards_[i].size.load(std::memory_order_relaxed);
  return total;
}

std::uint64_t bucket_table::lossless_evictions() const {
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < shard_count_; ++i) total += shards_[i].lossless.load(std::memory_order_relaxed);
  return total;
}

std::uint64_t bucket_table::lossy_evictions() const {
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < shard_count_; ++i) total += shards_[i].lossy.load(std::memory_order_relaxed);
  return total;
}

std::size_t bucket_table::memory_bytes() const {
  std::size_t total = sizeof(*this) + shard_count_ * sizeof(shard);
  for (std::size_t i = 0; i < shard_count_; ++i) total += shards_[i].allocated.load(std::memory_order_relaxed);
  return total;
}

void bucket_table::set_max_keys(std::uint64_t n, time_point now) { rebound(n, now); }

void bucket_table::rebound(std::uint64_t n, time_point now) {
  max_keys_.store(n, std::memory_order_relaxed);
  // Per-shard bounds sum to exactly n: the first n % shards shards take one more.
  const std::uint64_t base = n / shard_count_;
  const std::uint64_t extra = n % shard_count_;
  for (std::size_t i = 0; i < shard_count_; ++i) {
    shard& s = shards_[i];
    const std::uint64_t bound = base + (i < extra ? 1 : 0);
    s.lock.lock();
    const bool shrinking = bound < s.bound;
    s.bound = bound;
    if (s.map.size() > bound) s.trim_to(bound, now);
    // Shards grow with their maps (capacity doubles as keys arrive), so memory follows the keys tracked
    // rather than the bound: a table sized for millions costs little while it holds thousands. A lower
    // bound gives back what the shard no longer needs.
    if (shrinking) s.map.rehash(0);
    s.lock.unlock();
  }
}

}  // namespace sluice::limiter
