// Every threaded kernel gives the same answer on 1, 2 and 3 threads (3 makes
// the static splits uneven). Our own loops compute each output element on
// one thread in a fixed order, so their results must be bit-identical;
// oneDNN's GEMM (linear) may block reductions differently per thread count,
// so it gets a tolerance. The same binary, built with -DTESSERA_TSAN=ON, is the
// ThreadSanitizer run of these kernels (scripts/test.sh).
#include <gtest/gtest.h>

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <thread>
#include <vector>

#include "kernels/attention.h"
#include "kernels/fused_attention.h"
#include "kernels/causal_attention.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "kernels/onednn_engine.h"
#include "kernels/onednn_linear.h"
#include "kernels/grid_attention.h"
#include "kernels/packed_gemm.h"
#include "kernels/row_shares.h"
#include "kernels/token_lanes.h"
#include "kernels/wide_panels.h"
#include "tessera/tensor.h"
#include "tessera/threads.h"
#include "test_support.h"

namespace tessera {
namespace {

using test::max_abs_diff;
using test::random_values;

// Runs `kernel` (which fills its output from scratch) on 1, 2 and 3 threads
// and returns the three outputs.
std::vector<std::vector<float>> on_thread_counts(const std::function<std::vector<float>()>& kernel) {
    const int saved = threads_count();
    std::vector<std::vector<float>> outs;
    for (int n : {1, 2, 3}) {
        threads_init(n);
        outs.push_back(kernel());
    }
    threads_init(saved);
    return outs;
}

void expect_close(const std::vector<std::vector<float>>& outs, float tolerance) {
    for (size_t i = 1; i < outs.size(); ++i) EXPECT_LT(max_abs_diff(outs[i], outs[0]), tolerance) << i + 1 << " threads";
}

void expect_identical(const std::vector<std::vector<float>>& outs) {
    for (size_t i = 1; i < outs.size(); ++i) {
        ASSERT_EQ(outs[i].size(), outs[0].size());
        EXPECT_EQ(0, std::memcmp(outs[i].data(), outs[0].data(), outs[0].size() * sizeof(float)))
            << "thread count " << i + 1 << " differs from 1 by up to " << max_abs_diff(outs[i], outs[0]);
    }
}

TEST(ThreadedKernels, ElementwiseKernelsAreIdenticalOnAnyThreadCount) {
    const int64_t rows = 197, dim = 384;  // above every parallel threshold
    const std::vector<float> x = random_values(size_t(rows * dim), 1), gamma = random_values(size_t(dim), 2),
                             beta = random_values(size_t(dim), 3);
    expect_identical(on_thread_counts([&] {
        std::vector<float> y(x.size()), r(x.size()), g = x, q = x, s = x, gu(size_t(rows * 2 * dim)), m(x.size());
        layer_norm(y.data(), x.data(), gamma.data(), beta.data(), rows, dim, 1e-6f);
        rms_norm(r.data(), x.data(), gamma.data(), rows, dim, 1e-5f);
        gelu_erf(g.data(), int64_t(g.size()));
        quick_gelu(q.data(), int64_t(q.size()));
        softmax_rows(s.data(), rows, dim, beta.data());
        for (size_t i = 0; i < gu.size(); ++i) gu[i] = x[i % x.size()] * 0.5f;
        silu_mul(m.data(), gu.data(), rows, dim);
        std::vector<float> all;
        for (const auto* v : {&y, &r, &g, &q, &s, &m}) all.insert(all.end(), v->begin(), v->end());
        return all;
    }));
}

TEST(ThreadedKernels, RopeAndKvCacheWritesAreIdenticalOnAnyThreadCount) {
    const int64_t rows = 300, heads = 8, head_dim = 64, width = heads * head_dim;
    const std::vector<float> x = random_values(size_t(rows * width), 4);
    std::vector<float> inv_freq(size_t(head_dim / 2));
    rope_inv_freq(inv_freq.data(), head_dim, 10000.0);
    std::vector<int32_t> positions(static_cast<size_t>(rows));
    for (int64_t i = 0; i < rows; ++i) positions[size_t(i)] = int32_t(3 * i + 1);
    expect_identical(on_thread_counts([&] {
        std::vector<float> r = x, kc(size_t(2 * rows * width)), vc(kc.size());
        rope_apply(r.data(), rows, width, heads, head_dim, positions.data(), inv_freq.data(), 1.0f);
        kv_cache_write(kc.data(), vc.data(), 2 * rows, x.data(), r.data(), width, rows, 7, heads, head_dim);
        r.insert(r.end(), kc.begin(), kc.end());
        r.insert(r.end(), vc.begin(), vc.end());
        return r;
    }));
}

TEST(ThreadedKernels, EncoderAttentionIsIdenticalOnAnyThreadCount) {
    const int64_t tokens = 197, heads = 3, head_dim = 64;
    const std::vector<float> qkv = random_values(size_t(tokens * 3 * heads * head_dim), 5),
                             bias = random_values(size_t(tokens), 6, 0.1f);
    // The packed form, the oneDNN form in f32 and bf16 and the fused form
    // (shares of query rows, one per thread: 197, 98 + 99, 65 + 66 + 66),
    // each also with a scratch sized for one thread (`slots`), which it must
    // keep to.
    enum class Form { packed, onednn, onednn_bf16, fused, fused_bf16 };
    for (const Form form : {Form::packed, Form::onednn, Form::onednn_bf16, Form::fused, Form::fused_bf16})
        for (const bool one_slot : {false, true}) {
            const bool bf16 = form == Form::onednn_bf16 || form == Form::fused_bf16;
            const bool fused = form == Form::fused || form == Form::fused_bf16;
            if (bf16 && !onednn_linear_chosen(DType::bf16)) continue;
            if (fused && !attention_fused_available(tokens, head_dim, bf16)) continue;
            SCOPED_TRACE(std::string(form == Form::packed        ? "packed"
                                     : form == Form::onednn      ? "oneDNN"
                                     : form == Form::onednn_bf16 ? "oneDNN bf16"
                                     : form == Form::fused       ? "fused"
                                                                 : "fused bf16") +
                         (one_slot ? ", scratch for one thread" : ""));
            expect_identical(on_thread_counts([&] {
                std::vector<float> out(size_t(tokens * heads * head_dim)), cls(size_t(heads * tokens));
                const int slots = one_slot ? 1 : threads_count();
                std::vector<float> scratch(size_t(attention_scratch_floats(heads, tokens, head_dim, slots)));
                AttentionArgs a;
                a.qkv = qkv.data(), a.out = out.data(), a.tokens = tokens, a.heads = heads, a.head_dim = head_dim;
                a.scale = 0.125f, a.key_bias = bias.data(), a.cls_probs = cls.data(), a.scratch = scratch.data();
                a.slots = slots, a.onednn = form != Form::packed, a.bf16 = bf16, a.fused = fused;
                attention(nullptr, a);
                out.insert(out.end(), cls.begin(), cls.end());
                return out;
            }));
        }
}

TEST(ThreadedKernels, CausalAttentionIsIdenticalOnAnyThreadCount) {
    const int64_t tokens = 40, past = 260, q_heads = 8, kv_heads = 2, head_dim = 64, capacity = 320;
    const std::vector<float> q = random_values(size_t(tokens * q_heads * head_dim), 7),
                             k = random_values(size_t(kv_heads * capacity * head_dim), 8),
                             v = random_values(size_t(kv_heads * capacity * head_dim), 9);
    expect_identical(on_thread_counts([&] {
        std::vector<float> out(size_t(tokens * q_heads * head_dim));
        std::vector<float> scratch(size_t(causal_attention_scratch_floats(tokens, past)));
        CausalAttentionArgs a;
        a.q = q.data(), a.q_stride = q_heads * head_dim, a.k_cache = k.data(), a.v_cache = v.data();
        a.capacity = capacity, a.out = out.data(), a.tokens = tokens, a.past = past;
        a.q_heads = q_heads, a.kv_heads = kv_heads, a.head_dim = head_dim, a.scale = 0.125f;
        a.scratch = scratch.data();
        causal_attention(nullptr, a);
        return out;
    }));
}

TEST(ThreadedKernels, RoutedAndWindowedAttentionAndLceAreIdenticalOnAnyThreadCount) {
    const int grid = 14, prefix = 1;
    const int64_t tokens = prefix + grid * grid, heads = 3, head_dim = 64, dim = heads * head_dim;
    const std::vector<float> qkv = random_values(size_t(tokens * 3 * dim), 10),
                             weight = random_values(size_t(dim * 25), 11, 0.2f), bias = random_values(size_t(dim), 12);
    expect_identical(on_thread_counts([&] {
        std::vector<float> routed(size_t(tokens * dim)), windowed(size_t(tokens * dim)), cls(size_t(heads * tokens));
        RoutedAttention bra;
        bra.init(prefix, grid, grid, int(dim), 7, 4);
        GridAttentionCall call;
        call.qkv = qkv.data(), call.out = routed.data(), call.tokens = tokens, call.heads = heads;
        call.head_dim = head_dim, call.scale = 0.125f, call.cls_probs = cls.data();
        bra.run(nullptr, call);
        WindowedAttention win;
        win.init(prefix, grid, grid, 7);
        call.out = windowed.data(), call.cls_probs = nullptr;
        win.run(nullptr, call);
        // LCE reads V (columns 2 dim .. 3 dim of qkv) into the routed output.
        grid_depthwise_conv_add(nullptr, qkv.data() + 2 * dim, 3 * dim, routed.data(), dim, prefix, grid, grid, dim,
                                weight.data(), bias.data(), 5);
        routed.insert(routed.end(), windowed.begin(), windowed.end());
        routed.insert(routed.end(), cls.begin(), cls.end());
        return routed;
    }));
}

TEST(ThreadedKernels, GemmAndSixteenBitLinearAgreeOnAnyThreadCount) {
    const int64_t in = 384, out = 1152;
    const std::vector<float> w = random_values(size_t(out * in), 13, 0.05f), b = random_values(size_t(out), 14);
    std::vector<uint16_t> w16(w.size());
    for (size_t i = 0; i < w.size(); ++i) w16[i] = f32_to_bf16(w[i]);
    for (int64_t rows : {int64_t(4), int64_t(197)}) {  // GEMV path (< 8 rows) and panel path
        const std::vector<float> x = random_values(size_t(rows * in), 15);
        expect_close(on_thread_counts([&] {
            std::vector<float> y(size_t(rows * out)), y16(size_t(rows * out)),
                scratch(size_t(linear_w_scratch_floats(in)));
            linear(nullptr, y.data(), x.data(), w.data(), b.data(), rows, in, out, Epilogue::gelu_erf);
            linear_w(nullptr, y16.data(), x.data(), WeightRef{w16.data(), DType::bf16, out, in}, b.data(), rows,
                     Epilogue::none, scratch.data());
            y.insert(y.end(), y16.begin(), y16.end());
            return y;
        }), 1e-4f);
    }
}

TEST(ThreadedKernels, DecodeGemvAndTokenLanesAreIdenticalOnAnyThreadCount) {
    // Each output element is computed whole by whichever thread claims it
    // (SharedChunks), so the thread count must not change a bit. GEMV: 1-7
    // rows, out 1031 (not a multiple of any block's rows: the rest rows), bf16
    // and f16. Token lanes: 100 rows (two chunks of 50) and in 8200 (two
    // k-blocks, the second reading partial sums another thread may have written).
    const int64_t in = 8200, out = 1031;
    const std::vector<float> w = random_values(size_t(out * in), 61, 0.05f), b = random_values(size_t(out), 62);
    for (DType dtype : {DType::bf16, DType::f16}) {
        const std::vector<uint16_t> w16 = test::sixteen_bit(w, dtype);
        for (int64_t rows = 1; rows <= 7; ++rows) {
            SCOPED_TRACE(std::string(dtype_name(dtype)) + ", " + std::to_string(rows) + " rows");
            const std::vector<float> x = random_values(size_t(rows * in), 63);
            expect_identical(on_thread_counts([&] {
                std::vector<float> y = random_values(size_t(rows * out), 64);
                linear_w(nullptr, y.data(), x.data(), WeightRef{w16.data(), dtype, out, in}, b.data(), rows,
                         Epilogue::residual);
                return y;
            }));
        }
        if (dtype != DType::bf16 || !token_lanes_available()) continue;
        const std::vector<float> x = random_values(size_t(100 * in), 65);
        expect_identical(on_thread_counts([&] {
            std::vector<float> y(size_t(100 * out));
            EXPECT_TRUE(linear_bf16_token_lanes(y.data(), x.data(), w16.data(), out, in, b.data(), 100,
                                                Epilogue::gelu_erf));
            return y;
        }));
    }
}

TEST(ThreadedKernels, SharedChunksTakeEveryItemOnceAndLetAFastThreadHelp) {
    for (int planned : {1, 2, 3, 5})
        for (int team : {1, 2, 3})
            for (int64_t items : {int64_t(0), int64_t(1), int64_t(7), int64_t(100), int64_t(1031)})
                for (int64_t chunk : {int64_t(1), int64_t(4), int64_t(64)}) {
                    SharedChunks chunks;
                    chunks.reset(items, chunk, planned);
                    std::vector<int> seen(size_t(items), 0);
#pragma omp parallel num_threads(team)
                    chunks.take(omp_get_thread_num(), [&](int64_t first, int64_t last) {
                        EXPECT_LE(last - first, chunk);
                        for (int64_t i = first; i < last; ++i) {
#pragma omp atomic
                            ++seen[size_t(i)];
                        }
                    });
                    EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), items)
                        << items << " items, chunks of " << chunk << ", " << planned << " shares, " << team << " threads";
                }
    // Thread 0 stalls in its first chunk until thread 1 is done: thread 1
    // must have taken everything else, its own share and the rest of 0's
    // (all of it, should thread 0 start only after thread 1 has finished).
    SharedChunks chunks;
    chunks.reset(64, 4, 2);
    std::atomic<bool> done{false};
    int64_t taken[2] = {0, 0};
    int team = 0;
#pragma omp parallel num_threads(2)
    {
        const int t = omp_get_thread_num();
#pragma omp single
        team = omp_get_num_threads();
        chunks.take(t, [&](int64_t first, int64_t last) {
            taken[t] += last - first;
            if (t == 0 && team == 2)
                for (int wait = 0; wait < 10000 && !done.load(); ++wait) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        });
        if (t == 1) done = true;
    }
    if (team == 2) {
        EXPECT_LE(taken[0], 4);
        EXPECT_EQ(taken[0] + taken[1], 64);
    }
}

TEST(ThreadedKernels, PanelsPackedInCacheAreIdenticalOnAnyThreadCount) {
    // out 1160: 72 full 16-column panels and one of 8 columns (AVX2 panels
    // packed on the fly), or 36 full 32-column panels and one of 8 in claims
    // of 4 the threads take in any order (wide panels); in 1100: k-chunks of
    // 512, 512 and 76, or of 256 and a last of 76 (not a multiple of 8).
    const int64_t in = 1100, out = 1160, rows = 23;
    const std::vector<float> w = random_values(size_t(out * in), 16, 0.05f), b = random_values(size_t(out), 17);
    const std::vector<float> x = random_values(size_t(rows * in), 18);
    for (DType dtype : {DType::bf16, DType::f16}) {
        SCOPED_TRACE(dtype_name(dtype));
        const std::vector<uint16_t> w16 = test::sixteen_bit(w, dtype);
        expect_identical(on_thread_counts([&] {
            std::vector<float> y(size_t(rows * out));
            linear_packing_on_the_fly(nullptr, y.data(), x.data(), w16.data(), dtype, out, in, b.data(), rows,
                                      Epilogue::gelu_erf);
            return y;
        }));
        if (!wide_panels_available()) continue;  // this build has no AVX-512 code (wide_panels.h)
        expect_identical(on_thread_counts([&] {
            std::vector<float> y = random_values(size_t(rows * out), 22), x_packed(x.size());
            EXPECT_TRUE(linear_wide_panels(y.data(), x.data(), w16.data(), dtype, out, in, b.data(), rows,
                                           Epilogue::residual, x_packed.data()));
            return y;
        }));
    }
}

TEST(ThreadedKernels, PrimitiveCacheDropsAndRemakesUnderConcurrentUse) {
    // Threads ask the bounded cache for more row counts than it keeps, at
    // once: entries are dropped while other threads may still run them.
    const int64_t in = 16, out = 12, most = int64_t(onednn_primitive_cache_capacity) + 60;
    const std::vector<float> x = random_values(size_t(most * in), 31), w = random_values(size_t(out * in), 32);
    std::vector<float> worst(size_t(most), 0.0f);
#pragma omp parallel for schedule(dynamic) num_threads(3)
    for (int64_t rows = 1; rows <= most; ++rows) {
        std::vector<float> y(size_t(rows * out));
        linear(nullptr, y.data(), x.data(), w.data(), nullptr, rows, in, out);
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t o = 0; o < out; ++o) {
                double acc = 0;
                for (int64_t i = 0; i < in; ++i) acc += double(x[size_t(r * in + i)]) * w[size_t(o * in + i)];
                worst[size_t(rows - 1)] = std::max(worst[size_t(rows - 1)], float(std::abs(acc - y[size_t(r * out + o)])));
            }
    }
    EXPECT_LT(*std::max_element(worst.begin(), worst.end()), 1e-5f);
    EXPECT_LE(gemm_primitives_cached(), int64_t(onednn_primitive_cache_capacity));
}

TEST(ThreadedKernels, OnePrimitiveRunsOnSeveralThreadsAtOnce) {
    // Equal row shares run the same cached oneDNN products at the same time.
    // With oneDNN's own scratchpad (shared by the concurrent runs of one
    // primitive) some shares came out wrong; each thread now brings its own.
    const int64_t share = 60, threads = 3, in = 32, out = 96;
    const std::vector<float> x = random_values(size_t(share * threads * in), 41),
                             w = random_values(size_t(out * in), 42), bias = random_values(size_t(out), 43);
    for (DType dtype : {DType::f32, DType::bf16}) {
        const WeightPlan plan = plan_weights(out, in, dtype);
        std::vector<char> packed(plan.bytes + 64);
        void* aligned = packed.data() + (64 - reinterpret_cast<uintptr_t>(packed.data()) % 64) % 64;
        const PackedMatrix m = pack_weights(plan, w.data(), aligned);
        std::vector<float> serial(size_t(share * threads * out));
        for (int64_t t = 0; t < threads; ++t)
            linear_packed(nullptr, serial.data() + t * share * out, x.data() + t * share * in, m, bias.data(), share,
                          Epilogue::gelu_erf);
        for (int trial = 0; trial < 20; ++trial) {
            std::vector<float> y(serial.size(), -1.0f);
#pragma omp parallel for num_threads(threads)
            for (int64_t t = 0; t < threads; ++t)
                linear_packed(nullptr, y.data() + t * share * out, x.data() + t * share * in, m, bias.data(), share,
                              Epilogue::gelu_erf);
            ASSERT_EQ(0, std::memcmp(y.data(), serial.data(), y.size() * sizeof(float)))
                << dtype_name(dtype) << ", trial " << trial << ": differs by up to " << max_abs_diff(y, serial);
        }
    }
}

TEST(ThreadedKernels, RowSharesCoverTheRowsAndBookEveryMacOnce) {
    const int saved = threads_count();
    const int64_t in = 24, out = 40;
    const std::vector<float> w = random_values(size_t(out * in), 51);
    for (int threads : {1, 2, 3})
        for (int64_t rows : {int64_t(5), row_share_min_rows * 3 + 1, int64_t(199), row_share_max_rows * 3 + 7}) {
            threads_init(threads);
            const std::vector<float> x = random_values(size_t(rows * in), 52);
            std::vector<float> whole(size_t(rows * out)), shared(size_t(rows * out));
            Ledger one, split;
            linear(&one, whole.data(), x.data(), w.data(), nullptr, rows, in, out);
            std::vector<Ledger> helpers(size_t(threads - 1));
            std::vector<int> seen(size_t(rows), 0);
            int calls = 0;
            {
                Ledger::ComponentScope scope(&split, Component::mlp);
                for_row_shares(rows, &split, helpers, [&](int64_t first, int64_t n, Ledger* ledger) {
                    linear(ledger, shared.data() + first * out, x.data() + first * in, w.data(), nullptr, n, in, out);
                    for (int64_t r = first; r < first + n; ++r) ++seen[size_t(r)];
#pragma omp atomic
                    ++calls;
                });
            }
            const int64_t per_thread = rows / threads;
            const bool splits = threads > 1 && per_thread >= row_share_min_rows && per_thread <= row_share_max_rows;
            EXPECT_EQ(calls, splits ? threads : 1) << rows << " rows, " << threads << " threads";
            EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), rows) << "every row exactly once";
            EXPECT_LT(max_abs_diff(shared, whole), 1e-4f) << rows << " rows, " << threads << " threads";
            EXPECT_EQ(split.total(), uint64_t(rows * in * out));
            EXPECT_EQ(split.by_component(Component::mlp), uint64_t(rows * in * out)) << "booked where the caller books";
            EXPECT_EQ(split.by_stage().at("model"), uint64_t(rows * in * out));
            for (const Ledger& h : helpers) EXPECT_EQ(h.total(), 0u) << "absorbed";
        }
    // Too few helper ledgers for the threads: one call on all rows; with no
    // ledger to book to, none are needed.
    threads_init(2);
    std::vector<Ledger> none;
    Ledger ledger;
    int calls = 0;
    for_row_shares(200, &ledger, none, [&](int64_t, int64_t n, Ledger*) { calls += n == 200; });
    EXPECT_EQ(calls, 1);
    for_row_shares(200, nullptr, none, [&](int64_t, int64_t n, Ledger*) {
#pragma omp atomic
        calls += n == 100;
    });
    EXPECT_EQ(calls, 3);
    // An exception in a share comes out of the call, after the region.
    std::vector<Ledger> helper(1);
    EXPECT_THROW(for_row_shares(200, nullptr, helper,
                                [](int64_t first, int64_t, Ledger*) {
                                    if (first > 0) throw std::runtime_error("share failed");
                                }),
                 std::runtime_error);
    threads_init(saved);
}

TEST(ThreadedKernels, RegionStepsMeetAtBarriersAndSurviveAThrowingStep) {
    const int saved = threads_count();
    for (int threads : {1, 2, 3}) {
        threads_init(threads);
        // Each thread writes its slot, meets the others, then reads all of
        // them: every write before the barrier is seen after it.
        std::vector<int> slots(size_t(threads), 0), seen(size_t(threads), 0);
        RegionSteps steps;
        int team = 0;
        std::exception_ptr error = run_on_threads(threads, [&](int t, int nt) {
            if (t == 0) team = nt;
            steps.run([&] { slots[size_t(t)] = t + 1; });
            steps.barrier();
            steps.run([&] {
                for (int v : slots) seen[size_t(t)] += v;
            });
        });
        EXPECT_FALSE(error);
        steps.rethrow();
        for (int t = 0; t < team; ++t) EXPECT_EQ(seen[size_t(t)], team * (team + 1) / 2) << "thread " << t;

        // The last thread's first step throws: no thread runs a later step,
        // every thread still meets both barriers (no deadlock), and the
        // exception comes out of rethrow() once the region has ended.
        RegionSteps failing;
        std::atomic<int> later{0}, past_barriers{0};
        error = run_on_threads(threads, [&](int t, int nt) {
            failing.run([&] {
                if (t == nt - 1) throw std::runtime_error("step failed");
            });
            failing.barrier();
            failing.run([&] { ++later; });
            failing.barrier();
            ++past_barriers;
        });
        EXPECT_FALSE(error);
        EXPECT_EQ(later.load(), 0);
        EXPECT_EQ(past_barriers.load(), team);
        try {
            failing.rethrow();
            ADD_FAILURE() << "no exception";
        } catch (const std::runtime_error& e) {
            EXPECT_STREQ(e.what(), "step failed");
        }
    }
    threads_init(saved);
}

TEST(ThreadedKernels, ThreadPaceSharesRowsByWeightAndLearnsFromTimes) {
    auto shares_of = [](const ThreadPace& pace, int64_t rows, int nt) {
        std::vector<int64_t> bounds;
        for (int t = 0; t < nt; ++t) {
            int64_t first = 0, last = 0;
            pace.share(rows, t, nt, first, last);
            if (t == 0) bounds.push_back(first);
            EXPECT_EQ(first, bounds.back()) << "contiguous, in thread order";
            bounds.push_back(last);
        }
        return bounds;
    };
    ThreadPace pace;
    EXPECT_EQ(shares_of(pace, 197, 2), (std::vector<int64_t>{0, 98, 197})) << "equal until it has learnt";
    pace.set_weight(0, 1.0), pace.set_weight(1, 3.0);
    EXPECT_EQ(shares_of(pace, 100, 2), (std::vector<int64_t>{0, 25, 100}));
    pace.set_weight(1, 2.0), pace.set_weight(2, 1.0);
    EXPECT_EQ(shares_of(pace, 10, 3), (std::vector<int64_t>{0, 2, 7, 10})) << "boundaries rounded down";

    // Thread 0 takes twice as long over the same rows: the speeds approach
    // 2/3 and 4/3 of the mean; the weights follow in eighths, each less than
    // an eighth from its speed (2/3 -> 3/4, as the speed passes 3/4 + 1/8).
    ThreadPace learnt;
    for (int region = 0; region < 40; ++region) {
        learnt.record(0, 100, 2e-3), learnt.record(1, 100, 1e-3);
        learnt.learn(2);
    }
    EXPECT_NEAR(learnt.speed(0), 2.0 / 3.0, 1e-3);
    EXPECT_NEAR(learnt.speed(1), 4.0 / 3.0, 1e-3);
    EXPECT_EQ(learnt.weight(0), 0.75);
    EXPECT_EQ(learnt.weight(1), 1.25);
    EXPECT_EQ(shares_of(learnt, 200, 2), (std::vector<int64_t>{0, 75, 200}));

    // A small wobble moves the speeds but not the shares (each share size is
    // a oneDNN primitive of its own); a region too short to time, or with an
    // idle thread, teaches nothing.
    ThreadPace steady;
    steady.record(0, 100, 1.1e-3), steady.record(1, 100, 0.9e-3);
    steady.learn(2);
    EXPECT_LT(steady.speed(0), 1.0);
    EXPECT_EQ(steady.weight(0), 1.0);
    EXPECT_EQ(steady.weight(1), 1.0);
    ThreadPace untaught;
    untaught.record(0, 100, 1e-6), untaught.record(1, 100, 4e-6);
    untaught.learn(2);
    untaught.record(0, 0, 1e-3), untaught.record(1, 100, 1e-3);
    untaught.learn(2);
    EXPECT_EQ(untaught.speed(0), 1.0);
    EXPECT_EQ(untaught.speed(1), 1.0);
}

TEST(ThreadedKernels, PacedRowSharesAndAttentionFollowTheWeightsWithTheSameResults) {
    const int saved = threads_count();
    threads_init(2);
    // Row shares: 1 : 3 of 200 rows.
    ThreadPace pace;
    pace.set_weight(0, 0.5), pace.set_weight(1, 1.5);
    std::vector<Ledger> helpers(1);
    std::vector<int64_t> firsts(2, -1), counts(2, -1);
    for_row_shares(200, nullptr, helpers, &pace, [&](int64_t first, int64_t n, Ledger*) {
        const int t = first == 0 ? 0 : 1;
        firsts[size_t(t)] = first, counts[size_t(t)] = n;
    });
    EXPECT_EQ(firsts, (std::vector<int64_t>{0, 50}));
    EXPECT_EQ(counts, (std::vector<int64_t>{50, 150}));

    // Attention's query rows split 1 : 3 give what equal shares give, in
    // the oneDNN form and the fused one.
    const int64_t tokens = 197, heads = 3, head_dim = 64;
    const std::vector<float> qkv = random_values(size_t(tokens * 3 * heads * head_dim), 61);
    for (const bool fused : {false, true}) {
        auto attend = [&](ThreadPace* split) {
            std::vector<float> out(size_t(tokens * heads * head_dim)), cls(size_t(heads * tokens));
            std::vector<float> scratch(size_t(attention_scratch_floats(heads, tokens, head_dim, 2)));
            AttentionArgs a;
            a.qkv = qkv.data(), a.out = out.data(), a.tokens = tokens, a.heads = heads, a.head_dim = head_dim;
            a.scale = 0.125f, a.cls_probs = cls.data(), a.scratch = scratch.data(), a.slots = 2, a.onednn = true;
            a.pace = split, a.fused = fused;
            attention(nullptr, a);
            out.insert(out.end(), cls.begin(), cls.end());
            return out;
        };
        ThreadPace skewed;
        skewed.set_weight(0, 0.5), skewed.set_weight(1, 1.5);
        const std::vector<float> equal = attend(nullptr), paced = attend(&skewed);
        ASSERT_EQ(equal.size(), paced.size());
        EXPECT_EQ(0, std::memcmp(equal.data(), paced.data(), equal.size() * sizeof(float)))
            << (fused ? "fused" : "oneDNN") << " form differs by up to " << max_abs_diff(equal, paced);
    }
    threads_init(saved);
}

}  // namespace
}  // namespace tessera
