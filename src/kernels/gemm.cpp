#include "kernels/gemm.h"

#include <algorithm>
#include <array>
#include <cassert>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "kernels/onednn_engine.h"
#include "kernels/primitive_cache.h"
#include "kernels/row_shares.h"

#include "kernels/elementwise.h"
#include "kernels/onednn_linear.h"
#include "kernels/packed_gemm.h"
#include "kernels/simd_math.h"
#include "kernels/token_lanes.h"
#include "kernels/wide_panels.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define TESSERA_GEMM_AVX2 1
#include <immintrin.h>
#endif

namespace tessera {

dnnl::engine& onednn_engine() {
    static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
    return engine;
}

dnnl::primitive_attr onednn_attr() {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    return attr;
}

void onednn_execute(const dnnl::primitive& primitive, std::initializer_list<OnednnArg> args) {
    // Per thread and primitive: the memory objects, the descriptors they were
    // made with, and the argument list execute takes (slot and object; built
    // once: the C++ execute() builds it on the heap at every call), the
    // scratchpad's object last where the primitive has one.
    struct Bound {
        std::vector<dnnl::memory> memories;
        std::vector<dnnl::memory::desc> made_with;
        std::vector<dnnl_exec_arg_t> c_args;
        size_t arguments = 0;         // c_args' entries for `args`
        dnnl::memory scratchpad;      // empty where the primitive needs none
        size_t scratchpad_bytes = 0;
    };
    thread_local std::unordered_map<const void*, Bound> bound;
    thread_local dnnl::stream stream(onednn_engine());
    // This thread's scratchpad: grown to the largest need, then kept.
    thread_local std::unique_ptr<char, decltype(&std::free)> scratch(nullptr, &std::free);
    thread_local size_t scratch_bytes = 0;
    // Entries of primitives dropped from their caches stay behind: past a
    // few caches' worth, start over (the live ones are remade on demand).
    if (bound.size() > 4 * onednn_primitive_cache_capacity) bound.clear();
    Bound& b = bound[primitive.get()];
    // A primitive dropped from its cache may leave its address to a new one
    // with other arguments: the objects are remade when the slots or their
    // descriptors differ from this call's (compared as made: a memory
    // object's own descriptor may come back normalized).
    size_t used = 0;
    bool same = true;
    for (const OnednnArg& a : args) {
        if (!a.data) continue;
        same = same && used < b.arguments && b.c_args[used].arg == a.slot && b.made_with[used] == *a.desc;
        ++used;
    }
    if (!same || used != b.arguments) {
        b = Bound{};
        for (const OnednnArg& a : args)
            if (a.data) {
                b.memories.emplace_back(*a.desc, onednn_engine(), nullptr);
                b.made_with.push_back(*a.desc);
                b.c_args.push_back({a.slot, b.memories.back().get()});
            }
        b.arguments = b.c_args.size();
        const dnnl_memory_desc_t* md =
            dnnl_primitive_desc_query_md(primitive.get_primitive_desc(), dnnl_query_scratchpad_md, 0);
        b.scratchpad_bytes = md ? dnnl_memory_desc_get_size(md) : 0;
        if (b.scratchpad_bytes) {
            b.scratchpad = dnnl::memory(dnnl::memory::desc(*md), onednn_engine(), nullptr);
            b.c_args.push_back({DNNL_ARG_SCRATCHPAD, b.scratchpad.get()});
        }
    }
    size_t i = 0;
    for (const OnednnArg& a : args)
        if (a.data) b.memories[i++].set_data_handle(const_cast<void*>(a.data));
    if (b.scratchpad_bytes) {
        if (b.scratchpad_bytes > scratch_bytes) {
            const size_t bytes = (b.scratchpad_bytes + 4095) / 4096 * 4096;
            scratch_bytes = 0;  // stays 0 if the allocation fails
            scratch.reset(static_cast<char*>(std::aligned_alloc(4096, bytes)));
            if (!scratch) throw std::bad_alloc();
            scratch_bytes = bytes;
        }
        b.scratchpad.set_data_handle(scratch.get());
    }
    dnnl::error::wrap_c_api(
        dnnl_primitive_execute(primitive.get(), stream.get(), int(b.c_args.size()), b.c_args.data()),
        "could not execute a primitive");
    stream.wait();
}

namespace {

using dnnl::memory;

// Everything that distinguishes one primitive from another.
struct GemmKey {
    std::array<int64_t, 16> v;
    bool operator==(const GemmKey& o) const { return v == o.v; }
};
struct GemmKeyHash {
    size_t operator()(const GemmKey& k) const {
        size_t h = 1469598103934665603ull;
        for (int64_t x : k.v) h = (h ^ size_t(x)) * 1099511628211ull;
        return h;
    }
};

GemmKey key_of(const GemmDesc& d) {
    int32_t alpha_bits;
    static_assert(sizeof(alpha_bits) == sizeof(d.alpha));
    std::memcpy(&alpha_bits, &d.alpha, 4);
    return {{d.batch, d.m, d.k, d.n, d.a_stride[0], d.a_stride[1], d.a_stride[2], d.b_stride[0], d.b_stride[1],
             d.b_stride[2], d.c_stride[0], d.c_stride[1], d.c_stride[2],
             int64_t(alpha_bits), int64_t(d.bias) | int64_t(d.epilogue) << 1, int64_t(d.operands)}};
}

struct GemmPrimitive {
    dnnl::matmul matmul;
    memory::desc a, b, bias, c;
};

PrimitiveCache<GemmKey, GemmPrimitive, GemmKeyHash> cache(onednn_primitive_cache_capacity);

GemmPrimitive make_primitive(const GemmDesc& d) {
    auto dims3 = [](int64_t b, int64_t r, int64_t c) { return memory::dims{b, r, c}; };
    auto strides3 = [](const int64_t* s) { return memory::dims{s[0], s[1], s[2]}; };
    GemmPrimitive p;
    const auto operands = d.operands == DType::bf16 ? memory::data_type::bf16 : memory::data_type::f32;
    p.a = memory::desc(dims3(d.batch, d.m, d.k), operands, strides3(d.a_stride));
    p.b = memory::desc(dims3(d.batch, d.k, d.n), operands, strides3(d.b_stride));
    p.c = memory::desc(dims3(d.batch, d.m, d.n), memory::data_type::f32, strides3(d.c_stride));
    if (d.bias) p.bias = memory::desc(dims3(1, 1, d.n), memory::data_type::f32, memory::format_tag::abc);

    dnnl::primitive_attr attr = onednn_attr();
    dnnl::post_ops ops;
    if (d.epilogue == Epilogue::gelu_erf) ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_gelu_erf, 0.0f, 0.0f);
    if (d.epilogue == Epilogue::residual) ops.append_sum(1.0f);
    attr.set_post_ops(ops);
    if (d.alpha != 1.0f) attr.set_output_scales(0, {d.alpha});

    dnnl::matmul::desc desc = d.bias ? dnnl::matmul::desc(p.a, p.b, p.bias, p.c) : dnnl::matmul::desc(p.a, p.b, p.c);
    p.matmul = dnnl::matmul(dnnl::matmul::primitive_desc(desc, attr, onednn_engine()));
    return p;
}

std::shared_ptr<const GemmPrimitive> primitive_for(const GemmDesc& d) {
    return cache.get(key_of(d), [&] { return make_primitive(d); });
}

void gemm_any(Ledger* ledger, const GemmDesc& d, const void* a, const void* b, const float* bias, float* c) {
    const auto held = primitive_for(d);
    const GemmPrimitive& p = *held;
    onednn_execute(p.matmul, {{DNNL_ARG_SRC, &p.a, a},
                              {DNNL_ARG_WEIGHTS, &p.b, b},
                              {DNNL_ARG_DST, &p.c, c},
                              {DNNL_ARG_BIAS, &p.bias, d.bias ? bias : nullptr}});
    if (ledger) ledger->add(uint64_t(d.batch * d.m * d.k * d.n));
}

}  // namespace

void gemm(Ledger* ledger, const GemmDesc& d, const float* a, const float* b, const float* bias, float* c) {
    assert(d.operands == DType::f32);
    gemm_any(ledger, d, a, b, bias, c);
}

void gemm_bf16(Ledger* ledger, const GemmDesc& d, const uint16_t* a, const uint16_t* b, const float* bias, float* c) {
    assert(d.operands == DType::bf16);
    gemm_any(ledger, d, a, b, bias, c);
}

void linear(Ledger* ledger, float* y, const float* x, const float* weight, const float* bias, int64_t rows,
            int64_t in, int64_t out, Epilogue epilogue) {
    GemmDesc d;
    d.m = rows;
    d.k = in;
    d.n = out;
    d.a_stride[0] = rows * in, d.a_stride[1] = in, d.a_stride[2] = 1;
    d.b_stride[0] = in * out, d.b_stride[1] = 1, d.b_stride[2] = in;  // W^T without a copy
    d.c_stride[0] = rows * out, d.c_stride[1] = out, d.c_stride[2] = 1;
    d.bias = bias != nullptr;
    d.epilogue = epilogue;
    gemm(ledger, d, x, weight, bias, y);
}

namespace {

// ---- 16-bit weights -------------------------------------------------------

template <DType T>
inline float widen1(uint16_t v) {
    return T == DType::f16 ? f16_to_f32(v) : bf16_to_f32(v);
}

#ifdef TESSERA_GEMM_AVX2
// 8 f16 or bf16 values as floats (bf16 is the top half of a float).
template <DType T>
inline __m256 widen8(const uint16_t* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    if constexpr (T == DType::f16) return _mm256_cvtph_ps(h);
    else return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

#ifdef TESSERA_SIMD_MATH_AVX512
// 16 f16 or bf16 values as floats.
template <DType T>
inline __m512 widen16(const uint16_t* p) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    if constexpr (T == DType::f16) return _mm512_cvtph_ps(h);
    else return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
#endif

// widen8 or widen16, by the width of the second argument's type.
template <DType T>
inline __m256 widen(const uint16_t* p, __m256) { return widen8<T>(p); }
#ifdef TESSERA_SIMD_MATH_AVX512
template <DType T>
inline __m512 widen(const uint16_t* p, __m512) { return widen16<T>(p); }
#endif

// Keeps v in a register. Without it GCC folds the load of a vector that
// several FMAs share into each of them, one memory operand per FMA.
inline __m256 in_register(__m256 v) {
    __asm__("" : "+x"(v));
    return v;
}
#ifdef TESSERA_SIMD_MATH_AVX512
// On 16 lanes the load is left to the compiler, as the 16-lane GEMV was
// measured.
inline __m512 in_register(__m512 v) { return v; }
#endif
#endif

// dst[rows, in] = float(src[rows, in]), parallel over rows.
template <DType T>
void widen_rows(const uint16_t* src, float* dst, int64_t rows, int64_t in) {
#pragma omp parallel for schedule(static) if (rows * in > 65536)
    for (int64_t r = 0; r < rows; ++r) {
        const uint16_t* s = src + r * in;
        float* d = dst + r * in;
        int64_t i = 0;
#ifdef TESSERA_GEMM_AVX2
        for (; i + 8 <= in; i += 8) _mm256_storeu_ps(d + i, widen8<T>(s + i));
#endif
        for (; i < in; ++i) d[i] = widen1<T>(s[i]);
    }
}

// dots[r * O + o] = x[r, :] · w[o, :] for R rows of x and O weight rows.
// R * O accumulators plus O converted weight vectors stay in registers; each
// weight is loaded once and used for all R rows of x.
// Weights are also prefetched 2 KB ahead in each of the O rows, once per
// cache line: the decode GEMV then read 4096-wide bf16 matrices at 40-46
// GB/s instead of 35-38 on a 2-core Zen 5 (the hardware prefetchers alone keep
// too few lines in flight for O interleaved streams).
constexpr int64_t gemv_prefetch_ahead = 1024;  // elements

// Elements of 16 bits before p's next 64-byte boundary, which the GEMVs do
// apart so that their vector loads never span two cache lines. Safetensors
// files place tensors 8 bytes apart, so weights read in place rarely start
// on a line, and a load across two costs two: LLaVA-7B's 4096x11008 bf16
// read at 45-47 GB/s through the dot product from an address 16 bytes past
// a line, and at 58-66 from one on a line (2-core Zen 5, tessera_gemm_bench
// --gemv-bf16, alternating). The rows of a matrix whose width is a multiple
// of 32 share the first row's offset.
inline int64_t gemv_head(const uint16_t* p) { return int64_t((64 - reinterpret_cast<uintptr_t>(p) % 64) % 64) / 2; }

#ifdef TESSERA_GEMM_AVX2
// gemv_block's vector loop on the lane width of L (simd_math.h): adds to
// dots and moves i past the whole vectors it did. Always inlined: as a call
// it read 6% slower.
template <typename L, DType T, int R, int O>
__attribute__((always_inline)) inline void gemv_lanes(const uint16_t* const (&w)[O], int64_t in, const float* x,
                                                      float* dots, int64_t& i) {
    using V = typename L::V;
    if (i + L::width > in) return;
    V acc[R][O];
    for (auto& row : acc)
        for (auto& a : row) a = L::zero();
    const int64_t start = i;
    for (; i + L::width <= in; i += L::width) {
        if (((i - start) & 31) == 0)
            for (int o = 0; o < O; ++o)
                _mm_prefetch(reinterpret_cast<const char*>(w[o] + i + gemv_prefetch_ahead), _MM_HINT_T0);
        V wv[O];
        for (int o = 0; o < O; ++o) wv[o] = widen<T>(w[o] + i, V{});
        for (int r = 0; r < R; ++r) {
            const V xv = in_register(L::load(x + r * in + i));
            for (int o = 0; o < O; ++o) acc[r][o] = L::fmadd(wv[o], xv, acc[r][o]);
        }
    }
    for (int r = 0; r < R; ++r)
        for (int o = 0; o < O; ++o) dots[r * O + o] += L::sum(acc[r][o]);
}
#endif

template <DType T, int R, int O>
inline void gemv_block(const uint16_t* w, const int64_t* rows, int64_t in, const float* x, float* dots) {
    const uint16_t* wr[O];
    for (int o = 0; o < O; ++o) wr[o] = w + rows[o] * in;
    std::fill(dots, dots + R * O, 0.0f);
    auto one_at_a_time = [&](int64_t from, int64_t to) {
        for (int64_t i = from; i < to; ++i)
            for (int o = 0; o < O; ++o) {
                const float wo = widen1<T>(wr[o][i]);
                for (int r = 0; r < R; ++r) dots[r * O + o] += wo * x[r * in + i];
            }
    };
    int64_t i = std::min(in, gemv_head(wr[0]));
    one_at_a_time(0, i);
#ifdef TESSERA_SIMD_MATH_AVX512
    gemv_lanes<simd::Lanes16, T, R, O>(wr, in, x, dots, i);
#endif
#ifdef TESSERA_GEMM_AVX2
    gemv_lanes<simd::Lanes8, T, R, O>(wr, in, x, dots, i);
#endif
    one_at_a_time(i, in);
}

#if defined(TESSERA_SIMD_MATH_AVX512) && defined(__AVX512BF16__)
#define TESSERA_GEMV_BF16_DOT 1
// bf16 weights against x rounded to bf16, through the AVX512-BF16 dot
// product: each bf16 product is exact and added in f32, as in the bf16
// products of a prefill on such a CPU and in transformers' bf16 model. The
// weights are used as loaded, 32 a vector, one instruction each. On the
// 2-core Zen 5 (its FMA rate at half of other days), against a plain sum
// over the same memory, pass by pass, LLaVA-7B's 4096x11008 read at
// 0.59-0.83x through the widening loop (convert, shift, FMA per 16) and
// 0.76-0.98x through this one (tessera_gemm_bench --gemv-bf16); where the
// sum read 42+ GB/s, stand-alone loops of the two forms read at 0.63-0.84x
// and 0.90-1.13x. Keeping x to f32 precision as two bf16 parts (hi + lo,
// two products a weight vector) read at 0.75-0.94x there. Software
// prefetch, which had helped the widening loop, slowed it. (Those figures
// predate gemv_head: the bench's matrices, and so the GEMVs' loads, started
// off a cache line then. With the head and the sum from the first whole
// line, the dot product read 4096-wide matrices at 1.07-1.18x the sum
// and level with the widening loop, 55-67 GB/s where membw read 63-80.)

// One 64-byte step of bf16 values: 32 (or under a mask those left).
inline __m512bh load_bf16(const uint16_t* p) { return (__m512bh)_mm512_loadu_si512(p); }
inline __m512bh load_bf16(const uint16_t* p, __mmask32 lanes) {
    return (__m512bh)_mm512_maskz_loadu_epi16(lanes, p);
}

// dots[r * O + o] = x[r, :] · w[o, :] as gemv_block, x given rounded (xb:
// [R, in]). The last partial vector is read under a mask (zeros add
// nothing).
template <int R, int O>
inline void gemv_dot_block(const uint16_t* w, const int64_t* rows, int64_t in, const uint16_t* xb, float* dots) {
    const uint16_t* wr[O];
    for (int o = 0; o < O; ++o) wr[o] = w + rows[o] * in;
    __m512 acc[R][O];
    for (auto& row : acc)
        for (auto& a : row) a = _mm512_setzero_ps();
    auto step = [&](int64_t i, auto... lanes) {
        __m512bh wv[O];
        for (int o = 0; o < O; ++o) wv[o] = load_bf16(wr[o] + i, lanes...);
        for (int r = 0; r < R; ++r) {
            const __m512bh xv = load_bf16(xb + r * in + i, lanes...);
            for (int o = 0; o < O; ++o) acc[r][o] = _mm512_dpbf16_ps(acc[r][o], wv[o], xv);
        }
    };
    auto first = [](int64_t n) { return __mmask32((uint64_t(1) << n) - 1); };
    // A masked head up to the first row's next 64-byte boundary: from there
    // each weight load is one whole cache line (see gemv_head).
    int64_t i = std::min(in, gemv_head(wr[0]));
    if (i > 0) step(0, first(i));
    for (; i + 32 <= in; i += 32) step(i);
    if (i < in) step(i, first(in - i));
    for (int r = 0; r < R; ++r)
        for (int o = 0; o < O; ++o) dots[r * O + o] = _mm512_reduce_add_ps(acc[r][o]);
}
#endif

// Blocks of O output rows a thread claims at a time (SharedChunks): 4
// blocks of 4096-wide rows are 128 KB of bf16 weights.
constexpr int64_t gemv_chunk_blocks = 4;

// Decoding: y[R, out] for R < 8 rows of x, parallel over blocks of O output
// rows. A block's rows lie `out / O` rows apart, so each thread reads O
// streams far apart in memory rather than O neighbouring rows: on a 2-core
// Zen 5 the decode GEMV then read LLaVA-7B's bf16 matrices at 65-68 GB/s
// instead of 38-47 (paired medians; DRAM serves distant streams in parallel
// better than adjacent ones). 2, 6 or 8 rows a block read 12-25% slower.
// Rows past O * (out / O) are done one at a time at the end. The blocks are
// shared out as SharedChunks: with static shares each thread of a LLaVA-7B
// decode waited 9-13% of its samples at the regions' ends; taking over the
// other's last chunks made decode steps 0.95x as long (this and the token
// lanes' tiles together; medians of 6 alternated requests in one process).
// x_bf16 (bf16 weights, where the build has the dot product): x rounded
// to bf16, [R, in]; the products then run on gemv_dot_block. Null:
// gemv_block widens the weights.
template <DType T, int R, int O>
void gemv_rows(float* y, const float* x, const uint16_t* w, const float* bias, int64_t out, int64_t in,
               Epilogue epilogue, const uint16_t* x_bf16) {
    const int64_t spacing = out / O, rest = out - spacing * O;
    auto block = [&]<int N>(const int64_t* rows, float* dots) {
#ifdef TESSERA_GEMV_BF16_DOT
        if (T == DType::bf16 && x_bf16) return gemv_dot_block<R, N>(w, rows, in, x_bf16, dots);
#endif
        gemv_block<T, R, N>(w, rows, in, x, dots);
    };
    auto blocks = [&](int64_t first, int64_t last) {
        for (int64_t b = first; b < last; ++b) {
            float dots[R * O];
            int64_t rows[O];
            int n = O;
            if (b < spacing) {
                for (int o = 0; o < O; ++o) rows[o] = b + o * spacing;
                block.template operator()<O>(rows, dots);
            } else {  // one of the last `rest` rows
                n = 1;
                rows[0] = O * spacing + (b - spacing);
                block.template operator()<1>(rows, dots);
            }
            for (int r = 0; r < R; ++r)
                for (int o = 0; o < n; ++o) {
                    const int64_t row = rows[o];
                    float* dst = y + r * out + row;
                    *dst = with_epilogue(dots[r * n + o] + (bias ? bias[row] : 0.0f), *dst, epilogue);
                }
        }
    };
    const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
    if (threads < 2 || out * in <= 32768) {
        blocks(0, spacing + rest);
        return;
    }
    SharedChunks chunks;
    chunks.reset(spacing + rest, gemv_chunk_blocks, threads);
#pragma omp parallel num_threads(threads)
    chunks.take(omp_get_thread_num(), blocks);
}

// Output rows per block for R rows of x: R * O + O + 1 <= 16 ymm registers.
template <DType T>
void gemv(float* y, const float* x, const uint16_t* w, const float* bias, int64_t rows, int64_t out, int64_t in,
          Epilogue e, const uint16_t* x_bf16) {
    switch (rows) {
        case 1: return gemv_rows<T, 1, 4>(y, x, w, bias, out, in, e, x_bf16);
        case 2: return gemv_rows<T, 2, 4>(y, x, w, bias, out, in, e, x_bf16);
        case 3: return gemv_rows<T, 3, 3>(y, x, w, bias, out, in, e, x_bf16);
        case 4: return gemv_rows<T, 4, 2>(y, x, w, bias, out, in, e, x_bf16);
        case 5: return gemv_rows<T, 5, 2>(y, x, w, bias, out, in, e, x_bf16);
        case 6: return gemv_rows<T, 6, 2>(y, x, w, bias, out, in, e, x_bf16);
        case 7: return gemv_rows<T, 7, 1>(y, x, w, bias, out, in, e, x_bf16);
    }
    assert(false && "gemv takes 1 to 7 rows");
}

// Up to this many rows of x, 16-bit weights go through gemv (bandwidth
// bound: read each weight once).
constexpr int64_t linear_w_gemv_max_rows = 7;
// From there up to this many, bf16 weights go through the token-lanes kernel
// where oneDNN would run AVX512-BF16 code. LLaVA-7B's 4096x11008 on the
// 2-core Zen 5 (GFLOP/s, oneDNN repacking the weights each call -> token
// lanes): 16 rows 241 -> 337, 40 rows 413 -> 541, 64 rows 492 -> 668, 76 rows
// about 1.2x, 128 rows 595 -> 646, 160 rows level, 588 rows 0.9x.
constexpr int64_t linear_w_token_lanes_max_rows = 128;
// Otherwise f32 products: without the wide panels, and while x is at most
// this large, through AVX2 panels packed on the fly in cache (linear_packing_on_the_fly re-reads
// all of x for every 16 output columns, so x should stay in cache); larger
// products through converted 512-row panels and oneDNN, whose own blocking
// wins there. LLaVA-7B shapes on the AVX2 reference machine: 1.2-1.6x at
// 16-40 rows, 1.1-1.3x at 76 rows (a 64-token VTC-CLS prefill), level at
// 128-256 rows of 4096, 0.8-0.9x at 587.
#ifdef TESSERA_GEMM_AVX2
constexpr int64_t linear_w_packing_max_x_bytes = 4 << 20;
#else
constexpr int64_t linear_w_packing_max_x_bytes = 0;  // scalar tiles in this build: oneDNN always wins
#endif

// The wide-panel kernel over blocks of at most linear_w_panel_rows rows (x
// packed into scratch, linear_w_scratch_floats(in) floats); each block reads
// the weights once.
bool linear_w_wide(float* y, const float* x, const WeightRef& w, const float* bias, int64_t rows, Epilogue epilogue,
                   float* scratch) {
    const int64_t blocks = (rows + linear_w_panel_rows - 1) / linear_w_panel_rows;
    for (int64_t b = 0, r0 = 0; b < blocks; ++b) {
        const int64_t n = rows / blocks + (b < rows % blocks ? 1 : 0);
        if (!linear_wide_panels(y + r0 * w.out, x + r0 * w.in, static_cast<const uint16_t*>(w.data), w.dtype, w.out,
                                w.in, bias, n, epilogue, scratch))
            return false;
        r0 += n;
    }
    return true;
}

}  // namespace

int64_t linear_w_scratch_floats(int64_t in) { return linear_w_panel_rows * in; }

bool linear_w_gemv_in_bf16(DType dtype) {
#ifdef TESSERA_GEMV_BF16_DOT
    return dtype == DType::bf16;
#else
    (void)dtype;
    return false;
#endif
}

bool linear_w_in_bf16(DType dtype, int64_t rows) {
    if (dtype != DType::bf16 || rows <= linear_w_gemv_max_rows || !onednn_linear_chosen(DType::bf16)) return false;
    // On AMX one oneDNN product, which repacks the weights (several times
    // the rate of f32 tiles); where bf16 products pay without AMX the
    // token-lanes kernel up to 128 rows, then oneDNN. Where they do not, f32
    // tiles win from 8 rows (a Sapphire Rapids VM without AMX, LLaVA-7B's
    // 4096x12288, GFLOP/s, token lanes -> wide panels: 8 rows 73 -> 94 and
    // 17 rows 78 -> 140 with a first form of the wide panels; 16 rows
    // 136-156 -> 148-160 and 76 rows 149-150 -> 237-248 with this one).
    return onednn_bf16_on_amx() || onednn_bf16_products_pay();
}

void linear_w(Ledger* ledger, float* y, const float* x, const WeightRef& w, const float* bias, int64_t rows,
              Epilogue epilogue, float* scratch) {
    if (w.dtype == DType::f32) {
        if (w.packed)
            linear_packed(ledger, y, x, PackedMatrix{w.data, w.out, w.in, DType::f32, w.onednn_layout}, bias, rows,
                          epilogue);
        else
            linear(ledger, y, x, static_cast<const float*>(w.data), bias, rows, w.in, w.out, epilogue);
        return;
    }
    if (ledger) ledger->add(uint64_t(rows * w.in * w.out));
    const auto* w16 = static_cast<const uint16_t*>(w.data);
    if (rows <= linear_w_gemv_max_rows) {
        if (rows <= 0) return;
        if (w.dtype == DType::f16) return gemv<DType::f16>(y, x, w16, bias, rows, w.out, w.in, epilogue, nullptr);
        uint16_t* x_bf16 = nullptr;
#ifdef TESSERA_GEMV_BF16_DOT
        if (scratch) {
            // At the weights' offset within a cache line, so that after the
            // head both are read in whole lines (gemv_head).
            const uintptr_t line = (reinterpret_cast<uintptr_t>(scratch) + 63) & ~uintptr_t(63);
            x_bf16 = reinterpret_cast<uint16_t*>(line + (reinterpret_cast<uintptr_t>(w.data) % 64 & ~uintptr_t(1)));
            scale_to_bf16(x_bf16, x, rows * w.in, 1.0f);
        }
#endif
        gemv<DType::bf16>(y, x, w16, bias, rows, w.out, w.in, epilogue, x_bf16);
        return;
    }
    if (linear_w_in_bf16(w.dtype, rows)) {
        if (!onednn_bf16_on_amx() && rows <= linear_w_token_lanes_max_rows &&
            linear_bf16_token_lanes(y, x, w16, w.out, w.in, bias, rows, epilogue))
            return;
        if (onednn_linear_bf16_in_place(y, x, w16, w.out, w.in, bias, rows, epilogue)) return;
    }
    // Otherwise f32 products on weights widened in cache: the 512-bit tiles
    // where the build has them, else AVX2 panels while x stays in cache,
    // else converted panels and oneDNN.
    if (wide_panels_available()) {
        assert(scratch && "linear_w needs linear_w_scratch_floats(in) floats of scratch for larger products");
        if (linear_w_wide(y, x, w, bias, rows, epilogue, scratch)) return;
    }
    if (rows * w.in * int64_t(sizeof(float)) <= linear_w_packing_max_x_bytes)
        linear_packing_on_the_fly(nullptr, y, x, w16, w.dtype, w.out, w.in, bias, rows, epilogue);
    else
        linear_w_converted(nullptr, y, x, w, bias, rows, epilogue, scratch);
}

void linear_w_converted(Ledger* ledger, float* y, const float* x, const WeightRef& w, const float* bias, int64_t rows,
                        Epilogue epilogue, float* scratch) {
    assert((w.dtype == DType::f16 || w.dtype == DType::bf16) && "linear_w_converted takes 16-bit weights");
    assert(scratch && "linear_w needs linear_w_scratch_floats(in) floats of scratch for larger products");
    const auto* w16 = static_cast<const uint16_t*>(w.data);
    for (int64_t o0 = 0; o0 < w.out; o0 += linear_w_panel_rows) {
        const int64_t n = std::min(linear_w_panel_rows, w.out - o0);
        if (w.dtype == DType::f16) widen_rows<DType::f16>(w16 + o0 * w.in, scratch, n, w.in);
        else widen_rows<DType::bf16>(w16 + o0 * w.in, scratch, n, w.in);
        // y[:, o0:o0+n] = x · panel^T + bias[o0:o0+n], written in place
        // (the residual epilogue reads the same columns it writes).
        GemmDesc d;
        d.m = rows, d.k = w.in, d.n = n;
        d.a_stride[0] = rows * w.in, d.a_stride[1] = w.in, d.a_stride[2] = 1;
        d.b_stride[0] = n * w.in, d.b_stride[1] = 1, d.b_stride[2] = w.in;
        d.c_stride[0] = rows * w.out, d.c_stride[1] = w.out, d.c_stride[2] = 1;
        d.bias = bias != nullptr;
        d.epilogue = epilogue;
        gemm(nullptr, d, x, scratch, bias ? bias + o0 : nullptr, y + o0);
    }
    if (ledger) ledger->add(uint64_t(rows * w.in * w.out));
}

int64_t gemm_primitives_created() { return cache.created(); }
int64_t gemm_primitives_cached() { return int64_t(cache.size()); }

}  // namespace tessera
