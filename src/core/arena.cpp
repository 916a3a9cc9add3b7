#include "tessera/arena.h"

#include <sys/mman.h>

#include <cstdlib>
#include <string>

#include "tessera/error.h"
#include "tessera/memory.h"

namespace tessera {

void Arena::FreeDeleter::operator()(void* p) const { std::free(p); }

// Arenas from this size up are placed in 2 MiB pages: a decoder's KV cache
// gives every head its own span, so a decode step touched thousands of 4 KiB
// pages, each a TLB miss (a nested page walk in a virtual machine). On a
// 2-core Zen 5 VM writing one token's keys and values took 3-5 ms of a
// 250 ms LLaVA-7B decode step in 4 KiB pages.
constexpr size_t huge_page_bytes = size_t(2) << 20;
constexpr size_t huge_page_min_arena = size_t(4) << 20;

void Arena::reserve(size_t capacity_bytes) {
    size_t rounded = (capacity_bytes + 63) / 64 * 64;
    const bool huge = rounded >= huge_page_min_arena;
    if (huge) rounded = (rounded + huge_page_bytes - 1) / huge_page_bytes * huge_page_bytes;
    base_.reset();
    // Callers check their own budgets with a precise message; this catches the rest.
    if (rounded > (size_t(64) << 20)) memory_check("memory", "a buffer", rounded);
    base_.reset(rounded ? static_cast<char*>(std::aligned_alloc(huge ? huge_page_bytes : 64, rounded)) : nullptr);
    if (rounded && !base_) fail("arena", "cannot allocate " + std::to_string(rounded) + " bytes");
    // Only advice: where the kernel has no transparent huge pages the arena
    // stays in small pages.
    if (huge) ::madvise(base_.get(), rounded, MADV_HUGEPAGE);
    capacity_ = rounded;
    used_ = 0;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14
#endif
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25  // Linux 6.1
#endif

bool Arena::commit() {
    if (capacity_ < huge_page_min_arena) return false;
    // A kernel without these leaves the pages to fault in at first touch.
    const bool populated = ::madvise(base_.get(), capacity_, MADV_POPULATE_WRITE) == 0;
    ::madvise(base_.get(), capacity_, MADV_COLLAPSE);  // advice, as in reserve()
    return populated;
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
