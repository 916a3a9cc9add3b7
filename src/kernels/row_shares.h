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
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "tessera/error.h"
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

// How fast each thread of a team has been finishing its rows, relative to
// the others, for splitting a region's rows so that the threads finish
// together. On the 2-core VM one vCPU ran up to ~45% behind the other for a
// minute at a time, the lead changing sides (the same register-only FMA loop
// on both); in one such phase a ViT-Tiny forward pass ran 12% faster with
// shares that follow the speeds, and in paired blocks against ONNX Runtime
// they were ahead in 6 of 8 pairs by 3-7% (docs/performance.md). Hybrid
// CPUs, whose cores differ in speed, are the same case. A thread's time runs
// from the region's start to its share's end, so a thread that starts late
// (wakes up late) is given fewer rows too. Shares stay contiguous and in
// thread order; which thread computes a row must not change its result.
//
// Off unless asked for (chosen()): every share size is a oneDNN product of
// its own (oneDNN makes a primitive per row count, ~0.7 ms and some
// allocation each), so a split that moves makes new ones in the forward pass
// until the splits a sequence length visits have all been made (~170 in 400
// EViT forward passes on the VM). With equal shares a warm forward pass
// allocates nothing.
//
// Protocol: begin() on the calling thread before the region; in the region,
// share() gives each thread its rows and finish() records when it is done;
// learn() on the calling thread after the region.
class ThreadPace {
public:
    static constexpr int max_threads = 64;

    // Whether this run asks for paced shares: TESSERA_SHARES=paced (default
    // and "equal": equal shares). Model states read it when they are set up.
    static bool chosen() {
        const char* v = std::getenv("TESSERA_SHARES");
        if (!v || !*v || std::strcmp(v, "equal") == 0) return false;
        if (std::strcmp(v, "paced") == 0) return true;
        fail("TESSERA_SHARES", std::string("expected paced or equal, got '") + v + "'");
    }

    // The rows [first, last) of thread t of a team of nt, out of `rows`:
    // shares in proportion to the threads' weights.
    void share(int64_t rows, int t, int nt, int64_t& first, int64_t& last) const {
        if (nt > max_threads) {
            first = rows * t / nt, last = rows * (t + 1) / nt;
            return;
        }
        double before = 0.0, total = 0.0;
        for (int i = 0; i < nt; ++i) {
            total += weight_[size_t(i)];
            if (i < t) before += weight_[size_t(i)];
        }
        // floor: equal weights give the equal split's shares exactly
        auto bound = [&](double cumulative) { return int64_t(double(rows) * cumulative / total); };
        first = t == 0 ? 0 : bound(before);
        last = t == nt - 1 ? rows : bound(before + weight_[size_t(t)]);
    }

    void begin() { start_ = Clock::now(); }
    void finish(int t, int64_t rows) {
        record(t, rows, std::chrono::duration<double>(Clock::now() - start_).count());
    }
    // What finish() records: thread t took `seconds` over `rows` rows.
    void record(int t, int64_t rows, double seconds) {
        if (t < 0 || t >= max_threads) return;
        slot_[size_t(t)].rows = rows;
        slot_[size_t(t)].seconds = seconds;
    }

    // Moves each thread's speed a step towards its rows per second in this
    // region relative to the team's mean (speeds stay within 1/2..2 of it).
    // A region with an idle thread, or shorter than a few microseconds
    // (timer and wake-up noise), teaches nothing. The shares' weights follow
    // the speeds in steps of 1/8, and only once a speed is a step away from
    // its weight: weights that followed every wobble made ~1000 primitives
    // in 300 EViT forward passes.
    void learn(int nt) {
        if (nt < 2 || nt > max_threads) return;
        constexpr double step = 0.2, min_seconds = 5e-6, slowest = 0.5, fastest = 2.0, grain = 1.0 / 8;
        double rate[max_threads], mean = 0.0;
        for (int t = 0; t < nt; ++t) {
            const Slot& s = slot_[size_t(t)];
            if (s.rows <= 0 || s.seconds < min_seconds) return;
            rate[t] = double(s.rows) / s.seconds;
            mean += rate[t] / nt;
        }
        double sum = 0.0;
        for (int t = 0; t < nt; ++t) {
            double& v = speed_[size_t(t)];
            v = std::clamp((1.0 - step) * v + step * rate[t] / mean, slowest, fastest);
            sum += v;
        }
        for (int t = 0; t < nt; ++t) {
            double& v = speed_[size_t(t)];
            v *= nt / sum;
            if (std::abs(v - weight_[size_t(t)]) >= grain) weight_[size_t(t)] = std::round(v / grain) * grain;
        }
    }

    double speed(int t) const { return speed_[size_t(t)]; }
    double weight(int t) const { return weight_[size_t(t)]; }
    // Sets thread t's weight (and speed) directly, e.g. to test that results
    // do not depend on the split.
    void set_weight(int t, double w) {
        if (t >= 0 && t < max_threads) speed_[size_t(t)] = weight_[size_t(t)] = w;
    }

private:
    using Clock = std::chrono::steady_clock;
    struct alignas(64) Slot {  // a cache line a thread: each writes its own
        int64_t rows = 0;
        double seconds = 0.0;
    };
    std::array<Slot, max_threads> slot_{};
    std::array<double, max_threads> speed_ = filled(1.0);   // learnt; mean 1 over the last team
    std::array<double, max_threads> weight_ = filled(1.0);  // the speeds in steps, as share() uses them
    Clock::time_point start_{};

    static std::array<double, max_threads> filled(double v) {
        std::array<double, max_threads> a;
        a.fill(v);
        return a;
    }
};

// The threads for_row_shares splits `rows` among, or 0 where it runs them
// outside a region: fewer than two threads, already inside a region, shares
// too small or too large, or too few `helpers` ledgers for a `ledger`.
inline int row_share_threads(int64_t rows, const Ledger* ledger, const std::vector<Ledger>& helpers) {
    const int threads = omp_get_max_threads();
    if (threads < 2 || omp_in_parallel()) return 0;
    const int64_t per_thread = rows / threads;
    if (per_thread < row_share_min_rows || per_thread > row_share_max_rows) return 0;
    if (ledger && helpers.size() + 1 < size_t(threads)) return 0;
    return threads;
}

// The steps of one region (run_on_threads) whose threads meet at barriers
// between them. A thread whose step throws must not leave the others waiting
// at a barrier it never reaches: once a step has thrown, every thread skips
// the steps still to come but meets every barrier, and rethrow() after the
// region throws the first exception.
class RegionSteps {
public:
    template <typename Fn>
    void run(Fn&& fn) {
        if (failed_.load(std::memory_order_relaxed)) return;
        try {
            fn();
        } catch (...) {
#pragma omp critical(tessera_region_steps)
            if (!error_) error_ = std::current_exception();
            failed_.store(true, std::memory_order_relaxed);
        }
    }
    // Every thread of the region must call it the same number of times.
    void barrier() {
#pragma omp barrier
    }
    void rethrow() const {
        if (error_) std::rethrow_exception(error_);
    }

private:
    std::atomic<bool> failed_{false};
    std::exception_ptr error_;
};

// Runs fn(first_row, rows_in_share, ledger) once per thread of one parallel
// region, the shares contiguous and covering [0, rows), or once on all rows
// outside one where shares would be too small or too large, or where a
// `ledger` is given and `helpers` (one ledger per thread beyond the first,
// e.g. a model state's) are too few. The first thread books to `ledger`, the
// others to their helpers, which `ledger` absorbs afterwards. With a `pace`
// the shares follow the threads' measured speeds (ThreadPace), else they are
// equal. An exception thrown in a share is rethrown here once the region has
// ended.
template <typename Fn>
void for_row_shares(int64_t rows, Ledger* ledger, std::vector<Ledger>& helpers, ThreadPace* pace, Fn&& fn) {
    const int threads = row_share_threads(rows, ledger, helpers);
    if (threads == 0) {
        fn(int64_t(0), rows, ledger);
        return;
    }
    if (ledger)
        for (int t = 1; t < threads; ++t) helpers[size_t(t - 1)].book_as(*ledger);
    if (pace) pace->begin();
    int team = 1;
    const std::exception_ptr error = run_on_threads(threads, [&](int t, int n) {
        int64_t first = rows * t / n, last = rows * (t + 1) / n;
        if (pace) pace->share(rows, t, n, first, last);
        fn(first, last - first, !ledger ? nullptr : t == 0 ? ledger : &helpers[size_t(t - 1)]);
        if (pace) pace->finish(t, last - first);
        if (t == 0) team = n;
    });
    if (pace) pace->learn(team);
    if (ledger)
        for (int t = 1; t < threads; ++t) ledger->absorb(helpers[size_t(t - 1)]);
    if (error) std::rethrow_exception(error);
}

// The same with equal shares.
template <typename Fn>
void for_row_shares(int64_t rows, Ledger* ledger, std::vector<Ledger>& helpers, Fn&& fn) {
    for_row_shares(rows, ledger, helpers, static_cast<ThreadPace*>(nullptr), std::forward<Fn>(fn));
}

}  // namespace tessera
