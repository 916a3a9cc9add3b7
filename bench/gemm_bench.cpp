// Linear-layer microbenchmark: Tessera's packed-weight kernel against oneDNN's
// matmul on the same inputs, alternating in one process, for the layer shapes
// of the benchmark models. Prints median milliseconds, GFLOP/s and the ratio.
//
//   build/tessera_gemm_bench [--threads T] [--iters N] [--warmup W] [--dtype f32|bf16]
//                            [--shapes NAME:ROWS:IN:OUT[:EPILOGUE[:COUNT]],...] [--json]
//   build/tessera_gemm_bench --gemv-bf16 IN:OUT:COUNT [--threads T] [--iters PASSES]
//   build/tessera_gemm_bench --prefill-bf16 NAME:ROWS:IN:OUT,... [--threads T] [--iters N]
//   build/tessera_gemm_bench --peak [--threads T] [--serve]
//
// --peak measures the CPU's f32 multiply-add peak, the ceiling every rate
// above is read against: each thread runs independent register-only FMAs
// (no memory traffic) for ~0.3 s, on 256-bit registers and, where the CPU
// has AVX-512, on 512-bit ones; one thread alone, then all T at once (which
// shows whether T threads share cores). One JSON object per width:
// {peak, bits, threads, gflops_one_thread, gflops_all_threads}. With --serve,
// the widest chains on all T threads become an engine of bench/paired.py
// (one run: ~2 ms of them at full speed, {peak, bits, threads, gflop_per_run}
// first): a probe of how fast the host lets these cores run in each block.
//
// --gemv-bf16 times the decode GEMV instead (gemv_bandwidth below), against
// its widening form and a plain read of the same memory, and prints
// {gemv_gbps_best, gemv_gbps_median, widened_gbps_median, read_gbps_median,
// gemv_over_read_median, widened_over_read_median, bytes, threads, passes}.
//
// --prefill-bf16 times linear_w on bf16 weights read in place (the LLaVA
// decoder's prefill with `--dtype bf16`) as this CPU runs it ("chosen")
// against each form it can take, called directly: each 512-row panel
// converted and multiplied by oneDNN ("converted", linear_w_converted), AVX2
// panels packed on the fly in cache ("on_the_fly"), and where the build has
// them bf16 token lanes ("token_lanes") and 512-bit wide panels
// ("wide_panels", up to 512 rows), all alternating. One JSON object per
// shape: {name, rows, in, out, in_bf16 (linear_w_in_bf16), and per form
// FORM_ms, FORM_gflops, FORM_rel_diff (largest difference from the
// converted panels relative to their largest output)}.
//
// --dtype bf16 packs Tessera's weights in bf16 (a `--dtype bf16` run's
// layers); oneDNN's matmul stays f32, the peer the issue compares against.
//
// --shapes replaces the built-in list; EPILOGUE is none (default), gelu_erf
// or residual; COUNT (default 1) is how often the layer runs in one forward
// pass and weights the totals. --json prints one JSON object instead of the
// table: per layer {name, rows, in, out, count, onednn_ms, packed_ms,
// onednn_gflops, packed_gflops, chosen, chosen_gflops} and the count-weighted
// totals over the list (onednn_gflops / packed_gflops / chosen_gflops = total
// FLOP / total median time), which bench/perf_suite.py reads as the matmul
// rate on a model's shapes. "chosen" is the weights as a model on this CPU
// prepares them (plan_weights): oneDNN's reordered layout on AVX-512/AMX
// hosts ("onednn"), else the same panels ("packed").
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/gemm.h"
#include "kernels/packed_gemm.h"
#include "kernels/token_lanes.h"
#include "kernels/wide_panels.h"
#include "cli/serve.h"
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
    double chosen_ms = 0.0;  // the weights as a model on this CPU holds them (plan_weights)
    bool chosen_onednn = false;
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
    // The same weights prepared as a model on this CPU prepares them: oneDNN's
    // reordered layout on AVX-512/AMX hosts, else the same panels.
    const tessera::WeightPlan plan = tessera::plan_weights(s.out, s.in, dtype);
    tessera::Arena chosen_store(plan.bytes + 64);
    const tessera::PackedMatrix chosen = tessera::pack_weights(plan, w.data(), chosen_store.alloc_bytes(plan.bytes));
    std::vector<float> y1(size_t(s.rows * s.out)), y2(y1.size()), y3(y1.size());
    std::vector<double> t1, t2, t3;
    auto now = [] { return std::chrono::steady_clock::now(); };
    for (int i = 0; i < iters + warmup; ++i) {
        auto a = now();
        tessera::linear(nullptr, y1.data(), x.data(), w.data(), b.data(), s.rows, s.in, s.out, s.epilogue);
        auto m = now();
        tessera::linear_packed(nullptr, y2.data(), x.data(), pm, b.data(), s.rows, s.epilogue);
        auto e = now();
        tessera::linear_packed(nullptr, y3.data(), x.data(), chosen, b.data(), s.rows, s.epilogue);
        auto f = now();
        if (i >= warmup) {
            t1.push_back(std::chrono::duration<double, std::milli>(m - a).count());
            t2.push_back(std::chrono::duration<double, std::milli>(e - m).count());
            t3.push_back(std::chrono::duration<double, std::milli>(f - e).count());
        }
    }
    return {median(t1), median(t2), median(t3), plan.onednn_layout != nullptr};
}

double flop_of(const Shape& s) { return 2.0 * double(s.rows) * double(s.in) * double(s.out); }

// The decode step's product: one row of x against bf16 matrices read in
// place (linear_w's GEMV), `count` distinct [out, in] matrices so that the
// weights (about 1 GiB for 12 LLaVA-7B MLP matrices) come from memory, not
// cache. They start 16 bytes past a cache line, as tensors in a safetensors
// file usually do (8-byte steps). Three reads alternate pass by pass: the
// GEMV as the decoder runs it (scratch given: where the CPU has
// AVX512-BF16, x rounded for the bf16 dot product), the widening loop (no
// scratch), and a plain sum of the same memory's words from its first whole
// line (what the memory gives at that moment, as bench/membw reads it).
// Prints the rates and each GEMV's median ratio to the plain read over the
// passes.
uint64_t sum_words(const uint64_t* p, size_t n) {
    uint64_t s = 0;
#pragma omp parallel for simd reduction(+ : s) schedule(static)
    for (size_t i = 0; i < n; ++i) s += p[i];
    return s;
}

int gemv_bandwidth(int64_t in, int64_t out, int64_t count, int passes) {
    const size_t per = size_t(in * out);
    constexpr size_t line = 64, past_line = 16;
    std::vector<uint16_t> store(per * size_t(count) + line);
    const uintptr_t first_line = (reinterpret_cast<uintptr_t>(store.data()) + line - 1) & ~uintptr_t(line - 1);
    const std::span<uint16_t> w(reinterpret_cast<uint16_t*>(first_line + past_line), per * size_t(count));
    for (size_t i = 0; i < w.size(); ++i) w[i] = uint16_t(0x3c00 + (i & 63));  // small bf16 values
    std::vector<float> x(static_cast<size_t>(in), 0.01f), y(static_cast<size_t>(out));
    std::vector<float> scratch(static_cast<size_t>(tessera::linear_w_scratch_floats(in)));
    const double bytes = double(w.size()) * 2.0;
    auto timed = [&](const auto& fn) {
        const auto start = std::chrono::steady_clock::now();
        fn();
        return bytes / std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / 1e9;
    };
    auto gemv = [&](float* s) {
        for (int64_t m = 0; m < count; ++m) {
            const tessera::WeightRef ref{w.data() + per * size_t(m), tessera::DType::bf16, out, in};
            tessera::linear_w(nullptr, y.data(), x.data(), ref, nullptr, 1, tessera::Epilogue::none, s);
        }
    };
    uint64_t words = 0;
    std::vector<double> chosen, widened, read, chosen_rel, widened_rel;
    for (int p = 0; p < passes + 1; ++p) {  // the first pass warms up
        const double c = timed([&] { gemv(scratch.data()); });
        const double v = timed([&] { gemv(nullptr); });
        const double r = timed([&] {
            words += sum_words(reinterpret_cast<const uint64_t*>(first_line + line), (w.size() * 2 - line) / 8);
        });
        if (p == 0) continue;
        chosen.push_back(c), widened.push_back(v), read.push_back(r);
        chosen_rel.push_back(c / r), widened_rel.push_back(v / r);
    }
    auto median = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
    };
    std::printf("{\"gemv_gbps_best\":%.3f,\"gemv_gbps_median\":%.3f,\"widened_gbps_median\":%.3f,"
                "\"read_gbps_median\":%.3f,\"gemv_over_read_median\":%.3f,\"widened_over_read_median\":%.3f,"
                "\"bytes\":%.0f,\"threads\":%d,\"passes\":%d}\n",
                *std::max_element(chosen.begin(), chosen.end()), median(chosen), median(widened), median(read),
                median(chosen_rel), median(widened_rel), bytes, tessera::threads_count(), passes);
    return y[0] == y[0] && words != 1 ? 0 : 1;
}

// linear_w on bf16 weights as this CPU runs it, against each form it can
// take, called directly, all alternating.
int prefill_bf16(const std::vector<Shape>& shapes, int iters, int warmup) {
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (const Shape& s : shapes) {
        std::vector<float> x(size_t(s.rows * s.in)), b(size_t(s.out));
        std::vector<uint16_t> w(size_t(s.out * s.in));
        for (float& v : x) v = dist(rng);
        for (float& v : b) v = dist(rng);
        for (uint16_t& v : w) v = tessera::f32_to_bf16(dist(rng) * 0.05f);
        const tessera::WeightRef ref{w.data(), tessera::DType::bf16, s.out, s.in};
        std::vector<float> scratch(size_t(tessera::linear_w_scratch_floats(s.in)));
        std::vector<float> x_packed(size_t(s.rows * s.in));
        struct Form {
            const char* name;
            std::function<void(float*)> run;
            std::vector<float> y;
            std::vector<double> ms;
        };
        const auto bf16 = tessera::DType::bf16;
        std::vector<Form> forms;
        const auto add = [&](const char* name, std::function<void(float*)> run) {
            forms.push_back(Form{name, std::move(run), std::vector<float>(size_t(s.rows * s.out)), {}});
        };
        add("chosen", [&](float* y) {
            tessera::linear_w(nullptr, y, x.data(), ref, b.data(), s.rows, s.epilogue, scratch.data());
        });
        add("converted", [&](float* y) {
            tessera::linear_w_converted(nullptr, y, x.data(), ref, b.data(), s.rows, s.epilogue, scratch.data());
        });
        add("on_the_fly", [&](float* y) {
            tessera::linear_packing_on_the_fly(nullptr, y, x.data(), w.data(), bf16, s.out, s.in, b.data(), s.rows,
                                               s.epilogue);
        });
        if (tessera::token_lanes_available())
            add("token_lanes", [&](float* y) {
                tessera::linear_bf16_token_lanes(y, x.data(), w.data(), s.out, s.in, b.data(), s.rows, s.epilogue);
            });
        if (tessera::wide_panels_available() && s.rows <= tessera::linear_w_panel_rows)
            add("wide_panels", [&](float* y) {
                tessera::linear_wide_panels(y, x.data(), w.data(), bf16, s.out, s.in, b.data(), s.rows, s.epilogue,
                                            x_packed.data());
            });
        for (int i = 0; i < iters + warmup; ++i)
            for (Form& f : forms) {
                const auto a = std::chrono::steady_clock::now();
                f.run(f.y.data());
                const auto e = std::chrono::steady_clock::now();
                if (i >= warmup) f.ms.push_back(std::chrono::duration<double, std::milli>(e - a).count());
            }
        // Largest difference from the converted panels, relative to their largest output.
        const std::vector<float>& converted = forms[1].y;
        std::printf("{\"name\":\"%s\",\"rows\":%lld,\"in\":%lld,\"out\":%lld,\"in_bf16\":%s", s.name.c_str(),
                    (long long)s.rows, (long long)s.in, (long long)s.out,
                    tessera::linear_w_in_bf16(bf16, s.rows) ? "true" : "false");
        for (const Form& f : forms) {
            double worst = 0.0, scale = 0.0;
            for (size_t i = 0; i < f.y.size(); ++i) {
                worst = std::max(worst, double(std::abs(f.y[i] - converted[i])));
                scale = std::max(scale, double(std::abs(converted[i])));
            }
            const double ms = median(f.ms);
            std::printf(",\"%s_ms\":%.4f,\"%s_gflops\":%.2f,\"%s_rel_diff\":%.3g", f.name, ms, f.name,
                        flop_of(s) / ms / 1e6, f.name, worst / std::max(scale, 1e-30));
        }
        std::printf("}\n");
    }
    return 0;
}

}  // namespace

// Twelve independent accumulators hide the FMA latency (4 cycles, 2 ports
// on the CPUs this is for); returns FLOP done. The compiler cannot drop the
// chains: their sum is the function's result.
__attribute__((target("avx2,fma"))) double fma_chains_256(int64_t rounds, float* sink) {
    __m256 acc[12];
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(float(i) * 1e-3f);
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    for (int64_t r = 0; r < rounds; ++r)
        for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    __m256 total = acc[0];
    for (int i = 1; i < 12; ++i) total = _mm256_add_ps(total, acc[i]);
    _mm256_storeu_ps(sink, total);
    return double(rounds) * 12 * 8 * 2;
}

__attribute__((target("avx512f"))) double fma_chains_512(int64_t rounds, float* sink) {
    __m512 acc[12];
    for (int i = 0; i < 12; ++i) acc[i] = _mm512_set1_ps(float(i) * 1e-3f);
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    for (int64_t r = 0; r < rounds; ++r)
        for (int i = 0; i < 12; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    __m512 total = acc[0];
    for (int i = 1; i < 12; ++i) total = _mm512_add_ps(total, acc[i]);
    _mm512_storeu_ps(sink, total);
    return double(rounds) * 12 * 16 * 2;
}

// GFLOP/s of `threads` threads running the chains at once: all their FLOP
// over the region's time (the slowest thread's), best of 5 runs of ~10 ms
// after one that warms the clocks.
double fma_rate(double (*chains)(int64_t, float*), int threads) {
    float sink[16 * 64];
    const int64_t rounds = 4000000;
    double best = 0.0;
    for (int run = 0; run < 6; ++run) {
        double flop = 0.0;
        const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads) reduction(+ : flop)
        flop += chains(rounds, sink + 16 * omp_get_thread_num());
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (run > 0) best = std::max(best, flop / s / 1e9);
    }
    return best;
}

int fma_peak(int threads, bool serve) {
    struct Width {
        const char* name;
        int bits;
        double (*chains)(int64_t, float*);
        bool available;
    };
    __builtin_cpu_init();
    const Width widths[] = {{"avx2", 256, fma_chains_256, __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")},
                            {"avx512", 512, fma_chains_512, bool(__builtin_cpu_supports("avx512f"))}};
    if (serve) {
        const Width& w = widths[1].available ? widths[1] : widths[0];
        const int64_t rounds = 1000000;
        float sink[16 * 64];
        std::printf("{\"peak\":\"%s\",\"bits\":%d,\"threads\":%d,\"gflop_per_run\":%.6f}\n", w.name, w.bits,
                    threads, double(rounds) * 12 * (w.bits / 32) * 2 * threads * 1e-9);
        serve_paired_blocks([&] {
#pragma omp parallel num_threads(threads)
            w.chains(rounds, sink + 16 * omp_get_thread_num());
        });
        return 0;
    }
    for (const Width& w : widths) {
        if (!w.available) continue;
        const double one = fma_rate(w.chains, 1), all = fma_rate(w.chains, threads);
        std::printf("{\"peak\":\"%s\",\"bits\":%d,\"threads\":%d,\"gflops_one_thread\":%.1f,\"gflops_all_threads\":%.1f}\n",
                    w.name, w.bits, threads, one, all);
    }
    return 0;
}

int main(int argc, char** argv) {
    int threads = 2, iters = 200, warmup = 10;
    bool as_json = false;
    std::string shape_list;
    tessera::DType dtype = tessera::DType::f32;
    std::string gemv;     // IN:OUT:COUNT
    std::string prefill;  // NAME:ROWS:IN:OUT,...
    bool peak = false, serve = false;
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
            else if (k == "--gemv-bf16") gemv = value();
            else if (k == "--prefill-bf16") prefill = value();
            else if (k == "--peak") peak = true;
            else if (k == "--serve") serve = true;
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
    if (serve && !peak) {
        std::fprintf(stderr, "tessera_gemm_bench: --serve needs --peak\n");
        return 2;
    }
    if (peak) {
        try {
            return fma_peak(threads, serve);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "tessera_gemm_bench: %s\n", e.what());
            return 2;
        }
    }
    if (!gemv.empty()) {
        int64_t in = 0, out = 0, count = 0;
        if (std::sscanf(gemv.c_str(), "%ld:%ld:%ld", &in, &out, &count) != 3 || in < 1 || out < 1 || count < 1) {
            std::fprintf(stderr, "tessera_gemm_bench: --gemv-bf16 expects IN:OUT:COUNT, got '%s'\n", gemv.c_str());
            return 2;
        }
        tessera::threads_init(threads);
        return gemv_bandwidth(in, out, count, std::max(3, iters));
    }
    if (!prefill.empty()) {
        try {
            const std::vector<Shape> list = shapes_parse(prefill);
            tessera::threads_init(threads);
            return prefill_bf16(list, std::min(iters, 20), std::min(warmup, 2));
        } catch (const std::exception& e) {
            std::fprintf(stderr, "tessera_gemm_bench: %s\n", e.what());
            return 2;
        }
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
    double total_flop = 0, total_onednn = 0, total_packed = 0, total_chosen = 0;
    for (const Shape& s : shapes) {
        const Timing t = time_shape(s, iters, warmup, dtype, rng);
        const double flop = flop_of(s);
        total_flop += flop * double(s.count);
        total_onednn += t.onednn_ms * double(s.count);
        total_packed += t.packed_ms * double(s.count);
        total_chosen += t.chosen_ms * double(s.count);
        if (!as_json) {
            std::printf("%-14s %6lld %5lld %5lld  %9.4f %9.4f  %8.1f %8.1f  %6.3f\n", s.name.c_str(),
                        (long long)s.rows, (long long)s.in, (long long)s.out, t.onednn_ms, t.packed_ms,
                        flop / t.onednn_ms / 1e6, flop / t.packed_ms / 1e6, t.packed_ms / t.onednn_ms);
            continue;
        }
        char buf[512];
        std::snprintf(buf, sizeof buf,
                      "%s{\"name\":\"%s\",\"rows\":%lld,\"in\":%lld,\"out\":%lld,\"count\":%lld,"
                      "\"onednn_ms\":%.6f,\"packed_ms\":%.6f,\"onednn_gflops\":%.3f,\"packed_gflops\":%.3f,"
                      "\"chosen\":\"%s\",\"chosen_gflops\":%.3f}",
                      layers.empty() ? "" : ",", s.name.c_str(), (long long)s.rows, (long long)s.in,
                      (long long)s.out, (long long)s.count, t.onednn_ms, t.packed_ms, flop / t.onednn_ms / 1e6,
                      flop / t.packed_ms / 1e6, t.chosen_onednn ? "onednn" : "packed", flop / t.chosen_ms / 1e6);
        layers += buf;
    }
    if (as_json)
        std::printf("{\"dtype\":\"%s\",\"threads\":%d,\"iters\":%d,\"warmup\":%d,\"layers\":[%s],\"gflop\":%.6f,"
                    "\"onednn_ms\":%.6f,\"packed_ms\":%.6f,\"onednn_gflops\":%.3f,\"packed_gflops\":%.3f,"
                    "\"chosen_gflops\":%.3f}\n",
                    tessera::dtype_name(dtype), tessera::threads_count(), iters, warmup, layers.c_str(), total_flop / 1e9, total_onednn,
                    total_packed, total_flop / total_onednn / 1e6, total_flop / total_packed / 1e6,
                    total_flop / total_chosen / 1e6);
}
