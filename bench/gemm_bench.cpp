// Linear-layer microbenchmark: Tessera's packed-weight kernel against oneDNN's
// matmul on the same inputs, alternating in one process, for the layer shapes
// of the benchmark models. Prints median milliseconds, GFLOP/s and the ratio.
//
//   build/tessera_gemm_bench [--threads T] [--iters N] [--warmup W] [--dtype f32|bf16]
//                            [--shapes NAME:ROWS:IN:OUT[:EPILOGUE[:COUNT]],...] [--json]
//
// --dtype bf16 packs Tessera's weights in bf16 (a `--dtype bf16` run's
// layers); oneDNN's matmul stays f32, the peer the issue compares against.
//
// --shapes replaces the built-in list; EPILOGUE is none (default), gelu_erf
// or residual; COUNT (default 1) is how often the layer runs in one forward
// pass and weights the totals. --json prints one JSON object instead of the
// table: per layer {name, rows, in, out, count, onednn_ms, packed_ms,
// onednn_gflops, packed_gflops} and the count-weighted totals over the list
// (onednn_gflops / packed_gflops = total FLOP / total median time), which
// bench/perf_suite.py reads as the matmul rate on a model's shapes.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/gemm.h"
#include "kernels/packed_gemm.h"
#include "tessera/arena.h"
#include "tessera/threads.h"

namespace {

struct Shape {
    std::string name;
    int64_t rows, in, out;
    tessera::Epilogue epilogue;
    int64_t count = 1;  // runs per forward pass
};

struct Timing {
    double onednn_ms, packed_ms;
};

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

tessera::Epilogue epilogue_parse(const std::string& s) {
    if (s == "none") return tessera::Epilogue::none;
    if (s == "gelu_erf") return tessera::Epilogue::gelu_erf;
    if (s == "residual") return tessera::Epilogue::residual;
    throw std::runtime_error("unknown epilogue '" + s + "' (none, gelu_erf or residual)");
}

int64_t positive(const std::string& s, const std::string& what) {
    char* end = nullptr;
    const long long v = std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || *end || v < 1 || v > (int64_t(1) << 31)) throw std::runtime_error(what + " '" + s + "' is not a positive integer");
    return v;
}

// "qkv:197:384:1152:none:12,fc1:197:384:1536:gelu_erf:12"
std::vector<Shape> shapes_parse(const std::string& list) {
    std::vector<Shape> out;
    std::stringstream items(list);
    std::string item;
    while (std::getline(items, item, ',')) {
        if (item.empty()) continue;
        std::vector<std::string> f;
        std::stringstream fields(item);
        std::string field;
        while (std::getline(fields, field, ':')) f.push_back(field);
        if (f.size() < 4 || f.size() > 6) throw std::runtime_error("shape '" + item + "': expected NAME:ROWS:IN:OUT[:EPILOGUE[:COUNT]]");
        Shape s{f[0], positive(f[1], "rows"), positive(f[2], "in"), positive(f[3], "out"),
                f.size() > 4 ? epilogue_parse(f[4]) : tessera::Epilogue::none};
        if (f.size() > 5) s.count = positive(f[5], "count");
        out.push_back(s);
    }
    if (out.empty()) throw std::runtime_error("--shapes is empty");
    return out;
}

// Median time of oneDNN's linear and the packed kernel on one shape, the two
// alternating call by call on the same input.
Timing time_shape(const Shape& s, int iters, int warmup, tessera::DType dtype, std::mt19937& rng) {
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    std::vector<float> x(size_t(s.rows * s.in)), w(size_t(s.out * s.in)), b(size_t(s.out));
    for (float& v : x) v = dist(rng);
    for (float& v : w) v = dist(rng) * 0.05f;
    for (float& v : b) v = dist(rng);
    const size_t elements = size_t(tessera::packed_matrix_floats(s.out, s.in));
    tessera::Arena packed(elements * sizeof(float));
    tessera::PackedMatrix pm{nullptr, s.out, s.in, dtype};
    if (dtype == tessera::DType::bf16) {
        auto* pw = packed.alloc<uint16_t>(elements);
        tessera::pack_matrix_bf16(w.data(), s.out, s.in, pw);
        pm.data = pw;
    } else {
        float* pw = packed.alloc<float>(elements);
        tessera::pack_matrix(w.data(), s.out, s.in, pw);
        pm.data = pw;
    }
    std::vector<float> y1(size_t(s.rows * s.out)), y2(y1.size());
    std::vector<double> t1, t2;
    auto now = [] { return std::chrono::steady_clock::now(); };
    for (int i = 0; i < iters + warmup; ++i) {
        auto a = now();
        tessera::linear(nullptr, y1.data(), x.data(), w.data(), b.data(), s.rows, s.in, s.out, s.epilogue);
        auto m = now();
        tessera::linear_packed(nullptr, y2.data(), x.data(), pm, b.data(), s.rows, s.epilogue);
        auto e = now();
        if (i >= warmup) {
            t1.push_back(std::chrono::duration<double, std::milli>(m - a).count());
            t2.push_back(std::chrono::duration<double, std::milli>(e - m).count());
        }
    }
    return {median(t1), median(t2)};
}

double flop_of(const Shape& s) { return 2.0 * double(s.rows) * double(s.in) * double(s.out); }

}  // namespace

int main(int argc, char** argv) {
    int threads = 2, iters = 200, warmup = 10;
    bool as_json = false;
    std::string shape_list;
    tessera::DType dtype = tessera::DType::f32;
    try {
        for (int i = 1; i < argc; ++i) {
            const std::string k = argv[i];
            auto value = [&]() -> std::string {
                if (i + 1 >= argc) throw std::runtime_error(k + " needs a value");
                return argv[++i];
            };
            if (k == "--threads") threads = int(positive(value(), "--threads"));
            else if (k == "--iters") iters = int(positive(value(), "--iters"));
            else if (k == "--warmup") warmup = std::atoi(value().c_str());
            else if (k == "--shapes") shape_list = value();
            else if (k == "--json") as_json = true;
            else if (k == "--dtype") {
                const std::string d = value();
                if (d != "f32" && d != "bf16") throw std::runtime_error("--dtype must be f32 or bf16, got '" + d + "'");
                dtype = d == "bf16" ? tessera::DType::bf16 : tessera::DType::f32;
            }
            else throw std::runtime_error("unknown argument " + k);
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tessera_gemm_bench: %s\n", e.what());
        return 2;
    }
    using E = tessera::Epilogue;
    std::vector<Shape> shapes = {
        {"tiny qkv", 197, 192, 576, E::none},      {"tiny proj", 197, 192, 192, E::residual},
        {"tiny fc1", 197, 192, 768, E::gelu_erf},  {"tiny fc2", 197, 768, 192, E::residual},
        {"small qkv", 197, 384, 1152, E::none},    {"small fc1", 197, 384, 1536, E::gelu_erf},
        {"small fc2", 197, 1536, 384, E::residual}, {"head", 1, 192, 1000, E::none},
        {"b16 small fc1", 16 * 197, 384, 1536, E::gelu_erf},
    };
    try {
        if (!shape_list.empty()) shapes = shapes_parse(shape_list);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tessera_gemm_bench: %s\n", e.what());
        return 2;
    }
    tessera::threads_init(threads);
    std::mt19937 rng(0);
    if (!as_json)
        std::printf("%-14s %6s %5s %5s  %9s %9s  %8s %8s  %6s\n", "layer", "rows", "in", "out", "onednn ms",
                    "packed ms", "GFLOP/s", "GFLOP/s", "ratio");
    std::string layers;
    double total_flop = 0, total_onednn = 0, total_packed = 0;
    for (const Shape& s : shapes) {
        const Timing t = time_shape(s, iters, warmup, dtype, rng);
        const double flop = flop_of(s);
        total_flop += flop * double(s.count);
        total_onednn += t.onednn_ms * double(s.count);
        total_packed += t.packed_ms * double(s.count);
        if (!as_json) {
            std::printf("%-14s %6lld %5lld %5lld  %9.4f %9.4f  %8.1f %8.1f  %6.3f\n", s.name.c_str(),
                        (long long)s.rows, (long long)s.in, (long long)s.out, t.onednn_ms, t.packed_ms,
                        flop / t.onednn_ms / 1e6, flop / t.packed_ms / 1e6, t.packed_ms / t.onednn_ms);
            continue;
        }
        char buf[512];
        std::snprintf(buf, sizeof buf,
                      "%s{\"name\":\"%s\",\"rows\":%lld,\"in\":%lld,\"out\":%lld,\"count\":%lld,"
                      "\"onednn_ms\":%.6f,\"packed_ms\":%.6f,\"onednn_gflops\":%.3f,\"packed_gflops\":%.3f}",
                      layers.empty() ? "" : ",", s.name.c_str(), (long long)s.rows, (long long)s.in,
                      (long long)s.out, (long long)s.count, t.onednn_ms, t.packed_ms, flop / t.onednn_ms / 1e6,
                      flop / t.packed_ms / 1e6);
        layers += buf;
    }
    if (as_json)
        std::printf("{\"dtype\":\"%s\",\"threads\":%d,\"iters\":%d,\"warmup\":%d,\"layers\":[%s],\"gflop\":%.6f,"
                    "\"onednn_ms\":%.6f,\"packed_ms\":%.6f,\"onednn_gflops\":%.3f,\"packed_gflops\":%.3f}\n",
                    tessera::dtype_name(dtype), tessera::threads_count(), iters, warmup, layers.c_str(), total_flop / 1e9, total_onednn,
                    total_packed, total_flop / total_onednn / 1e6, total_flop / total_packed / 1e6);
}
