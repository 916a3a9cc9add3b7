// A bounded cache of oneDNN primitives (or anything costly to make), shared by
// every thread. Products are keyed by their row count among the rest, and a
// long run whose token counts vary (dynamic exits, pruning by score, prompts
// of different lengths) would otherwise keep one primitive per count forever:
// ~350 KiB each for a 4096 x 4096 product. Beyond `capacity` entries the
// least recently used one is dropped; a caller still running it keeps it
// alive through its shared_ptr.
#pragma once
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <utility>

namespace tessera {

template <typename Key, typename Value, typename Hash>
class PrimitiveCache {
public:
    explicit PrimitiveCache(size_t capacity) : capacity_(capacity) {}

    // The entry for key, made by make() (under the cache's lock) when absent.
    // make() may throw: nothing is stored then.
    template <typename Make>
    std::shared_ptr<const Value> get(const Key& key, Make&& make) {
        std::lock_guard lock(mutex_);
        if (auto it = entries_.find(key); it != entries_.end()) {
            recency_.splice(recency_.begin(), recency_, it->second.second);
            return it->second.first;
        }
        auto value = std::make_shared<const Value>(make());
        recency_.push_front(key);
        entries_.emplace(key, std::make_pair(value, recency_.begin()));
        ++created_;
        if (entries_.size() > capacity_) {
            entries_.erase(recency_.back());
            recency_.pop_back();
        }
        return value;
    }

    size_t size() const {
        std::lock_guard lock(mutex_);
        return entries_.size();
    }
    // Entries made so far, dropped ones included.
    int64_t created() const {
        std::lock_guard lock(mutex_);
        return created_;
    }

private:
    using Recency = std::list<Key>;
    mutable std::mutex mutex_;
    size_t capacity_;
    Recency recency_;  // most recently used first
    std::unordered_map<Key, std::pair<std::shared_ptr<const Value>, typename Recency::iterator>, Hash> entries_;
    int64_t created_ = 0;
};

}  // namespace tessera
