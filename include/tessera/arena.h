// A bump allocator sized once, before the forward pass. Buffers are carved
// out at model load for the largest token count; running the model never
// allocates. Pruning lowers row counts, it does not reallocate.
#pragma once
#include <cstddef>
#include <memory>

namespace tessera {

class Arena {
public:
    Arena() = default;
    explicit Arena(size_t capacity_bytes) { reserve(capacity_bytes); }
    void reserve(size_t capacity_bytes);   // drops everything allocated so far
    // Faults every page of a large arena in now, in 2 MiB pages where the
    // kernel can form them (pages first touched while memory is short come
    // as 4 KiB ones otherwise), keeping what was written. For buffers that
    // will be filled anyway. Returns whether the pages were faulted in
    // (false: a small arena, or a kernel before 5.14).
    bool commit();

    // 64-byte aligned; throws tessera::Error when the arena is exhausted.
    void* alloc_bytes(size_t bytes);
    template <class T> T* alloc(size_t count) { return static_cast<T*>(alloc_bytes(count * sizeof(T))); }

    void reset() { used_ = 0; }
    size_t used() const { return used_; }
    size_t capacity() const { return capacity_; }

private:
    struct FreeDeleter { void operator()(void* p) const; };
    std::unique_ptr<char, FreeDeleter> base_;
    size_t capacity_ = 0;
    size_t used_ = 0;
};

}  // namespace tessera
