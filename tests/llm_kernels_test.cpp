// The decoder (LLaMA) and CLIP-tower kernels against naive scalar loops
// (double accumulation), plus their MAC counts in the ledger.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

#include "kernels/causal_attention.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "kernels/onednn_linear.h"
#include "kernels/token_lanes.h"
#include "kernels/wide_panels.h"
#include "tessera/tensor.h"
#include "tessera/threads.h"
#include "test_support.h"

namespace tessera {
namespace {

using test::random_values;

using test::max_abs_diff;

double sigmoid_ref(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double gelu_ref(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

TEST(LlmKernels, RmsNormMatchesNaiveAndRunsInPlace) {
    for (int64_t rows : {1, 3, 7, 33})
        for (int64_t dim : {40, 100}) {
            SCOPED_TRACE("rows " + std::to_string(rows) + " dim " + std::to_string(dim));
            auto x = random_values(size_t(rows * dim), 1, 4.0f);
            auto w = random_values(size_t(dim), 2);
            std::vector<float> y(x.size()), ref(x.size());
            for (int64_t r = 0; r < rows; ++r) {
                double sum_sq = 0;
                for (int64_t i = 0; i < dim; ++i) sum_sq += std::pow(double(x[size_t(r * dim + i)]), 2);
                const double inv = 1.0 / std::sqrt(sum_sq / double(dim) + 1e-5);
                for (int64_t i = 0; i < dim; ++i)
                    ref[size_t(r * dim + i)] = float(w[size_t(i)] * (x[size_t(r * dim + i)] * inv));
            }
            rms_norm(y.data(), x.data(), w.data(), rows, dim, 1e-5f);
            EXPECT_LT(max_abs_diff(y, ref), 2e-6f);
            rms_norm(x.data(), x.data(), w.data(), rows, dim, 1e-5f);
            EXPECT_LT(max_abs_diff(x, ref), 2e-6f);
        }
}

TEST(LlmKernels, QuickGeluMatchesNaive) {
    // 70000 values take the parallel path; the range covers both sigmoid branches and saturation.
    for (int64_t n : {1, 37, 70000}) {
        auto x = random_values(size_t(n), 3, 12.0f);
        std::vector<float> ref(x.size());
        for (size_t i = 0; i < x.size(); ++i) ref[i] = float(x[i] * sigmoid_ref(1.702 * x[i]));
        quick_gelu(x.data(), n);
        EXPECT_LT(max_abs_diff(x, ref), 4e-6f) << "n " << n;
    }
}

TEST(LlmKernels, SiluMulMatchesNaiveInPlaceAndOut) {
    // (33, 5000): in place, waves of 8 and 16 rows are large enough to run in parallel.
    const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 40}, {3, 100}, {7, 40}, {8, 100}, {33, 40}, {33, 5000}};
    for (auto [rows, inter] : shapes) {
        SCOPED_TRACE("rows " + std::to_string(rows) + " inter " + std::to_string(inter));
        auto gate_up = random_values(size_t(rows * 2 * inter), 4, 8.0f);
        std::vector<float> ref(size_t(rows * inter)), out(ref.size());
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t i = 0; i < inter; ++i) {
                const double g = gate_up[size_t(r * 2 * inter + i)], u = gate_up[size_t(r * 2 * inter + inter + i)];
                ref[size_t(r * inter + i)] = float(g * sigmoid_ref(g) * u);
            }
        silu_mul(out.data(), gate_up.data(), rows, inter);
        EXPECT_LT(max_abs_diff(out, ref), 2e-5f);
        silu_mul(gate_up.data(), gate_up.data(), rows, inter);
        gate_up.resize(ref.size());
        EXPECT_LT(max_abs_diff(gate_up, ref), 2e-5f);
    }
}

TEST(LlmKernels, SiluMulSeparateMatchesNaive) {
    for (int64_t n : {1, 37, 70000}) {  // 70000: the parallel path
        auto gate = random_values(size_t(n), 16, 8.0f), up = random_values(size_t(n), 17, 8.0f);
        std::vector<float> ref(gate.size());
        for (size_t i = 0; i < gate.size(); ++i) ref[i] = float(gate[i] * sigmoid_ref(gate[i]) * up[i]);
        silu_mul_separate(gate.data(), up.data(), n);
        EXPECT_LT(max_abs_diff(gate, ref), 2e-5f) << "n " << n;
    }
}

TEST(LlmKernels, RopeInvFreqIsTorchDefault) {
    for (int64_t head_dim : {8, 128}) {
        std::vector<float> inv(size_t(head_dim / 2));
        rope_inv_freq(inv.data(), head_dim, 10000.0);
        EXPECT_EQ(inv[0], 1.0f);
        for (int64_t i = 0; i < head_dim / 2; ++i)
            EXPECT_NEAR(inv[size_t(i)], std::pow(10000.0, -2.0 * double(i) / double(head_dim)),
                        1e-6 * inv[size_t(i)]);
    }
}

TEST(LlmKernels, RopeMatchesNaiveRotateHalf) {
    struct Case {
        int64_t rows, heads, head_dim;
        float scaling;
    };
    for (Case c : {Case{1, 4, 8, 1.0f}, Case{3, 3, 16, 1.0f}, Case{7, 2, 16, 0.75f}, Case{33, 3, 8, 1.0f}}) {
        SCOPED_TRACE("rows " + std::to_string(c.rows) + " head_dim " + std::to_string(c.head_dim));
        // Rows of a wider buffer (e.g. q of a fused qkv row): the rest must stay untouched.
        const int64_t stride = c.heads * c.head_dim + 5, half = c.head_dim / 2;
        auto x = random_values(size_t(c.rows * stride), 5);
        std::vector<int32_t> positions;
        for (int64_t r = 0; r < c.rows; ++r) positions.push_back(int32_t(5 + 3 * r));  // not from 0, gaps
        std::vector<float> inv(static_cast<size_t>(half));
        rope_inv_freq(inv.data(), c.head_dim, 500000.0);
        std::vector<float> ref = x;
        for (int64_t r = 0; r < c.rows; ++r)
            for (int64_t h = 0; h < c.heads; ++h)
                for (int64_t i = 0; i < half; ++i) {
                    const size_t at = size_t(r * stride + h * c.head_dim + i);
                    const double a = double(float(positions[size_t(r)]) * inv[size_t(i)]);  // float product, as HF
                    const double co = std::cos(a) * c.scaling, si = std::sin(a) * c.scaling;
                    ref[at] = float(x[at] * co - x[at + size_t(half)] * si);
                    ref[at + size_t(half)] = float(x[at + size_t(half)] * co + x[at] * si);
                }
        rope_apply(x.data(), c.rows, stride, c.heads, c.head_dim, positions.data(), inv.data(), c.scaling);
        EXPECT_LT(max_abs_diff(x, ref), 1e-6f);
    }
}

// ---- linear_w ---------------------------------------------------------------

struct LinearWCase {
    int64_t rows, in, out;
    DType dtype;
    bool bias;
    Epilogue epilogue;
};

std::string describe(const LinearWCase& c) {
    return std::string(dtype_name(c.dtype)) + " rows " + std::to_string(c.rows) + " in " + std::to_string(c.in) +
           " out " + std::to_string(c.out) + " epilogue " + std::to_string(int(c.epilogue));
}

TEST(LlmKernels, LinearWMatchesNaiveOverConvertedWeights) {
    // rows < 8 run the GEMV loop. On a CPU whose bf16 products pay, bf16 with
    // rows >= 8 runs the token-lanes kernel (up to 128 rows, no AMX) or
    // oneDNN's bf16 matmul; otherwise rows >= 8 run the wide panels where the
    // build has them (1050 and 600 rows: blocks of at most 512; in 1100: five
    // k-chunks, the last not a multiple of 8), else AVX2 panels packed on the
    // fly while x is at most 4 MiB (in 1100: three k-chunks), beyond that
    // converted 512-row panels (out 520: two, the second partial). out 13, 33, 37 and 40 leave partial output blocks and panels;
    // out 603 and 1001 leave rows past the GEMV's spaced blocks while its
    // loop runs in parallel; in 4113 leaves the bf16 dot product a partial
    // last vector (and x's rounding a scalar tail).
    const std::vector<LinearWCase> cases = {
        {1, 40, 13, DType::f16, true, Epilogue::none},       {1, 100, 37, DType::bf16, false, Epilogue::residual},
        {3, 100, 37, DType::f16, true, Epilogue::gelu_erf},  {3, 40, 64, DType::bf16, true, Epilogue::residual},
        {2, 100, 600, DType::bf16, true, Epilogue::gelu_erf}, {4, 40, 13, DType::f16, false, Epilogue::none},
        {5, 100, 37, DType::bf16, true, Epilogue::none},     {6, 40, 37, DType::f16, true, Epilogue::residual},
        {7, 100, 13, DType::f16, true, Epilogue::residual},  {7, 40, 37, DType::bf16, true, Epilogue::gelu_erf},
        {8, 40, 13, DType::f16, true, Epilogue::none},       {8, 100, 37, DType::bf16, true, Epilogue::gelu_erf},
        {33, 100, 600, DType::f16, true, Epilogue::residual}, {33, 40, 600, DType::bf16, false, Epilogue::gelu_erf},
        {33, 100, 37, DType::bf16, true, Epilogue::residual}, {8, 40, 13, DType::f32, true, Epilogue::residual},
        {3, 40, 13, DType::f32, true, Epilogue::gelu_erf},    {9, 1100, 40, DType::bf16, true, Epilogue::gelu_erf},
        {20, 1100, 33, DType::f16, true, Epilogue::residual}, {75, 1100, 48, DType::f16, false, Epilogue::none},
        {1050, 1000, 520, DType::bf16, true, Epilogue::residual}, {1050, 1000, 40, DType::f16, true, Epilogue::gelu_erf},
        {1, 100, 603, DType::bf16, true, Epilogue::residual},   {3, 64, 1001, DType::f16, false, Epilogue::gelu_erf},
        {600, 300, 70, DType::bf16, true, Epilogue::residual},  {16, 1100, 40, DType::bf16, true, Epilogue::none},
        {1, 4113, 41, DType::bf16, true, Epilogue::residual},   {6, 4113, 9, DType::bf16, false, Epilogue::none},
    };
    // Both forms of bf16 products of more than 128 rows where the CPU has
    // bf16 arithmetic: as chosen here, and oneDNN's bf16 matmul forced
    // (onednn_bf16_products_pay decides between it and f32 products). The
    // GEMV with scratch (bf16 weights: x rounded for the bf16 dot product
    // where the build has it) and without (the widening loop, x in f32).
    struct Run {
        LinearWCase c;
        const char* linear;
        bool scratch;
    };
    std::vector<Run> runs;
    for (const LinearWCase& c : cases) {
        runs.push_back({c, "", true});
        if (c.rows < 8) runs.push_back({c, "", false});
        if (c.dtype == DType::bf16 && c.rows > 128 && onednn_linear_chosen(DType::bf16)) runs.push_back({c, "onednn", true});
    }
    for (const auto& [c, linear, with_scratch] : runs) {
        const test::ScopedEnv forced("TESSERA_LINEAR", *linear ? linear : std::getenv("TESSERA_LINEAR"));
        SCOPED_TRACE(describe(c) + (*linear ? " TESSERA_LINEAR=onednn" : "") + (with_scratch ? "" : " no scratch"));
        auto x = random_values(size_t(c.rows * c.in), 6);
        auto w32 = random_values(size_t(c.out * c.in), 7);
        auto b = random_values(size_t(c.out), 8);
        auto y = random_values(size_t(c.rows * c.out), 9);  // residual input
        // The weights as stored, and the floats they stand for.
        std::vector<uint16_t> w16(w32.size());
        std::vector<float> w(w32.size());
        for (size_t i = 0; i < w32.size(); ++i) {
            if (c.dtype == DType::f32) {
                w[i] = w32[i];
                continue;
            }
            w16[i] = c.dtype == DType::f16 ? f32_to_f16(w32[i]) : f32_to_bf16(w32[i]);
            w[i] = c.dtype == DType::f16 ? f16_to_f32(w16[i]) : bf16_to_f32(w16[i]);
        }
        // Products in bf16 round x to bf16 too.
        auto xr = x;
        if (c.rows < 8 ? with_scratch && linear_w_gemv_in_bf16(c.dtype) : linear_w_in_bf16(c.dtype, c.rows))
            for (float& v : xr) v = bf16_to_f32(f32_to_bf16(v));
        std::vector<float> ref(y.size());
        for (int64_t r = 0; r < c.rows; ++r)
            for (int64_t o = 0; o < c.out; ++o) {
                double acc = c.bias ? b[size_t(o)] : 0.0;
                for (int64_t i = 0; i < c.in; ++i) acc += double(xr[size_t(r * c.in + i)]) * w[size_t(o * c.in + i)];
                if (c.epilogue == Epilogue::gelu_erf) acc = gelu_ref(acc);
                if (c.epilogue == Epilogue::residual) acc += y[size_t(r * c.out + o)];
                ref[size_t(r * c.out + o)] = float(acc);
            }
        WeightRef ref_w;
        ref_w.data = c.dtype == DType::f32 ? static_cast<const void*>(w.data()) : w16.data();
        ref_w.dtype = c.dtype, ref_w.out = c.out, ref_w.in = c.in;
        std::vector<float> scratch(size_t(linear_w_scratch_floats(c.in)));
        Ledger ledger;
        linear_w(&ledger, y.data(), x.data(), ref_w, c.bias ? b.data() : nullptr, c.rows, c.epilogue,
                 with_scratch ? scratch.data() : nullptr);
        EXPECT_LT(max_abs_diff(y, ref), 1e-5f * std::sqrt(float(c.in)));
        EXPECT_EQ(ledger.total(), uint64_t(c.rows * c.in * c.out));
    }
}

TEST(LlmKernels, DecodeGemvReadsWeightsAtAnyOffsetWithinACacheLine) {
    // Weights read in place start wherever the file put them (safetensors:
    // 8-byte steps); the GEMV does the elements before the first whole cache
    // line apart (gemv_head). Every 16-bit offset in a line, for widths
    // shorter than the head (20), a multiple of 32 (64: every row at the
    // same offset), and not (4113: rows at different offsets, a partial last
    // vector).
    for (const DType dtype : {DType::bf16, DType::f16})
        for (const int64_t in : {int64_t(20), int64_t(64), int64_t(4113)})
            for (const int64_t rows : {int64_t(1), int64_t(3)})
                for (const bool with_scratch : {true, false})
                    for (int offset = 0; offset < 32; ++offset) {
                        const int64_t out = 9;
                        SCOPED_TRACE(std::string(dtype == DType::bf16 ? "bf16" : "f16") + " in " +
                                     std::to_string(in) + " rows " + std::to_string(rows) + " offset " +
                                     std::to_string(offset) + (with_scratch ? "" : " no scratch"));
                        const auto x = random_values(size_t(rows * in), 26);
                        const auto w32 = random_values(size_t(out * in), 27);
                        std::vector<uint16_t> store(w32.size() + 64);
                        const uintptr_t line = (reinterpret_cast<uintptr_t>(store.data()) + 63) & ~uintptr_t(63);
                        uint16_t* w16 = reinterpret_cast<uint16_t*>(line) + offset;
                        std::vector<float> w(w32.size());
                        for (size_t i = 0; i < w32.size(); ++i) {
                            w16[i] = dtype == DType::f16 ? f32_to_f16(w32[i]) : f32_to_bf16(w32[i]);
                            w[i] = dtype == DType::f16 ? f16_to_f32(w16[i]) : bf16_to_f32(w16[i]);
                        }
                        const bool x_rounded = with_scratch && linear_w_gemv_in_bf16(dtype);
                        std::vector<float> ref(size_t(rows * out));
                        for (int64_t r = 0; r < rows; ++r)
                            for (int64_t o = 0; o < out; ++o) {
                                double acc = 0.0;
                                for (int64_t i = 0; i < in; ++i) {
                                    const float xi = x[size_t(r * in + i)];
                                    acc += double(x_rounded ? bf16_to_f32(f32_to_bf16(xi)) : xi) * w[size_t(o * in + i)];
                                }
                                ref[size_t(r * out + o)] = float(acc);
                            }
                        WeightRef ref_w;
                        ref_w.data = w16, ref_w.dtype = dtype, ref_w.out = out, ref_w.in = in;
                        std::vector<float> scratch(size_t(linear_w_scratch_floats(in)));
                        std::vector<float> y(ref.size(), std::nanf(""));
                        linear_w(nullptr, y.data(), x.data(), ref_w, nullptr, rows, Epilogue::none,
                                 with_scratch ? scratch.data() : nullptr);
                        EXPECT_LT(max_abs_diff(y, ref), 1e-5f * std::sqrt(float(in)));
                    }
}

TEST(LlmKernels, TokenLanesMatchesNaiveBf16Product) {
    if (!token_lanes_available()) GTEST_SKIP() << "this build has no AVX512-BF16 code (token_lanes.h)";
    // Chunks of 1 to 5 token vectors (rows 8, 20, 40, 64, 76), rows past one
    // chunk (81: two of 41; 200: three of 67, the last short), out not a
    // multiple of the tile's rows, and in 7000 (two k-blocks at 80 tokens,
    // the second sum started from the first's) and 102 (pairs not a multiple
    // of 16: the packing's tail).
    struct Case {
        int64_t rows, in, out;
        bool bias;
        Epilogue epilogue;
    };
    const std::vector<Case> cases = {
        {8, 100, 13, true, Epilogue::none},      {20, 102, 37, false, Epilogue::residual},
        {40, 64, 17, true, Epilogue::gelu_erf},  {64, 100, 25, true, Epilogue::residual},
        {76, 7000, 11, true, Epilogue::none},    {81, 102, 40, true, Epilogue::gelu_erf},
        {200, 7000, 6, false, Epilogue::residual}, {76, 4096, 33, true, Epilogue::residual},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE("rows " + std::to_string(c.rows) + " in " + std::to_string(c.in) + " out " + std::to_string(c.out));
        auto x = random_values(size_t(c.rows * c.in), 16);
        auto w32 = random_values(size_t(c.out * c.in), 17);
        auto b = random_values(size_t(c.out), 18);
        auto y = random_values(size_t(c.rows * c.out), 19);
        std::vector<uint16_t> w(w32.size());
        for (size_t i = 0; i < w.size(); ++i) w[i] = f32_to_bf16(w32[i]);
        std::vector<float> ref(y.size());
        for (int64_t r = 0; r < c.rows; ++r)
            for (int64_t o = 0; o < c.out; ++o) {
                double acc = c.bias ? b[size_t(o)] : 0.0;
                for (int64_t i = 0; i < c.in; ++i)
                    acc += double(bf16_to_f32(f32_to_bf16(x[size_t(r * c.in + i)]))) * bf16_to_f32(w[size_t(o * c.in + i)]);
                if (c.epilogue == Epilogue::gelu_erf) acc = gelu_ref(acc);
                if (c.epilogue == Epilogue::residual) acc += y[size_t(r * c.out + o)];
                ref[size_t(r * c.out + o)] = float(acc);
            }
        ASSERT_TRUE(linear_bf16_token_lanes(y.data(), x.data(), w.data(), c.out, c.in, c.bias ? b.data() : nullptr, c.rows,
                                            c.epilogue));
        EXPECT_LT(max_abs_diff(y, ref), 1e-5f * std::sqrt(float(c.in)));
    }
    // An odd `in` is declined, and nothing written.
    std::vector<float> x(8 * 5, 1.0f), y(8 * 3, 7.0f);
    std::vector<uint16_t> w(3 * 5, f32_to_bf16(1.0f));
    EXPECT_FALSE(linear_bf16_token_lanes(y.data(), x.data(), w.data(), 3, 5, nullptr, 8, Epilogue::none));
    EXPECT_EQ(y, std::vector<float>(8 * 3, 7.0f));
}

TEST(LlmKernels, WidePanelsMatchNaiveProduct) {
    if (!wide_panels_available()) GTEST_SKIP() << "this build has no AVX-512 code (wide_panels.h)";
    // Every tile height (rows 1-12) and splits into equal tiles (13: 7 + 6,
    // 25: three, 76: seven of 10-11); out 5, 37 and 70 leave partial 32-column
    // panels (37: a second panel of 5 columns, 70: a claim of 3 panels) and
    // 300 several claims; in 13 (shorter than one 8-element transpose), 300
    // (k-chunks of 256 and 44: partial sums carried in y) and 520.
    struct Case {
        int64_t rows, in, out;
        DType dtype;
        bool bias;
        Epilogue epilogue;
    };
    std::vector<Case> cases;
    for (int64_t rows = 1; rows <= 13; ++rows)
        cases.push_back({rows, 300, 37, rows % 2 ? DType::bf16 : DType::f16, rows % 3 != 0, Epilogue(rows % 3)});
    cases.push_back({25, 13, 5, DType::bf16, true, Epilogue::gelu_erf});
    cases.push_back({76, 520, 70, DType::f16, true, Epilogue::residual});
    cases.push_back({30, 300, 300, DType::bf16, false, Epilogue::none});
    for (const Case& c : cases) {
        SCOPED_TRACE(describe({c.rows, c.in, c.out, c.dtype, c.bias, c.epilogue}));
        auto x = random_values(size_t(c.rows * c.in), 26);
        auto w32 = random_values(size_t(c.out * c.in), 27);
        auto b = random_values(size_t(c.out), 28);
        auto y = random_values(size_t(c.rows * c.out), 29);
        const std::vector<uint16_t> w = test::sixteen_bit(w32, c.dtype);
        std::vector<float> ref(y.size());
        for (int64_t r = 0; r < c.rows; ++r)
            for (int64_t o = 0; o < c.out; ++o) {
                double acc = c.bias ? b[size_t(o)] : 0.0;
                for (int64_t i = 0; i < c.in; ++i) {
                    const uint16_t wi = w[size_t(o * c.in + i)];
                    acc += double(x[size_t(r * c.in + i)]) * (c.dtype == DType::f16 ? f16_to_f32(wi) : bf16_to_f32(wi));
                }
                if (c.epilogue == Epilogue::gelu_erf) acc = gelu_ref(acc);
                if (c.epilogue == Epilogue::residual) acc += y[size_t(r * c.out + o)];
                ref[size_t(r * c.out + o)] = float(acc);
            }
        std::vector<float> x_packed(x.size());
        ASSERT_TRUE(linear_wide_panels(y.data(), x.data(), w.data(), c.dtype, c.out, c.in, c.bias ? b.data() : nullptr,
                                       c.rows, c.epilogue, x_packed.data()));
        EXPECT_LT(max_abs_diff(y, ref), 1e-5f * std::sqrt(float(c.in)));
    }
}

// ---- causal attention ---------------------------------------------------------

struct CausalCase {
    int64_t tokens, past, q_heads, kv_heads, head_dim;
    bool key_bias;
};

// Naive GQA causal attention over all past + tokens positions' k and v
// ([positions, kv_heads * head_dim]), double accumulation.
std::vector<float> causal_attention_ref(const CausalCase& c, const std::vector<float>& q, int64_t q_stride,
                                        const std::vector<float>& k, const std::vector<float>& v,
                                        const float* key_bias, double scale) {
    const int64_t d = c.head_dim, kv_row = c.kv_heads * d, group = c.q_heads / c.kv_heads;
    std::vector<float> out(size_t(c.tokens * c.q_heads * d));
    for (int64_t h = 0; h < c.q_heads; ++h)
        for (int64_t t = 0; t < c.tokens; ++t) {
            const int64_t n = c.past + t + 1, kvh = h / group;
            std::vector<double> s(static_cast<size_t>(n));
            double m = -1e300, sum = 0;
            for (int64_t j = 0; j < n; ++j) {
                double acc = 0;
                for (int64_t i = 0; i < d; ++i)
                    acc += double(q[size_t(t * q_stride + h * d + i)]) * k[size_t(j * kv_row + kvh * d + i)];
                s[size_t(j)] = acc * scale + (key_bias ? key_bias[j] : 0.0);
                m = std::max(m, s[size_t(j)]);
            }
            for (double& x : s) sum += x = std::exp(x - m);
            for (int64_t i = 0; i < d; ++i) {
                double acc = 0;
                for (int64_t j = 0; j < n; ++j) acc += s[size_t(j)] * v[size_t(j * kv_row + kvh * d + i)];
                out[size_t(t * c.q_heads * d + h * d + i)] = float(acc / sum);
            }
        }
    return out;
}

TEST(LlmKernels, CausalAttentionMatchesNaive) {
    // tokens 1: decoding; 1100 tokens: several query blocks; head_dim 12: the
    // scalar path; head_dim 8 the 8-lane one-row kernels, multiples of 16
    // the 512-bit ones where the build has them (128: one pass of 8 column
    // vectors, 80: 5, 272: two passes and one vector).
    const std::vector<CausalCase> cases = {
        {1, 0, 4, 2, 8, false},   {1, 5, 3, 3, 16, false}, {1, 37, 4, 2, 16, true},  {3, 5, 4, 2, 8, false},
        {7, 5, 4, 2, 16, true},   {8, 0, 3, 3, 16, false}, {33, 0, 3, 3, 8, false},  {33, 5, 4, 2, 16, true},
        {9, 5, 4, 1, 12, false},  {1100, 5, 4, 2, 16, false}, {1, 70, 4, 2, 128, true}, {3, 41, 2, 1, 80, false},
        {1, 9, 2, 2, 272, false}, {6, 20, 2, 1, 128, false},
    };
    for (const CausalCase& c : cases) {
        SCOPED_TRACE("tokens " + std::to_string(c.tokens) + " past " + std::to_string(c.past) + " heads " +
                     std::to_string(c.q_heads) + "/" + std::to_string(c.kv_heads) + " head_dim " +
                     std::to_string(c.head_dim));
        const int64_t d = c.head_dim, positions = c.past + c.tokens, capacity = positions + 3;
        const int64_t q_stride = c.q_heads * d + 7;  // q read out of a wider (fused) row
        const int64_t kv_row = c.kv_heads * d;
        auto q = random_values(size_t(c.tokens * q_stride), 10, 2.0f);
        auto k = random_values(size_t(positions * kv_row), 11, 2.0f);
        auto v = random_values(size_t(positions * kv_row), 12);
        auto bias = random_values(size_t(positions), 13);
        const float* key_bias = c.key_bias ? bias.data() : nullptr;
        const double scale = 1.0 / std::sqrt(double(d));

        // The past, then this call's keys; positions never written stay NaN and must not be read.
        std::vector<float> k_cache(size_t(c.kv_heads * capacity * d), std::numeric_limits<float>::quiet_NaN());
        std::vector<float> v_cache = k_cache;
        kv_cache_write(k_cache.data(), v_cache.data(), capacity, k.data(), v.data(), kv_row, c.past, 0, c.kv_heads, d);
        kv_cache_write(k_cache.data(), v_cache.data(), capacity, k.data() + c.past * kv_row,
                       v.data() + c.past * kv_row, kv_row, c.tokens, c.past, c.kv_heads, d);

        std::vector<float> out(size_t(c.tokens * c.q_heads * d));
        std::vector<float> scratch(size_t(causal_attention_scratch_floats(c.tokens, c.past)));
        CausalAttentionArgs args;
        args.q = q.data(), args.q_stride = q_stride;
        args.k_cache = k_cache.data(), args.v_cache = v_cache.data(), args.capacity = capacity;
        args.out = out.data();
        args.tokens = c.tokens, args.past = c.past, args.q_heads = c.q_heads, args.kv_heads = c.kv_heads;
        args.head_dim = d, args.scale = float(scale), args.scratch = scratch.data(), args.key_bias = key_bias;
        Ledger ledger;
        causal_attention(&ledger, args);

        EXPECT_LT(max_abs_diff(out, causal_attention_ref(c, q, q_stride, k, v, key_bias, scale)), 2e-6f);
        uint64_t pairs = 0;
        for (int64_t t = 0; t < c.tokens; ++t) pairs += uint64_t(c.past + t + 1);
        EXPECT_EQ(ledger.total(), 2 * pairs * uint64_t(c.q_heads * d));
    }
}

TEST(LlmKernels, KvCacheWriteLaysOutHeadsContiguously) {
    const int64_t kv_heads = 3, d = 4, capacity = 10, tokens = 2, past = 5, stride = kv_heads * d + 2;
    auto k = random_values(size_t(tokens * stride), 14), v = random_values(size_t(tokens * stride), 15);
    std::vector<float> k_cache(size_t(kv_heads * capacity * d), -7.0f), v_cache = k_cache;
    kv_cache_write(k_cache.data(), v_cache.data(), capacity, k.data(), v.data(), stride, tokens, past, kv_heads, d);
    for (int64_t h = 0; h < kv_heads; ++h)
        for (int64_t p = 0; p < capacity; ++p)
            for (int64_t i = 0; i < d; ++i) {
                const size_t at = size_t((h * capacity + p) * d + i);
                const bool written = p >= past && p < past + tokens;
                const size_t from = size_t((p - past) * stride + h * d + i);
                EXPECT_EQ(k_cache[at], written ? k[from] : -7.0f);
                EXPECT_EQ(v_cache[at], written ? v[from] : -7.0f);
            }
}

TEST(LlmKernels, CausalScratchBoundedAndSizedOnceForCapacity) {
    EXPECT_LE(causal_attention_scratch_floats(4096, 0), int64_t(threads_count()) * (1 << 18));
    for (int64_t capacity : {5, 300, 600, 3000})
        for (int64_t tokens = 1; tokens <= capacity; tokens += std::max<int64_t>(1, capacity / 37))
            for (int64_t past = 0; past + tokens <= capacity; past += std::max<int64_t>(1, capacity / 23))
                ASSERT_LE(causal_attention_scratch_floats(tokens, past), causal_attention_scratch_floats(capacity, 0))
                    << tokens << " " << past;
}

}  // namespace
}  // namespace tessera
