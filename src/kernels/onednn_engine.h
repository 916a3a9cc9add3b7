// The one oneDNN CPU engine every oneDNN primitive of the kernels runs on,
// and the one way they are run.
#pragma once
#include <cstddef>
#include <initializer_list>

#include <oneapi/dnnl/dnnl.hpp>

namespace tessera {

dnnl::engine& onednn_engine();

// Primitives each cache of them (gemm's, the linear layers') keeps at most;
// the least recently used beyond that are remade when asked for again.
constexpr size_t onednn_primitive_cache_capacity = 256;

// The attributes every primitive starts from: a user scratchpad, which
// onednn_execute takes from the running thread's own buffer. With oneDNN's
// own (library) scratchpad, two threads running one primitive at once (row
// shares of equal size, kernels/row_shares.h) wrote over each other's.
dnnl::primitive_attr onednn_attr();
// One argument of a primitive: its DNNL_ARG_* slot, its descriptor and the
// buffer it reads or writes this call (null: the slot is not used).
struct OnednnArg {
    int slot;
    const dnnl::memory::desc* desc;
    const void* data;
};

// Runs `primitive` on this thread's stream and waits, with this thread's
// scratchpad where it has a user one (onednn_attr). The memory objects of
// its arguments, and the argument list, are made once per thread and
// primitive (callers may run from parallel regions); a call only points them
// at its buffers and allocates nothing: creating them cost ~5 us a call, a
// tenth of a ViT-Tiny layer's smallest product. The primitive must outlive
// the call (the kernels hold theirs from a bounded cache); a new primitive
// at an address a dropped one had, with other arguments, gets new objects.
void onednn_execute(const dnnl::primitive& primitive, std::initializer_list<OnednnArg> args);

}  // namespace tessera
