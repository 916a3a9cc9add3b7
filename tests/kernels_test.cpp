// Each kernel against a naive scalar loop (double accumulation), plus its
// MAC count in the ledger.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

#include "kernels/attention.h"
#include "kernels/fused_attention.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "kernels/onednn_engine.h"
#include "kernels/onednn_linear.h"
#include "kernels/packed_gemm.h"
#include "kernels/simd_math.h"
#include "tessera/arena.h"
#include "tessera/error.h"
#include "tessera/threads.h"
#include "test_support.h"

namespace tessera {
namespace {

using test::random_values;

using test::max_abs_diff;

double gelu_ref(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

struct LinearCase {
    int64_t rows, in, out;
    bool bias;
    Epilogue epilogue;
};

class LinearTest : public ::testing::TestWithParam<LinearCase> {};

TEST_P(LinearTest, MatchesNaiveLoop) {
    const LinearCase p = GetParam();
    auto x = random_values(size_t(p.rows * p.in), 1);
    auto w = random_values(size_t(p.out * p.in), 2);
    auto b = random_values(size_t(p.out), 3);
    auto y = random_values(size_t(p.rows * p.out), 4);  // residual input
    std::vector<float> ref(y.size());
    for (int64_t r = 0; r < p.rows; ++r)
        for (int64_t o = 0; o < p.out; ++o) {
            double acc = p.bias ? b[size_t(o)] : 0.0;
            for (int64_t i = 0; i < p.in; ++i) acc += double(x[size_t(r * p.in + i)]) * w[size_t(o * p.in + i)];
            if (p.epilogue == Epilogue::gelu_erf) acc = gelu_ref(acc);
            if (p.epilogue == Epilogue::residual) acc += y[size_t(r * p.out + o)];
            ref[size_t(r * p.out + o)] = float(acc);
        }
    Ledger ledger;
    linear(&ledger, y.data(), x.data(), w.data(), p.bias ? b.data() : nullptr, p.rows, p.in, p.out, p.epilogue);
    EXPECT_LT(max_abs_diff(y, ref), 1e-4f * std::sqrt(float(p.in)));
    EXPECT_EQ(ledger.total(), uint64_t(p.rows * p.in * p.out));
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearTest,
                         ::testing::Values(LinearCase{1, 1, 1, true, Epilogue::none},
                                           LinearCase{197, 192, 576, true, Epilogue::none},
                                           LinearCase{197, 192, 768, true, Epilogue::gelu_erf},
                                           LinearCase{197, 768, 192, true, Epilogue::residual},
                                           LinearCase{3, 17, 5, false, Epilogue::none},
                                           LinearCase{65, 33, 129, false, Epilogue::residual}));

TEST(Arena, LargeArenasStartAndEndOnHugePageBoundaries) {
    // From 4 MiB an arena is 2 MiB aligned and rounded up to whole 2 MiB
    // pages (advised as huge pages); smaller ones to 64 bytes. Either way
    // all of the capacity can be handed out, and not one byte more.
    constexpr size_t huge = size_t(2) << 20;
    for (const auto& [asked, capacity] : std::vector<std::pair<size_t, size_t>>{
             {1000, 1024}, {(size_t(4) << 20) - 64, (size_t(4) << 20) - 64}, {size_t(4) << 20, size_t(4) << 20},
             {(size_t(5) << 20) + 1, size_t(6) << 20}}) {
        SCOPED_TRACE(asked);
        Arena a(asked);
        EXPECT_EQ(a.capacity(), capacity);
        const auto first = reinterpret_cast<uintptr_t>(a.alloc_bytes(64));
        EXPECT_EQ(first % (capacity >= (size_t(4) << 20) ? huge : 64), 0u);
        a.alloc_bytes(capacity - 64);
        EXPECT_THROW(a.alloc_bytes(1), Error);
    }
}

TEST(Arena, CommitFaultsEveryPageInAndKeepsWhatWasWritten) {
    Arena small(size_t(1) << 20);
    EXPECT_FALSE(small.commit());  // below the huge-page size: left to fault in
    Arena a((size_t(6) << 20) + 1);
    auto* first = a.alloc<uint32_t>(1024);
    for (uint32_t i = 0; i < 1024; ++i) first[i] = i * 2654435761u;
    const bool populated = a.commit();
    if (populated) {  // every page resident before anything touches the rest
        const size_t page = size_t(::sysconf(_SC_PAGESIZE));
        std::vector<unsigned char> resident(a.capacity() / page);
        ASSERT_EQ(::mincore(first, a.capacity(), resident.data()), 0);
        EXPECT_EQ(std::count_if(resident.begin(), resident.end(), [](unsigned char r) { return r & 1; }),
                  ptrdiff_t(resident.size()));
    }
    for (uint32_t i = 0; i < 1024; ++i) ASSERT_EQ(first[i], i * 2654435761u) << i;
    const size_t rest = a.capacity() - a.used();
    const auto* tail = static_cast<const unsigned char*>(a.alloc_bytes(rest));
    EXPECT_EQ(std::count(tail, tail + rest, 0), ptrdiff_t(rest));  // fresh pages read as zero
    if (!populated) GTEST_SKIP() << "this kernel has no MADV_POPULATE_WRITE (Linux 5.14): residency not checked";
}

// The packed kernel against a double-precision loop: f32 and bf16 panels,
// every epilogue, widths that are not multiples of 16, row counts around the
// 6-row tile, and inner sizes that take one pass (<= 768) or several k-chunks
// (last one partial). The bf16 reference multiplies the same rounded weights,
// so both must match to f32 accumulation error.
TEST(PackedLinear, MatchesNaiveForEveryEpilogueWidthAndChunking) {
    struct Shape { int64_t rows, in, out; };
    for (const DType dtype : {DType::f32, DType::bf16})
        for (const Shape sh : {Shape{1, 769, 16}, Shape{7, 1300, 40}, Shape{13, 200, 17}, Shape{6, 768, 33}}) {
            const auto x = random_values(size_t(sh.rows * sh.in), 21), b = random_values(size_t(sh.out), 23),
                       residual = random_values(size_t(sh.rows * sh.out), 24);
            auto w = random_values(size_t(sh.out * sh.in), 22, 0.1f);
            std::vector<float> packed(size_t(packed_matrix_floats(sh.out, sh.in)));
            std::vector<uint16_t> packed16(packed.size());
            if (dtype == DType::bf16) {
                pack_matrix_bf16(w.data(), sh.out, sh.in, packed16.data());
                for (float& v : w) v = bf16_to_f32(f32_to_bf16(v));
            } else {
                pack_matrix(w.data(), sh.out, sh.in, packed.data());
            }
            const PackedMatrix pm{dtype == DType::bf16 ? static_cast<const void*>(packed16.data()) : packed.data(),
                                  sh.out, sh.in, dtype};
            for (Epilogue e : {Epilogue::none, Epilogue::gelu_erf, Epilogue::residual}) {
                std::vector<float> y = e == Epilogue::residual ? residual : std::vector<float>(residual.size(), 0.0f);
                Ledger ledger;
                linear_packed(&ledger, y.data(), x.data(), pm, b.data(), sh.rows, e);
                EXPECT_EQ(ledger.total(), uint64_t(sh.rows * sh.in * sh.out));
                double worst = 0.0;
                for (int64_t r = 0; r < sh.rows; ++r)
                    for (int64_t o = 0; o < sh.out; ++o) {
                        double v = b[size_t(o)];
                        for (int64_t i = 0; i < sh.in; ++i)
                            v += double(x[size_t(r * sh.in + i)]) * w[size_t(o * sh.in + i)];
                        if (e == Epilogue::gelu_erf) v = 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
                        if (e == Epilogue::residual) v += residual[size_t(r * sh.out + o)];
                        worst = std::max(worst, std::abs(v - y[size_t(r * sh.out + o)]));
                    }
                EXPECT_LT(worst, 2e-4) << dtype_name(dtype) << " " << sh.rows << "x" << sh.in << "x" << sh.out
                                       << " epilogue " << int(e);
            }
        }
}

// Weights reordered for oneDNN (the path AVX-512 hosts take; forced here
// with TESSERA_LINEAR=onednn) give the products the panels give. f32 must
// reorder on any x86 CPU; bf16 falls back to panels where oneDNN has no bf16
// matmul (AVX2), and then must still be right.
TEST(PackedLinear, OnednnLayoutMatchesNaiveForEveryEpilogue) {
    const test::ScopedEnv onednn("TESSERA_LINEAR", "onednn");
    const int64_t in = 200, out = 40;
    const int saved_threads = threads_count();
    // Row counts and threads that oneDNN splits differently (13 rows on one
    // thread; 97 on 3: uneven blocks; ViT's 197 on 2 and 3).
    for (const auto& [rows, threads] : {std::pair<int64_t, int>{13, 1}, {13, 2}, {97, 3}, {197, 2}, {197, 3}}) {
        for (const DType dtype : {DType::f32, DType::bf16}) {
            SCOPED_TRACE(std::to_string(rows) + " rows on " + std::to_string(threads) + " threads");
            threads_init(threads);
            const auto x = random_values(size_t(rows * in), 31), b = random_values(size_t(out), 33),
                       residual = random_values(size_t(rows * out), 34);
            auto w = random_values(size_t(out * in), 32, 0.1f);
            const WeightPlan plan = plan_weights(out, in, dtype);
            if (dtype == DType::f32) {
                EXPECT_NE(plan.onednn_layout, nullptr) << "oneDNN has an f32 matmul everywhere";
            }
            Arena arena(plan.bytes + 64);
            const PackedMatrix m = pack_weights(plan, w.data(), arena.alloc_bytes(plan.bytes));
            EXPECT_EQ(m.onednn_layout, plan.onednn_layout);
            // oneDNN's bf16 matmul also rounds x to bf16: compare against rounded inputs.
            auto xr = x;
            if (dtype == DType::bf16) {
                for (float& v : w) v = bf16_to_f32(f32_to_bf16(v));
                if (plan.onednn_layout)
                    for (float& v : xr) v = bf16_to_f32(f32_to_bf16(v));
            }
            for (Epilogue e : {Epilogue::none, Epilogue::gelu_erf, Epilogue::residual}) {
                std::vector<float> y = e == Epilogue::residual ? residual : std::vector<float>(residual.size(), 0.0f);
                Ledger ledger;
                linear_packed(&ledger, y.data(), x.data(), m, b.data(), rows, e);
                EXPECT_EQ(ledger.total(), uint64_t(rows * in * out));
                double worst = 0.0;
                for (int64_t r = 0; r < rows; ++r)
                    for (int64_t o = 0; o < out; ++o) {
                        double v = b[size_t(o)];
                        for (int64_t i = 0; i < in; ++i) v += double(xr[size_t(r * in + i)]) * w[size_t(o * in + i)];
                        if (e == Epilogue::gelu_erf) v = 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
                        if (e == Epilogue::residual) v += residual[size_t(r * out + o)];
                        worst = std::max(worst, std::abs(v - y[size_t(r * out + o)]));
                    }
                EXPECT_LT(worst, 2e-4) << dtype_name(dtype) << (plan.onednn_layout ? " oneDNN" : " panels") << " epilogue "
                                       << int(e);
            }
        }
    }
    threads_init(saved_threads);
}

// Where oneDNN runs f32 but its bf16 products do not pay (forced here with
// TESSERA_LINEAR=onednn-f32), bf16 weights are rounded at load and stored in
// the f32 layout: products of unrounded x with the rounded weights. With
// =onednn the same request keeps bf16 products on CPUs that have them.
TEST(PackedLinear, Bf16WeightsRunAsF32ProductsWhereBf16ProductsDoNotPay) {
    const int64_t in = 200, out = 40, rows = 13;
    const auto x = random_values(size_t(rows * in), 51), w = random_values(size_t(out * in), 52, 0.1f);
    {
        const test::ScopedEnv f32_products("TESSERA_LINEAR", "onednn-f32");
        EXPECT_FALSE(onednn_bf16_products_pay());
        const WeightPlan plan = plan_weights(out, in, DType::bf16);
        ASSERT_NE(plan.onednn_layout, nullptr);
        EXPECT_EQ(plan.dtype, DType::f32);
        EXPECT_TRUE(plan.rounded_to_bf16);
        EXPECT_EQ(plan.bytes, onednn_weights_layout(out, in, DType::f32).bytes);
        Arena arena(plan.bytes + 64);
        const PackedMatrix m = pack_weights(plan, w.data(), arena.alloc_bytes(plan.bytes));
        EXPECT_EQ(m.dtype, DType::f32);
        std::vector<float> y(size_t(rows * out));
        linear_packed(nullptr, y.data(), x.data(), m, nullptr, rows, Epilogue::none);
        double from_rounded = 0.0, from_unrounded = 0.0;
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t o = 0; o < out; ++o) {
                double rounded = 0.0, exact = 0.0;
                for (int64_t i = 0; i < in; ++i) {
                    const float wi = w[size_t(o * in + i)], xi = x[size_t(r * in + i)];
                    rounded += double(xi) * bf16_to_f32(f32_to_bf16(wi));
                    exact += double(xi) * wi;
                }
                from_rounded = std::max(from_rounded, std::abs(rounded - y[size_t(r * out + o)]));
                from_unrounded = std::max(from_unrounded, std::abs(exact - y[size_t(r * out + o)]));
            }
        EXPECT_LT(from_rounded, 1e-5) << "f32 products of unrounded x with the rounded weights";
        EXPECT_GT(from_unrounded, 1e-4) << "the weights were rounded to bf16";
    }
    const test::ScopedEnv bf16_products("TESSERA_LINEAR", "onednn");
    EXPECT_TRUE(onednn_bf16_products_pay());
    const WeightPlan plan = plan_weights(out, in, DType::bf16);
    EXPECT_FALSE(plan.rounded_to_bf16);
    EXPECT_EQ(plan.dtype, DType::bf16);
}

// bf16 packing rounds to nearest, ties to even, and keeps every column in its
// slot (a wrong slot order would still pass a test with equal weights).
TEST(PackedLinear, Bf16PackingRoundsToNearestEvenPerColumn) {
    EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
    EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3f808000u)), 0x3f80);  // tie, even stays
    EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3f818000u)), 0x3f82);  // tie, odd rounds up
    EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3f808001u)), 0x3f81);
    // Identity-like weights: output column o must read x[o] exactly.
    const int64_t n = 20;
    std::vector<float> w(static_cast<size_t>(n * n), 0.0f), x(static_cast<size_t>(n)), y(static_cast<size_t>(n));
    for (int64_t o = 0; o < n; ++o) w[size_t(o * n + o)] = 1.0f, x[size_t(o)] = float(o + 1);
    std::vector<uint16_t> packed(size_t(packed_matrix_floats(n, n)));
    pack_matrix_bf16(w.data(), n, n, packed.data());
    linear_packed(nullptr, y.data(), x.data(), PackedMatrix{packed.data(), n, n, DType::bf16}, nullptr, 1);
    for (int64_t o = 0; o < n; ++o) EXPECT_EQ(y[size_t(o)], float(o + 1)) << "column " << o;
}

TEST(Gemm, StridedBatchedWithAlphaMatchesNaive) {
    // c[h] = 0.5 * a[h] · b[h] where a and b are interleaved heads of one buffer.
    const int64_t heads = 3, m = 7, k = 4, n = 9, row = 3 * heads * k;
    auto buf = random_values(size_t(std::max(m, n) * row), 5);
    GemmDesc d;
    d.batch = heads, d.m = m, d.k = k, d.n = n, d.alpha = 0.5f;
    d.a_stride[0] = k, d.a_stride[1] = row, d.a_stride[2] = 1;
    d.b_stride[0] = k, d.b_stride[1] = 1, d.b_stride[2] = row;
    d.c_stride[0] = m * n, d.c_stride[1] = n, d.c_stride[2] = 1;
    std::vector<float> c(size_t(heads * m * n)), ref(c.size());
    const float* a = buf.data();
    const float* b = buf.data() + heads * k;
    for (int64_t h = 0; h < heads; ++h)
        for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < n; ++j) {
                double acc = 0;
                for (int64_t t = 0; t < k; ++t) acc += double(a[h * k + i * row + t]) * b[h * k + j * row + t];
                ref[size_t(h * m * n + i * n + j)] = float(0.5 * acc);
            }
    Ledger ledger;
    gemm(&ledger, d, a, b, nullptr, c.data());
    EXPECT_LT(max_abs_diff(c, ref), 1e-5f);
    EXPECT_EQ(ledger.total(), uint64_t(heads * m * k * n));
}

TEST(Gemm, PrimitivesAreCachedPerShape) {
    auto x = random_values(40 * 24, 6), w = random_values(24 * 24, 7);
    std::vector<float> y(40 * 24);
    linear(nullptr, y.data(), x.data(), w.data(), nullptr, 40, 24, 24);
    const int64_t after_first = gemm_primitives_created();
    for (int i = 0; i < 5; ++i) linear(nullptr, y.data(), x.data(), w.data(), nullptr, 40, 24, 24);
    EXPECT_EQ(gemm_primitives_created(), after_first);
    linear(nullptr, y.data(), x.data(), w.data(), nullptr, 39, 24, 24);  // new row count: one more primitive
    EXPECT_EQ(gemm_primitives_created(), after_first + 1);
}

// A run whose row counts keep changing must not keep a primitive per count:
// both caches stay within their capacity, and a product whose primitive was
// dropped (and whose address a newer one may now have, with other shapes
// bound to it) is remade and still right.
TEST(Gemm, PrimitiveCachesStayBoundedAndRemakeWhatTheyDropped) {
    const test::ScopedEnv onednn("TESSERA_LINEAR", "onednn");
    const int64_t in = 24, out = 20, most = int64_t(onednn_primitive_cache_capacity) + 40;
    const auto x = random_values(size_t(most * in), 41), w = random_values(size_t(out * in), 42),
               b = random_values(size_t(out), 43);
    std::vector<float> ref(size_t(most * out));
    for (int64_t r = 0; r < most; ++r)
        for (int64_t o = 0; o < out; ++o) {
            double acc = b[size_t(o)];
            for (int64_t i = 0; i < in; ++i) acc += double(x[size_t(r * in + i)]) * w[size_t(o * in + i)];
            ref[size_t(r * out + o)] = float(acc);
        }
    const WeightPlan plan = plan_weights(out, in, DType::f32);
    ASSERT_NE(plan.onednn_layout, nullptr);
    Arena arena(plan.bytes + 64);
    const PackedMatrix m = pack_weights(plan, w.data(), arena.alloc_bytes(plan.bytes));
    auto check = [&](int64_t rows) {
        std::vector<float> y(size_t(rows * out)), y_gemm(size_t(rows * out));
        linear_packed(nullptr, y.data(), x.data(), m, b.data(), rows);                      // the linear layers' cache
        linear(nullptr, y_gemm.data(), x.data(), w.data(), b.data(), rows, in, out);        // gemm's cache
        const std::vector<float> want(ref.begin(), ref.begin() + rows * out);
        EXPECT_LT(max_abs_diff(y, want), 1e-5f) << rows << " rows, linear layer";
        EXPECT_LT(max_abs_diff(y_gemm, want), 1e-5f) << rows << " rows, gemm";
    };
    for (int64_t rows = 1; rows <= most; ++rows) check(rows);
    EXPECT_LE(onednn_products_cached(), int64_t(onednn_primitive_cache_capacity));
    EXPECT_LE(gemm_primitives_cached(), int64_t(onednn_primitive_cache_capacity));
    const int64_t created = gemm_primitives_created();
    check(1);  // dropped long ago: made again
    EXPECT_EQ(gemm_primitives_created(), created + 1);
    check(most);  // still held
    EXPECT_EQ(gemm_primitives_created(), created + 1);
}

TEST(LayerNorm, MatchesNaive) {
    for (const int64_t dim : {192, 100, 5}) {  // 8-lane loops, with and without a tail
        const int64_t rows = 13;
        auto x = random_values(size_t(rows * dim), 8, 3.0f);
        for (size_t i = 0; i < x.size(); ++i) x[i] += 50.0f;  // a large mean must not hurt precision
        auto g = random_values(size_t(dim), 9), b = random_values(size_t(dim), 10);
        std::vector<float> y(x.size()), ref(x.size());
        for (int64_t r = 0; r < rows; ++r) {
            double mean = 0, var = 0;
            for (int64_t i = 0; i < dim; ++i) mean += x[size_t(r * dim + i)];
            mean /= dim;
            for (int64_t i = 0; i < dim; ++i) var += std::pow(x[size_t(r * dim + i)] - mean, 2);
            var /= dim;
            for (int64_t i = 0; i < dim; ++i)
                ref[size_t(r * dim + i)] = float((x[size_t(r * dim + i)] - mean) / std::sqrt(var + 1e-6) * g[size_t(i)] + b[size_t(i)]);
        }
        layer_norm(y.data(), x.data(), g.data(), b.data(), rows, dim, 1e-6f);
        EXPECT_LT(max_abs_diff(y, ref), 2e-5f);
        layer_norm(x.data(), x.data(), g.data(), b.data(), rows, dim, 1e-6f);  // in place
        EXPECT_LT(max_abs_diff(x, ref), 2e-5f);
    }
}

TEST(LayerNorm, Bf16OutputIsTheF32OutputRounded) {
    // Ties, NaN and infinity ride along: every value is f32_to_bf16 of what
    // layer_norm writes, in the 8-lane loop and its tail alike.
    for (const int64_t dim : {192, 100, 5}) {
        const int64_t rows = 7;
        auto x = random_values(size_t(rows * dim), 41, 4.0f);
        auto g = random_values(size_t(dim), 42), b = random_values(size_t(dim), 43);
        x[size_t(dim + 1)] = std::numeric_limits<float>::quiet_NaN();  // row 1 becomes NaN throughout
        g[0] = std::numeric_limits<float>::infinity();                   // column 0: +-infinity
        std::vector<float> y(x.size());
        std::vector<uint16_t> y16(x.size());
        layer_norm(y.data(), x.data(), g.data(), b.data(), rows, dim, 1e-6f);
        layer_norm_bf16(y16.data(), x.data(), g.data(), b.data(), rows, dim, 1e-6f);
        for (size_t i = 0; i < y.size(); ++i) ASSERT_EQ(y16[i], f32_to_bf16(y[i])) << "dim " << dim << " at " << i;
    }
}

// bf16 layers on oneDNN with bf16 activations in (and, for fc1, out): what a
// ViT runs on CPUs with bf16 arithmetic. Elsewhere oneDNN has no bf16 matmul.
TEST(PackedLinear, OnednnBf16ActivationsMatchNaive) {
    if (!onednn_linear_chosen(DType::bf16)) GTEST_SKIP() << "this CPU has no bf16 arithmetic for oneDNN";
    const test::ScopedEnv bf16_products("TESSERA_LINEAR", "onednn");  // whether or not they pay here
    const int64_t in = 200, out = 40;
    const int saved_threads = threads_count();
    for (const auto& [rows, threads] : {std::pair<int64_t, int>{13, 2}, {97, 3}, {197, 2}}) {
        SCOPED_TRACE(std::to_string(rows) + " rows on " + std::to_string(threads) + " threads");
        threads_init(threads);
        auto w = random_values(size_t(out * in), 44, 0.1f);
        const auto b = random_values(size_t(out), 45), residual = random_values(size_t(rows * out), 46);
        const auto xf = random_values(size_t(rows * in), 47);
        std::vector<uint16_t> x(xf.size());
        for (size_t i = 0; i < x.size(); ++i) x[i] = f32_to_bf16(xf[i]);
        const WeightPlan plan = plan_weights(out, in, DType::bf16);
        ASSERT_NE(plan.onednn_layout, nullptr);
        Arena arena(plan.bytes + 64);
        const PackedMatrix m = pack_weights(plan, w.data(), arena.alloc_bytes(plan.bytes));
        for (float& v : w) v = bf16_to_f32(f32_to_bf16(v));
        for (Epilogue e : {Epilogue::none, Epilogue::gelu_erf, Epilogue::residual})
            for (const DType y_type : {DType::f32, DType::bf16}) {
                if (e == Epilogue::residual && y_type == DType::bf16) continue;  // the residual stream stays f32
                std::vector<float> y = e == Epilogue::residual ? residual : std::vector<float>(residual.size(), 0.0f);
                std::vector<uint16_t> y16(y.size());
                Ledger ledger;
                onednn_linear_bf16_io(&ledger, y_type == DType::f32 ? static_cast<void*>(y.data()) : y16.data(), y_type,
                                      x.data(), m, b.data(), rows, e);
                EXPECT_EQ(ledger.total(), uint64_t(rows * in * out));
                for (int64_t r = 0; r < rows; ++r)
                    for (int64_t o = 0; o < out; ++o) {
                        double acc = b[size_t(o)];
                        for (int64_t i = 0; i < in; ++i) acc += double(bf16_to_f32(x[size_t(r * in + i)])) * w[size_t(o * in + i)];
                        if (e == Epilogue::gelu_erf) acc = gelu_ref(acc);
                        if (e == Epilogue::residual) acc += residual[size_t(r * out + o)];
                        const size_t k = size_t(r * out + o);
                        const double got = y_type == DType::f32 ? y[k] : bf16_to_f32(y16[k]);
                        // bf16 output: within its rounding (8 significant bits).
                        const double tol = y_type == DType::f32 ? 1e-4 : 1e-4 + std::abs(acc) / 128.0;
                        ASSERT_NEAR(got, acc, tol) << "epilogue " << int(e) << " output " << dtype_name(y_type);
                    }
            }
    }
    threads_init(saved_threads);
}

TEST(Gelu, IsExactErfForm) {
    std::vector<float> x = {-6.0f, -3.0f, -1.0f, -0.1f, 0.0f, 0.1f, 1.0f, 3.0f, 6.0f};
    std::vector<float> ref;
    for (float v : x) ref.push_back(float(gelu_ref(v)));
    gelu_erf(x.data(), int64_t(x.size()));
    EXPECT_LT(max_abs_diff(x, ref), 1e-6f);
    // tanh approximation differs by ~1e-4 at x=1: make sure that is not what runs.
    EXPECT_NEAR(ref[6], 0.8413447f, 1e-6f);
    // Long enough for every vector width and a tail.
    std::vector<float> many(1001);
    for (size_t i = 0; i < many.size(); ++i) many[i] = -6.0f + 12.0f * float(i) / 1000.0f;
    ref.clear();
    for (float v : many) ref.push_back(float(gelu_ref(v)));
    gelu_erf(many.data(), int64_t(many.size()));
    EXPECT_LT(max_abs_diff(many, ref), 1e-6f);
}

// The 512-bit GELU (wide panels' epilogue) runs the 256-bit one's operations
// lane for lane: the same bits, from -9 to 9 and at the signs' edges.
TEST(Gelu, SixteenLanesMatchEightLanesBitForBit) {
#ifdef TESSERA_SIMD_MATH_AVX512
    std::vector<float> x(1024);
    for (size_t i = 0; i < x.size(); ++i) x[i] = -9.0f + 18.0f * float(i) / float(x.size() - 1);
    x[0] = -0.0f, x[1] = 0.0f, x[2] = 1e-30f, x[3] = -1e-30f;
    for (size_t i = 0; i < x.size(); i += 16) {
        alignas(64) float wide[16], narrow[16];
        _mm512_store_ps(wide, simd::gelu_erf16(_mm512_loadu_ps(x.data() + i)));
        _mm256_store_ps(narrow, simd::gelu_erf8(_mm256_loadu_ps(x.data() + i)));
        _mm256_store_ps(narrow + 8, simd::gelu_erf8(_mm256_loadu_ps(x.data() + i + 8)));
        for (int j = 0; j < 16; ++j) {
            EXPECT_EQ(std::bit_cast<uint32_t>(wide[j]), std::bit_cast<uint32_t>(narrow[j])) << "x = " << x[i + size_t(j)];
            EXPECT_NEAR(wide[j], gelu_ref(x[i + size_t(j)]), 1e-6);
        }
    }
#else
    GTEST_SKIP() << "this build has no AVX-512 code (simd_math.h)";
#endif
}

TEST(Softmax, RowsSumToOneAndMatchNaiveWithBias) {
    // Row lengths around the 8- and 16-lane vectors: the partial last vector
    // runs masked.
    for (const int64_t n : {1, 5, 8, 13, 16, 37, 197}) {
        const int64_t rows = 4;
        auto x = random_values(size_t(rows * n), 11, 20.0f);
        auto bias = random_values(size_t(n), 12);
        std::vector<float> ref(x.size()), ref_exp(x.size());
        std::vector<double> ref_sum(size_t(rows), 0.0);
        for (int64_t r = 0; r < rows; ++r) {
            double m = -1e300;
            for (int64_t j = 0; j < n; ++j) m = std::max(m, double(x[size_t(r * n + j)]) + bias[size_t(j)]);
            for (int64_t j = 0; j < n; ++j) {
                const double e = std::exp(double(x[size_t(r * n + j)]) + bias[size_t(j)] - m);
                ref_exp[size_t(r * n + j)] = float(e);
                ref_sum[size_t(r)] += e;
            }
            for (int64_t j = 0; j < n; ++j) ref[size_t(r * n + j)] = float(ref_exp[size_t(r * n + j)] / ref_sum[size_t(r)]);
        }
        auto undivided = x, into_bf16 = x;
        softmax_rows(x.data(), rows, n, bias.data());
        EXPECT_LT(max_abs_diff(x, ref), 1e-6f) << "n " << n;
        std::vector<uint16_t> probs16(x.size());
        for (int64_t r = 0; r < rows; ++r) {
            const float sum = softmax_row_unnormalized(undivided.data() + r * n, n, bias.data());
            EXPECT_NEAR(sum, ref_sum[size_t(r)], 1e-6 * ref_sum[size_t(r)]) << "n " << n;
            // The bf16 form: the same exps, each rounded, and the same sum.
            const float sum16 = softmax_row_unnormalized_bf16(into_bf16.data() + r * n, probs16.data() + r * n, n,
                                                              bias.data());
            EXPECT_EQ(sum16, sum) << "n " << n;
        }
        EXPECT_LT(max_abs_diff(undivided, ref_exp), 1e-6f) << "n " << n;
        for (size_t i = 0; i < probs16.size(); ++i)
            ASSERT_EQ(probs16[i], f32_to_bf16(undivided[i])) << "n " << n << " at " << i;
    }
}

// Naive multi-head attention over a fused qkv buffer, double accumulation.
void attention_ref(const std::vector<float>& qkv, int64_t n, int64_t h, int64_t d, const float* key_bias,
                   std::vector<float>& out, std::vector<float>& cls) {
    const int64_t c = h * d;
    out.assign(size_t(n * c), 0.0f);
    cls.assign(size_t(h * n), 0.0f);
    std::vector<double> s(static_cast<size_t>(n));
    for (int64_t hh = 0; hh < h; ++hh)
        for (int64_t i = 0; i < n; ++i) {
            double m = -1e300, sum = 0;
            for (int64_t j = 0; j < n; ++j) {
                double acc = 0;
                for (int64_t t = 0; t < d; ++t)
                    acc += double(qkv[size_t(i * 3 * c + hh * d + t)]) * qkv[size_t(j * 3 * c + c + hh * d + t)];
                s[size_t(j)] = acc / std::sqrt(double(d)) + (key_bias ? key_bias[j] : 0.0);
                m = std::max(m, s[size_t(j)]);
            }
            for (int64_t j = 0; j < n; ++j) sum += s[size_t(j)] = std::exp(s[size_t(j)] - m);
            for (int64_t j = 0; j < n; ++j) {
                double p = s[size_t(j)] / sum;
                if (i == 0) cls[size_t(hh * n + j)] = float(p);
                for (int64_t t = 0; t < d; ++t)
                    out[size_t(i * c + hh * d + t)] += float(p * qkv[size_t(j * 3 * c + 2 * c + hh * d + t)]);
            }
        }
}

struct AttentionCase {
    int64_t tokens, heads, head_dim;
    bool key_bias;
};

class AttentionTest : public ::testing::TestWithParam<AttentionCase> {};

TEST_P(AttentionTest, MatchesNaiveAndReturnsClsRow) {
    const AttentionCase p = GetParam();
    const int64_t c = p.heads * p.head_dim;
    auto qkv = random_values(size_t(p.tokens * 3 * c), 13, 2.0f);
    auto bias = random_values(size_t(p.tokens), 14);
    std::vector<float> ref, ref_cls;
    attention_ref(qkv, p.tokens, p.heads, p.head_dim, p.key_bias ? bias.data() : nullptr, ref, ref_cls);

    // Every f32 form: the packed kernel, oneDNN's batched products, and the
    // fused AVX-512 form (what models on AVX-512/AMX CPUs run where the
    // build and the head size allow it), in the same scratch.
    enum class Form { packed, onednn, fused };
    for (const Form form : {Form::packed, Form::onednn, Form::fused}) {
        const char* name = form == Form::packed ? "packed" : form == Form::onednn ? "oneDNN" : "fused";
        if (form == Form::fused && !attention_fused_available(p.tokens, p.head_dim)) continue;
        std::vector<float> out(size_t(p.tokens * c)), cls(size_t(p.heads * p.tokens));
        std::vector<float> scratch(size_t(attention_scratch_floats(p.heads, p.tokens, p.head_dim, threads_count())));
        Ledger ledger;
        AttentionArgs args{qkv.data(), out.data(), p.tokens, p.heads, p.head_dim, 1.0f / std::sqrt(float(p.head_dim)),
                           p.key_bias ? bias.data() : nullptr, cls.data(), scratch.data()};
        args.onednn = form != Form::packed, args.fused = form == Form::fused;
        attention(&ledger, args);
        EXPECT_LT(max_abs_diff(out, ref), 1e-5f) << name;
        EXPECT_LT(max_abs_diff(cls, ref_cls), 1e-6f) << name;
        EXPECT_EQ(ledger.total(), uint64_t(2 * p.heads * p.tokens * p.tokens * p.head_dim));
        if (form == Form::packed) continue;
        // f32 products with the output rounded to bf16 (out_bf16): each
        // value within half a bf16 step (2^-9 relative) of the f32 one.
        std::vector<uint16_t> out16(out.size());
        args.out_bf16 = out16.data();
        attention(nullptr, args);
        for (size_t i = 0; i < out.size(); ++i)
            ASSERT_NEAR(bf16_to_f32(out16[i]), out[i], std::fabs(out[i]) * (1.0f / 256) + 1e-6f) << name << " at " << i;
    }

    // oneDNN's bf16 form (a bf16 run on a CPU with bf16 arithmetic): operands
    // rounded to bf16 (relative error 2^-9 each), output in f32 or rounded to
    // bf16. The bounds are ~4x the largest errors seen (0.47% and 0.54% of
    // the largest output and probability); a score or value product
    // off by one element, or an undivided row, is off by far more.
    if (!onednn_linear_chosen(DType::bf16)) return;
    auto max_abs = [](const std::vector<float>& v) {
        float m = 0.0f;
        for (float x : v) m = std::max(m, std::fabs(x));
        return m;
    };
    const float largest = max_abs(ref);
    // The fused form rounds the same operands: the same bounds.
    for (const bool fused : {false, true})
        for (const bool bf16_out : {false, true}) {
            if (fused && !attention_fused_available(p.tokens, p.head_dim, true)) continue;
            const std::string name = std::string(fused ? "fused" : "oneDNN") + (bf16_out ? ", bf16 out" : ", f32 out");
            std::vector<float> out(size_t(p.tokens * c)), cls(size_t(p.heads * p.tokens));
            std::vector<uint16_t> out16(bf16_out ? out.size() : 0);
            std::vector<float> scratch(size_t(attention_scratch_floats(p.heads, p.tokens, p.head_dim, threads_count())));
            AttentionArgs args{qkv.data(), out.data(), p.tokens, p.heads, p.head_dim, 1.0f / std::sqrt(float(p.head_dim)),
                               p.key_bias ? bias.data() : nullptr, cls.data(), scratch.data()};
            args.onednn = true, args.bf16 = true, args.fused = fused;
            if (bf16_out) args.out_bf16 = out16.data();
            attention(nullptr, args);
            if (bf16_out)
                for (size_t i = 0; i < out.size(); ++i) out[i] = bf16_to_f32(out16[i]);
            EXPECT_LT(max_abs_diff(out, ref), 0.02f * largest) << name;
            EXPECT_LT(max_abs_diff(cls, ref_cls), 0.02f * max_abs(ref_cls)) << name;
        }
}

// 577 tokens x 16 heads needs several query blocks: the full map never exists.
// The fused form's edges: 16 tokens (its least: one key vector, shares of 8
// rows), 72 (a partial last key vector and tile), head sizes 16-64.
INSTANTIATE_TEST_SUITE_P(Shapes, AttentionTest,
                         ::testing::Values(AttentionCase{1, 1, 4, false}, AttentionCase{197, 3, 64, false},
                                           AttentionCase{50, 2, 16, true}, AttentionCase{577, 16, 8, false},
                                           AttentionCase{300, 4, 32, true}, AttentionCase{16, 2, 64, false},
                                           AttentionCase{72, 3, 48, true}));

TEST(Attention, LongSequencesUseBoundedScratch) {
    // Packed form: keys (577 padded to 592) and values per head, plus one
    // 48-row block of queries and scores per thread. oneDNN form: dense keys
    // and values per head, plus per thread one 64-row block's queries,
    // scores, head outputs and score-row reciprocals (the larger of the two
    // here). Both far below the 16 x 577^2 map.
    // oneDNN's bf16 form: the same regions with keys, values and queries in
    // 2 bytes, plus the block's probabilities in bf16.
    const int64_t packed_form = 16 * (592 * 64 + 64 * 577) + 2 * 48 * (64 + 577);
    const int64_t onednn_form = 2 * 16 * 577 * 64 + 2 * 16 * 64 * (577 + 2 * 64 + 1);
    const int64_t onednn_bf16_form =
        16 * 577 * 64 + 2 * (16 * 64 * 64 / 2 + 16 * 64 * 577 * 3 / 2 + 16 * 64 * (64 + 1));
    // The fused form: per thread the head's keys transposed (577 padded to
    // 592), one 6-row tile's queries and scores, and their reciprocals; in
    // bf16 also the head's values in pairs and the tile's probabilities,
    // every operand in 2 bytes (the larger here).
    const int64_t fused_f32 = 64 * 592 + 6 * 64 + 6 * 592 + 16;
    const int64_t fused_bf16 = 64 * 592 / 2 + 64 * 592 / 2 + 6 * 64 / 2 + 6 * 592 + 6 * 592 / 2 + 16;
    const int64_t fused_form = 2 * std::max(fused_f32, fused_bf16);
    EXPECT_EQ(attention_fused_scratch_floats(16, 577, 64, 2), fused_form);
    EXPECT_EQ(attention_scratch_floats(16, 577, 64, 2),
              std::max({packed_form, onednn_form, onednn_bf16_form, fused_form}));
    EXPECT_LT(attention_scratch_floats(16, 577, 64, 2), 16 * 577 * 577 / 2);
}

}  // namespace
}  // namespace tessera
