// Memory read bandwidth: sums a large float array (1 GiB by default, far
// beyond any cache) with T OpenMP threads, each thread reading its own
// contiguous share, and reports the best and median pass. The decode step of
// a 7B decoder reads every weight once per token, so bytes per token divided
// by this figure bounds the decode rate (bench/llava_latency.py).
//
//   g++ -O3 -fopenmp -march=native bench/membw.cpp -o bench/.cache/membw
//   bench/.cache/membw [--threads 2] [--mib 1024] [--passes 10]
//
// Prints one JSON object: {"gbps_best", "gbps_median", "bytes", "threads",
// "passes", "pass_ms"} (GB = 1e9 bytes).
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

// Sum of x[0..n), n a multiple of `lanes`, split evenly across the threads.
// 64 running sums per thread (eight 8-float vectors) so that the loads, not
// the latency of one chain of vector adds, set the pace.
float sum_parallel(const float* x, long long n) {
    constexpr int lanes = 64;
    float s = 0.0f;
#pragma omp parallel reduction(+ : s)
    {
        float acc[lanes] = {};
#pragma omp for schedule(static)
        for (long long b = 0; b < n / lanes; ++b) {
            const float* p = x + b * lanes;
#pragma omp simd
            for (int j = 0; j < lanes; ++j) acc[j] += p[j];
        }
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

    std::vector<double> ms;
    float check = 0.0f;
    for (int p = 0; p < passes + 1; ++p) {  // the first pass warms up
        const double t0 = omp_get_wtime();
        check += sum_parallel(x, n);
        const double t = (omp_get_wtime() - t0) * 1e3;
        if (p > 0) ms.push_back(t);
    }
    std::free(x);
    std::sort(ms.begin(), ms.end());
    const double bytes = double(n) * sizeof(float);
    const double best = ms.front(), med = ms[ms.size() / 2];
    std::string list;
    for (double t : ms) list += (list.empty() ? "" : ",") + std::to_string(t);
    std::printf("{\"gbps_best\":%.3f,\"gbps_median\":%.3f,\"bytes\":%.0f,\"threads\":%d,\"passes\":%d,"
                "\"pass_ms\":[%s],\"checksum\":%g}\n",
                bytes / best / 1e6, bytes / med / 1e6, bytes, omp_get_max_threads(), passes, list.c_str(),
                double(check));
    return check > 0.0f ? 0 : 1;
}
