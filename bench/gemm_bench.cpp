// Linear-layer microbenchmark: Tessera's packed-weight kernel against oneDNN's
// matmul on the same inputs, alternating in one process, for the layer shapes
// of the benchmark models. Prints median milliseconds, GFLOP/s and the ratio.
//
//   build/tessera_gemm_bench [--threads T] [--iters N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/gemm.h"
#include "kernels/packed_gemm.h"
#include "tessera/arena.h"
#include "tessera/threads.h"

namespace {

struct Shape {
    const char* name;
    int64_t rows, in, out;
    tessera::Epilogue epilogue;
};

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    int threads = 2, iters = 200;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
        if (!std::strcmp(argv[i], "--iters")) iters = std::atoi(argv[i + 1]);
    }
    tessera::threads_init(threads);
    using E = tessera::Epilogue;
    const std::vector<Shape> shapes = {
        {"tiny qkv", 197, 192, 576, E::none},      {"tiny proj", 197, 192, 192, E::residual},
        {"tiny fc1", 197, 192, 768, E::gelu_erf},  {"tiny fc2", 197, 768, 192, E::residual},
        {"small qkv", 197, 384, 1152, E::none},    {"small fc1", 197, 384, 1536, E::gelu_erf},
        {"small fc2", 197, 1536, 384, E::residual}, {"head", 1, 192, 1000, E::none},
        {"b16 small fc1", 16 * 197, 384, 1536, E::gelu_erf},
    };
    std::mt19937 rng(0);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    std::printf("%-14s %6s %5s %5s  %9s %9s  %8s %8s  %6s\n", "layer", "rows", "in", "out", "onednn ms", "packed ms",
                "GFLOP/s", "GFLOP/s", "ratio");
    for (const Shape& s : shapes) {
        std::vector<float> x(size_t(s.rows * s.in)), w(size_t(s.out * s.in)), b(size_t(s.out));
        for (float& v : x) v = dist(rng);
        for (float& v : w) v = dist(rng) * 0.05f;
        for (float& v : b) v = dist(rng);
        tessera::Arena packed(size_t(tessera::packed_matrix_floats(s.out, s.in)) * sizeof(float));
        float* pw = packed.alloc<float>(size_t(tessera::packed_matrix_floats(s.out, s.in)));
        tessera::pack_matrix(w.data(), s.out, s.in, pw);
        const tessera::PackedMatrix pm{pw, s.out, s.in};
        std::vector<float> y1(size_t(s.rows * s.out)), y2(y1.size());
        std::vector<double> t1, t2;
        auto now = [] { return std::chrono::steady_clock::now(); };
        for (int i = 0; i < iters + 10; ++i) {
            auto a = now();
            tessera::linear(nullptr, y1.data(), x.data(), w.data(), b.data(), s.rows, s.in, s.out, s.epilogue);
            auto m = now();
            tessera::linear_packed(nullptr, y2.data(), x.data(), pm, b.data(), s.rows, s.epilogue);
            auto e = now();
            if (i >= 10) {
                t1.push_back(std::chrono::duration<double, std::milli>(m - a).count());
                t2.push_back(std::chrono::duration<double, std::milli>(e - m).count());
            }
        }
        const double m1 = median(t1), m2 = median(t2), flop = 2.0 * double(s.rows * s.in * s.out);
        std::printf("%-14s %6lld %5lld %5lld  %9.4f %9.4f  %8.1f %8.1f  %6.3f\n", s.name, (long long)s.rows,
                    (long long)s.in, (long long)s.out, m1, m2, flop / m1 / 1e6, flop / m2 / 1e6, m2 / m1);
    }
}
