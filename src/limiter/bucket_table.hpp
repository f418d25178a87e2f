#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include <boost/unordered/unordered_flat_map.hpp>

#include "limiter/decider.hpp"
#include "limiter/siphash.hpp"
#include "limiter/token_bucket.hpp"

namespace sluice::limiter {

/// One bucket touched by a decision: filled in by the caller, answered by bucket_table::apply.
struct bucket_op {
  std::uint64_t key;           ///< in: table key (client_key.hpp)
  const token_bucket* bucket;  ///< in: the math for this bucket's rate and burst
  bool enforced;               ///< in: false for dry-run limits, which never refuse a request
  bool had_token;              ///< out: the bucket had a token at now
  bucket_state state;          ///< out: the bucket after the decision (a token taken if admitted and had_token)
};

/// The process's buckets: a fixed power-of-two number of shards, each a cache-line aligned flat hash map
/// from 64-bit key to bucket_state under its own spinlock, held only around lookup and accounting. It
/// outlives config reloads (one per process; local_limiters are rebuilt over it) and owns the SipHash seed
/// that keys are made with. Memory is bounded by max_keys: buckets that have refilled to full are dropped
/// first (lossless), otherwise the least recently used go (lossy). Thread-safe.
class bucket_table {
 public:
  /// Shards used when max_keys allows; fewer when max_keys is small so each shard bounds a sensible count.
  static constexpr std::size_t max_shards = 1024;
  /// The fewest keys a shard is given when there are several shards.
  static constexpr std::uint64_t min_keys_per_shard = 128;

  /// A table holding at most max_keys buckets, keyed with a fresh random seed.
  explicit bucket_table(std::uint64_t max_keys);
  /// The same with a chosen seed and, when shards != 0, a chosen shard count (rounded up to a power of two).
  bucket_table(std::uint64_t max_keys, const sip_key& seed, std::size_t shards = 0);
  ~bucket_table();
  bucket_table(const bucket_table&) = delete;
  bucket_table& operator=(const bucket_table&) = delete;

  /// All-or-nothing decision over ops: locks every shard involved in ascending order, admits when every
  /// enforced op's bucket has a token, and then takes one token from every bucket that has one; otherwise
  /// changes no bucket. Returns whether the request is admitted. At most 64 ops. Thread-safe.
  [[nodiscard]] bool apply(std::span<bucket_op> ops, time_point now);

  /// The SipHash seed keys for this table are made with (per process, random unless chosen).
  [[nodiscard]] const sip_key& seed() const { return seed_; }
  /// Buckets held now. Relaxed: exact when quiescent. Thread-safe.
  [[nodiscard]] std::uint64_t size() const;
  /// Buckets dropped because they had refilled to full (no decision changed). Thread-safe.
  [[nodiscard]] std::uint64_t lossless_evictions() const;
  /// Buckets dropped while below full, least recently used first (a client's debt forgotten). Thread-safe.
  [[nodiscard]] std::uint64_t lossy_evictions() const;
  /// The configured bound on buckets. Thread-safe.
  [[nodiscard]] std::uint64_t max_keys() const { return max_keys_.load(std::memory_order_relaxed); }
  /// Number of shards (a power of two, fixed at construction).
  [[nodiscard]] std::size_t shard_count() const { return shard_count_; }
  /// Bytes the table holds: every shard's slot array and group metadata as allocated, plus the shard
  /// structs and this object. Locks each shard in turn. Thread-safe.
  [[nodiscard]] std::size_t memory_bytes() const;

  /// Rebounds the table to n buckets (reload): shards above their new bound are trimmed at once, full
  /// buckets first, then least recently used. Allocates; control plane only. Thread-safe.
  void set_max_keys(std::uint64_t n, time_point now = clock::now());

 private:
  struct shard;

  [[nodiscard]] std::size_t shard_of(std::uint64_t key) const;
  void rebound(std::uint64_t n, time_point now);

  sip_key seed_;
  std::size_t shard_count_;
  std::size_t shard_mask_;  ///< (key >> 32) & shard_mask_ is the shard; the map mixes the whole key again
  std::unique_ptr<shard[]> shards_;
  std::atomic<std::uint64_t> max_keys_{0};
};

}  // namespace sluice::limiter
