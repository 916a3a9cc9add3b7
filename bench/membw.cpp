// Memory read bandwidth: sums a large float array (1 GiB by default, far
// beyond any cache) with T OpenMP threads, each thread reading its own
// contiguous share as 1, 2, 4 or 8 concurrent streams, and reports the best
// and median pass of the fastest stream count. The decode step of
// a 7B decoder reads every weight once per token, so bytes per token divided
// by this figure bounds the decode rate (bench/llava_latency.py).
//
//   g++ -O3 -fopenmp -march=native bench/membw.cpp -o bench/.cache/membw
//   bench/.cache/membw [--threads 2] [--mib 1024] [--passes 10]
//
// Prints one JSON object: {"gbps_best", "gbps_median", "bytes", "threads",
// "passes", "streams" (the fastest count), "gbps_best_by_streams", "pass_ms"}
// (GB = 1e9 bytes).
#include <omp.h>

#include <algorithm>
#include <iterator>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

// Sum of x[0..n), n a multiple of `lanes` * `streams`, split evenly across
// the threads. Each thread reads its share as `streams` equal parts at once
// (a decoder GEMV reads several weight rows side by side, and the hardware
// prefetchers reach a different rate with several streams than with one);
// 64 running sums per stream step so that the loads, not the latency of one
// chain of vector adds, set the pace.
float sum_parallel(const float* x, long long n, int streams) {
    constexpr int lanes = 64;
    float s = 0.0f;
#pragma omp parallel reduction(+ : s)
    {
        const long long t = omp_get_thread_num(), nt = omp_get_num_threads();
        const long long blocks = n / lanes, b0 = blocks * t / nt, b1 = blocks * (t + 1) / nt;
        const long long per_stream = (b1 - b0) / streams;
        float acc[lanes] = {};
        for (long long b = 0; b < per_stream; ++b)
            for (int k = 0; k < streams; ++k) {
                const float* p = x + (b0 + k * per_stream + b) * lanes;
#pragma omp simd
                for (int j = 0; j < lanes; ++j) acc[j] += p[j];
            }
        for (long long b = b0 + per_stream * streams; b < b1; ++b)  // the share's remainder
            for (int j = 0; j < lanes; ++j) acc[j] += x[b * lanes + j];
        for (int j = 0; j < lanes; ++j) s += acc[j];
    }
    return s;
}

}  // namespace

int main(int argc, char** argv) {
    int threads = 2, passes = 10;
    long long mib = 1024;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string k = argv[i];
        if (k == "--threads") threads = std::atoi(argv[i + 1]);
        else if (k == "--passes") passes = std::atoi(argv[i + 1]);
        else if (k == "--mib") mib = std::atoll(argv[i + 1]);
        else {
            std::fprintf(stderr, "membw: unknown argument %s\n", k.c_str());
            return 2;
        }
    }
    if (threads < 1 || passes < 1 || mib < 1) {
        std::fprintf(stderr, "membw: --threads, --passes and --mib must be positive\n");
        return 2;
    }
    omp_set_num_threads(threads);
    const long long n = mib * 1024 * 1024 / static_cast<long long>(sizeof(float));
    float* x = static_cast<float*>(std::aligned_alloc(64, size_t(n) * sizeof(float)));
    if (!x) {
        std::fprintf(stderr, "membw: cannot allocate %lld MiB\n", mib);
        return 1;
    }
    // First touch by the thread that later reads each part (same static split).
#pragma omp parallel for schedule(static)
    for (long long b = 0; b < n / 64; ++b)
        for (int j = 0; j < 64; ++j) x[b * 64 + j] = 1.0f;

    // Every stream count in turn, pass by pass; the figures are those of the
    // fastest stream count (the machine's read bandwidth is the best any
    // access pattern reaches).
    const int stream_counts[] = {1, 2, 4, 8};
    std::vector<std::vector<double>> ms(std::size(stream_counts));
    float check = 0.0f;
    for (int p = 0; p < passes + 1; ++p)  // the first pass warms up
        for (size_t s = 0; s < std::size(stream_counts); ++s) {
            const double t0 = omp_get_wtime();
            check += sum_parallel(x, n, stream_counts[s]);
            const double t = (omp_get_wtime() - t0) * 1e3;
            if (p > 0) ms[s].push_back(t);
        }
    std::free(x);
    size_t fastest = 0;
    for (size_t s = 0; s < ms.size(); ++s) {
        std::sort(ms[s].begin(), ms[s].end());
        if (ms[s].front() < ms[fastest].front()) fastest = s;
    }
    const double bytes = double(n) * sizeof(float);
    const double best = ms[fastest].front(), med = ms[fastest][ms[fastest].size() / 2];
    std::string list, per_streams;
    for (double t : ms[fastest]) list += (list.empty() ? "" : ",") + std::to_string(t);
    for (size_t s = 0; s < ms.size(); ++s)
        per_streams += (s ? "," : "") + std::string("\"") + std::to_string(stream_counts[s]) +
                       "\":" + std::to_string(bytes / ms[s].front() / 1e6);
    std::printf("{\"gbps_best\":%.3f,\"gbps_median\":%.3f,\"bytes\":%.0f,\"threads\":%d,\"passes\":%d,"
                "\"streams\":%d,\"gbps_best_by_streams\":{%s},\"pass_ms\":[%s],\"checksum\":%g}\n",
                bytes / best / 1e6, bytes / med / 1e6, bytes, omp_get_max_threads(), passes, stream_counts[fastest],
                per_streams.c_str(), list.c_str(), double(check));
    return check > 0.0f ? 0 : 1;
}
