// Row-wise sub-layers (norms, linear layers, their epilogues) of a sequence
// of a few hundred tokens, run as one parallel region in which each thread
// takes a contiguous share of the rows through all of them, instead of one
// region per kernel. On the 2-core Zen 5, ViT-Tiny's fork-joins and the
// threads' waits at them were a quarter of a forward pass's samples, and
// pruned sequences (EViT: 69-139 tokens) paid them in full while their
// products shrank. Each kernel called inside runs on its one thread (oneDNN
// and OpenMP run nested calls serially).
#pragma once
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <vector>

#include "tessera/flops.h"

namespace tessera {

// Shares of fewer rows a thread (or of more) run as separate, whole-width
// kernels instead. ViT-Tiny/S shapes: 35-99 rows a thread gained 3-9% (the
// fewer rows, the more); ViT-L at 577 tokens (288 a thread) 10%; 1576 rows a
// thread (batch 16) lost 2-5% to oneDNN's own split.
constexpr int64_t row_share_min_rows = 24;
constexpr int64_t row_share_max_rows = 512;

// Runs fn(thread, threads) on every thread of one parallel region of
// `threads` threads (on the calling thread alone when `threads` is 1). fn may
// hold worksharing loops, which every thread must reach; an exception it
// throws must not leave the region, so the first one is caught and returned
// (null when none was thrown).
template <typename Fn>
std::exception_ptr run_on_threads(int threads, Fn&& fn) {
    std::exception_ptr error;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        try {
            fn(omp_get_thread_num(), omp_get_num_threads());
        } catch (...) {
#pragma omp critical(tessera_run_on_threads)
            if (!error) error = std::current_exception();
        }
    }
    return error;
}

// Chunks of the items [0, n) for the threads of one parallel region: thread
// t first takes, in order, the chunks of its own contiguous share (a static
// split), then what is left of the other threads' shares. Where the threads
// run at different speeds (on the 2-core VM one vCPU often ran 5-10% behind
// the other), a static split leaves the faster one waiting at the region's
// end; here it takes over the slower one's last chunks, while each share is
// still read front to back. Which thread computes an item must not change its
// result. Set up with reset() before the region, for the thread count asked
// for; every thread of the region then calls take() (a smaller team still
// covers every share).
class SharedChunks {
public:
    static constexpr int max_shares = 64;

    void reset(int64_t items, int64_t chunk, int threads) {
        shares_ = std::clamp(threads, 1, max_shares);
        chunk_ = std::max<int64_t>(chunk, 1);
        for (int s = 0; s < shares_; ++s) {
            share_[s].next = items * s / shares_;
            share_[s].end = items * (s + 1) / shares_;
        }
    }

    // fn(first, last) for each chunk this thread claims.
    template <typename Fn>
    void take(int thread, Fn&& fn) {
        for (int k = 0; k < shares_; ++k) {
            Share& s = share_[(thread + k) % shares_];
            std::atomic_ref<int64_t> next(s.next);
            for (;;) {
                const int64_t first = next.fetch_add(chunk_, std::memory_order_relaxed);
                if (first >= s.end) break;
                fn(first, std::min(first + chunk_, s.end));
            }
        }
    }

private:
    struct alignas(64) Share {
        int64_t next = 0, end = 0;
    };
    Share share_[max_shares];
    int shares_ = 1;
    int64_t chunk_ = 1;
};

// Runs fn(first_row, rows_in_share, ledger) once per thread of one parallel
// region, the shares contiguous and covering [0, rows), or once on all rows
// outside one where shares would be too small or too large, or where a
// `ledger` is given and `helpers` (one ledger per thread beyond the first,
// e.g. a model state's) are too few. The first thread books to `ledger`, the
// others to their helpers, which `ledger` absorbs afterwards. An exception
// thrown in a share is rethrown here once the region has ended.
template <typename Fn>
void for_row_shares(int64_t rows, Ledger* ledger, std::vector<Ledger>& helpers, Fn&& fn) {
    const int threads = omp_get_max_threads();
    const int64_t per_thread = rows / (threads > 0 ? threads : 1);
    if (threads < 2 || omp_in_parallel() || per_thread < row_share_min_rows || per_thread > row_share_max_rows ||
        (ledger && helpers.size() + 1 < size_t(threads))) {
        fn(int64_t(0), rows, ledger);
        return;
    }
    if (ledger)
        for (int t = 1; t < threads; ++t) helpers[size_t(t - 1)].book_as(*ledger);
    const std::exception_ptr error = run_on_threads(threads, [&](int t, int n) {
        const int64_t first = rows * t / n, last = rows * (t + 1) / n;
        fn(first, last - first, !ledger ? nullptr : t == 0 ? ledger : &helpers[size_t(t - 1)]);
    });
    if (ledger)
        for (int t = 1; t < threads; ++t) ledger->absorb(helpers[size_t(t - 1)]);
    if (error) std::rethrow_exception(error);
}

}  // namespace tessera
