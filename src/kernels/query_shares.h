// The parallel region both query-split forms of encoder attention run in
// (attention.cpp's oneDNN form and fused_attention.cpp): each thread on its
// own contiguous share of the query rows.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <exception>

#include "kernels/attention.h"
#include "kernels/row_shares.h"
#include "tessera/threads.h"

namespace tessera {

// Runs fn(t, nt, first, last) on every thread t of one region of nt, with
// [first, last) thread t's share of p.tokens query rows: equal, or by
// p.pace's weights (the pace then learns from the region's times). One
// thread inside another parallel region or for products too small to split,
// else as many as give shares of at least 16 rows, up to the scratch's slots.
// fn may hold worksharing loops, which every thread reaches; an exception it
// throws is rethrown once the region has ended.
template <typename Fn>
void for_query_shares(const AttentionArgs& p, Fn&& fn) {
    const int64_t n = p.tokens;
    const int slots = p.slots > 0 ? p.slots : threads_count();
    constexpr int64_t min_share_rows = 16;
    const int threads = omp_in_parallel() || p.heads * n * n * p.head_dim <= 65536
                            ? 1
                            : int(std::clamp<int64_t>(n / min_share_rows, 1, std::min(slots, threads_count())));
    if (p.pace) p.pace->begin();
    int team = 1;
    const std::exception_ptr error = run_on_threads(threads, [&](int t, int nt) {
        int64_t first = n * t / nt, last = n * (t + 1) / nt;
        if (p.pace) p.pace->share(n, t, nt, first, last);
        fn(t, nt, first, last);
        if (p.pace) p.pace->finish(t, last - first);
        if (t == 0) team = nt;
    });
    if (p.pace) p.pace->learn(team);
    if (error) std::rethrow_exception(error);
}

}  // namespace tessera
