// Memory read bandwidth: sums a large float array (1 GiB by default, far
// beyond any cache) with T OpenMP threads, each thread reading its own
// contiguous share as 1, 2, 4 or 8 concurrent streams, over the whole array
// or window by window (64 MiB), and reports the best and median pass of the
// fastest pattern. The decode step of a 7B decoder reads every weight once
// per token, so bytes per token divided by this figure bounds the decode
// rate (bench/llava_latency.py).
//
//   g++ -O3 -fopenmp -march=native bench/membw.cpp -o bench/.cache/membw
//   bench/.cache/membw [--threads 2] [--mib 1024] [--passes 10] [--file PATH ...]
//
// --file (repeatable) reads the given files instead, mapped as Tessera maps
// weights (read-only, MADV_HUGEPAGE), their words summed as integers: the
// memory a decoder's weights occupy. On the 2-core Zen 5 VM this read 10-30%
// below a fresh buffer measured just before, and both moved by tens of
// percent within minutes (fresh buffers: 37-83 GB/s within an hour). The
// decoder's GEMV, whose pattern differs, has read those pages faster than
// this does: the figure describes the placement, it is not a bound.
//
// Prints one JSON object: {"gbps_best", "gbps_median", "bytes", "threads",
// "passes", "streams" (the fastest pattern: a stream count per thread, "w"
// when read in 64 MiB windows), "gbps_best_by_streams", "pass_ms"} (GB = 1e9
// bytes).
#include <fcntl.h>
#include <omp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <iterator>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

namespace {

// Sum of x[0..n), n a multiple of `lanes` * `streams`, split evenly across
// the threads. Each thread reads its share as `streams` equal parts at once
// (a decoder GEMV reads several weight rows side by side, and the hardware
// prefetchers reach a different rate with several streams than with one);
// 64 running sums per stream step so that the loads, not the latency of one
// chain of vector adds, set the pace.
template <typename T>
T sum_parallel(const T* x, long long n, int streams) {
    constexpr int lanes = 64;
    T s = 0;
#pragma omp parallel reduction(+ : s)
    {
        const long long t = omp_get_thread_num(), nt = omp_get_num_threads();
        const long long blocks = n / lanes, b0 = blocks * t / nt, b1 = blocks * (t + 1) / nt;
        const long long per_stream = (b1 - b0) / streams;
        T acc[lanes] = {};
        for (long long b = 0; b < per_stream; ++b)
            for (int k = 0; k < streams; ++k) {
                const T* p = x + (b0 + k * per_stream + b) * lanes;
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
    std::vector<std::string> files;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string k = argv[i];
        if (k == "--threads") threads = std::atoi(argv[i + 1]);
        else if (k == "--passes") passes = std::atoi(argv[i + 1]);
        else if (k == "--mib") mib = std::atoll(argv[i + 1]);
        else if (k == "--file") files.push_back(argv[i + 1]);
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
    // What one pass reads: the fresh buffer (floats), or the files (32-bit words).
    std::vector<std::pair<const float*, long long>> buffers;
    std::vector<std::pair<const uint32_t*, long long>> mapped;
    float* x = nullptr;
    if (files.empty()) {
        const long long n = mib * 1024 * 1024 / static_cast<long long>(sizeof(float));
        x = static_cast<float*>(std::aligned_alloc(64, size_t(n) * sizeof(float)));
        if (!x) {
            std::fprintf(stderr, "membw: cannot allocate %lld MiB\n", mib);
            return 1;
        }
        // First touch by the thread that later reads each part (same static split).
#pragma omp parallel for schedule(static)
        for (long long b = 0; b < n / 64; ++b)
            for (int j = 0; j < 64; ++j) x[b * 64 + j] = 1.0f;
        buffers.emplace_back(x, n);
    }
    for (const std::string& f : files) {
        const int fd = ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
        struct stat st {};
        if (fd < 0 || ::fstat(fd, &st) != 0 || st.st_size < 4) {
            std::fprintf(stderr, "membw: %s: cannot open or too short\n", f.c_str());
            return 1;
        }
        void* p = ::mmap(nullptr, size_t(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
        ::close(fd);
        if (p == MAP_FAILED) {
            std::fprintf(stderr, "membw: %s: cannot mmap\n", f.c_str());
            return 1;
        }
        ::madvise(p, size_t(st.st_size), MADV_HUGEPAGE);
        mapped.emplace_back(static_cast<const uint32_t*>(p), (st.st_size / 4) / 64 * 64);
    }
    double total_words = 0;
    for (const auto& b : buffers) total_words += double(b.second);
    for (const auto& m : mapped) total_words += double(m.second);

    // Every access pattern in turn, pass by pass; the figures are those of
    // the fastest (the machine's read bandwidth is the best any pattern
    // reaches). A pattern is a stream count per thread over the whole data,
    // or over windows of 64 MiB one after another, as a decoder's GEMV reads
    // one matrix after another (on a VM's page-cache pages the windowed
    // patterns have read faster).
    struct Pattern {
        int streams;
        long long window_words;  // 0: the whole of each buffer or file
        std::string name;
    };
    const long long window = (64ll << 20) / 4;
    const std::vector<Pattern> patterns = {{1, 0, "1"},      {2, 0, "2"},      {4, 0, "4"},
                                           {8, 0, "8"},      {4, window, "4w"}, {8, window, "8w"}};
    auto read_windows = [](const auto* data, long long n, const Pattern& pat) {
        using T = std::remove_cv_t<std::remove_pointer_t<decltype(data)>>;
        T s = 0;
        const long long w = pat.window_words ? pat.window_words : n;
        for (long long at = 0; at < n; at += w) s += sum_parallel(data + at, std::min(w, n - at), pat.streams);
        return s;
    };
    std::vector<std::vector<double>> ms(patterns.size());
    float check = 0.0f;
    for (int p = 0; p < passes + 1; ++p)  // the first pass warms up (and maps the files' pages)
        for (size_t s = 0; s < patterns.size(); ++s) {
            const double t0 = omp_get_wtime();
            for (const auto& b : buffers) check += read_windows(b.first, b.second, patterns[s]);
            for (const auto& m : mapped) check += float(read_windows(m.first, m.second, patterns[s]) & 1);
            const double t = (omp_get_wtime() - t0) * 1e3;
            if (p > 0) ms[s].push_back(t);
        }
    std::free(x);
    size_t fastest = 0;
    for (size_t s = 0; s < ms.size(); ++s) {
        std::sort(ms[s].begin(), ms[s].end());
        if (ms[s].front() < ms[fastest].front()) fastest = s;
    }
    const double bytes = total_words * 4;
    const double best = ms[fastest].front(), med = ms[fastest][ms[fastest].size() / 2];
    std::string list, per_streams;
    for (double t : ms[fastest]) list += (list.empty() ? "" : ",") + std::to_string(t);
    for (size_t s = 0; s < ms.size(); ++s)
        per_streams += (s ? "," : "") + std::string("\"") + patterns[s].name + "\":" +
                       std::to_string(bytes / ms[s].front() / 1e6);
    std::printf("{\"gbps_best\":%.3f,\"gbps_median\":%.3f,\"bytes\":%.0f,\"threads\":%d,\"passes\":%d,"
                "\"streams\":\"%s\",\"gbps_best_by_streams\":{%s},\"pass_ms\":[%s],\"checksum\":%g}\n",
                bytes / best / 1e6, bytes / med / 1e6, bytes, omp_get_max_threads(), passes, patterns[fastest].name.c_str(),
                per_streams.c_str(), list.c_str(), double(check));
    return files.empty() && !(check > 0.0f) ? 1 : 0;
}
