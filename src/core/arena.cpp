#include "tessera/arena.h"

#include <cstdlib>
#include <string>

#include "tessera/error.h"
#include "tessera/memory.h"

namespace tessera {

void Arena::FreeDeleter::operator()(void* p) const { std::free(p); }

void Arena::reserve(size_t capacity_bytes) {
    size_t rounded = (capacity_bytes + 63) / 64 * 64;
    base_.reset();
    // Callers check their own budgets with a precise message; this catches the rest.
    if (rounded > (size_t(64) << 20)) memory_check("memory", "a buffer", rounded);
    base_.reset(rounded ? static_cast<char*>(std::aligned_alloc(64, rounded)) : nullptr);
    if (rounded && !base_) fail("arena", "cannot allocate " + std::to_string(rounded) + " bytes");
    capacity_ = rounded;
    used_ = 0;
}

void* Arena::alloc_bytes(size_t bytes) {
    size_t rounded = (bytes + 63) / 64 * 64;
    if (used_ + rounded > capacity_)
        fail("arena", "out of memory: need " + std::to_string(used_ + rounded) + " bytes, reserved " +
                          std::to_string(capacity_));
    void* p = base_.get() + used_;
    used_ += rounded;
    return p;
}

}  // namespace tessera
