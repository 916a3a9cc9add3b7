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
