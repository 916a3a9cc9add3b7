#include "kernels/causal_attention.h"

#include <omp.h>

#if defined(__AVX2__) && defined(__FMA__)
#define TESSERA_CAUSAL_AVX2 1
#include <immintrin.h>
#endif

#include <algorithm>
#include <cassert>
#include <cstring>

#include "kernels/elementwise.h"
#include "kernels/simd_math.h"
#include "tessera/threads.h"

namespace tessera {

namespace {

constexpr int64_t score_budget_floats = (int64_t(1) << 20) / int64_t(sizeof(float));
// Keys per pass of the value product: their rows stay in L1/L2 while every
// column chunk of the output rows is accumulated.
constexpr int64_t value_key_block = 64;

#ifdef TESSERA_CAUSAL_AVX2
// Keeps v in a register. Without it GCC folds the load of a vector that
// several FMAs share into each of them, one memory operand per FMA, and
// these loops become load-bound (measured: 30% slower prefill).
inline __m256 in_register(__m256 v) {
    __asm__("" : "+x"(v));
    return v;
}

// Sum of the 8 lanes of each of a0..a3, as one 4-lane vector.
inline __m128 sum4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
    const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

// s[r, j] = scale * q_r · k_j for 4 query rows and keys j < nk; d % 8 == 0.
// Each key load serves 4 queries, each query load 2 keys (8 FMA chains).
void scores_4rows(const float* q, int64_t q_stride, const float* k, int64_t nk, int64_t d, float scale, float* s,
                  int64_t s_stride) {
    const float* q0 = q;
    const float* q1 = q + q_stride;
    const float* q2 = q + 2 * q_stride;
    const float* q3 = q + 3 * q_stride;
    const __m128 vscale = _mm_set1_ps(scale);
    alignas(16) float dots[4];
    int64_t j = 0;
    for (; j + 2 <= nk; j += 2) {
        const float* ka = k + j * d;
        const float* kb = ka + d;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        for (int64_t t = 0; t < d; t += 8) {
            const __m256 kva = in_register(_mm256_loadu_ps(ka + t)), kvb = in_register(_mm256_loadu_ps(kb + t));
            const __m256 qv0 = in_register(_mm256_loadu_ps(q0 + t)), qv1 = in_register(_mm256_loadu_ps(q1 + t));
            const __m256 qv2 = in_register(_mm256_loadu_ps(q2 + t)), qv3 = in_register(_mm256_loadu_ps(q3 + t));
            a0 = _mm256_fmadd_ps(qv0, kva, a0), b0 = _mm256_fmadd_ps(qv0, kvb, b0);
            a1 = _mm256_fmadd_ps(qv1, kva, a1), b1 = _mm256_fmadd_ps(qv1, kvb, b1);
            a2 = _mm256_fmadd_ps(qv2, kva, a2), b2 = _mm256_fmadd_ps(qv2, kvb, b2);
            a3 = _mm256_fmadd_ps(qv3, kva, a3), b3 = _mm256_fmadd_ps(qv3, kvb, b3);
        }
        _mm_store_ps(dots, _mm_mul_ps(sum4(a0, a1, a2, a3), vscale));
        for (int64_t r = 0; r < 4; ++r) s[r * s_stride + j] = dots[r];
        _mm_store_ps(dots, _mm_mul_ps(sum4(b0, b1, b2, b3), vscale));
        for (int64_t r = 0; r < 4; ++r) s[r * s_stride + j + 1] = dots[r];
    }
    for (; j < nk; ++j) {
        const float* ka = k + j * d;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t t = 0; t < d; t += 8) {
            const __m256 kv = in_register(_mm256_loadu_ps(ka + t));
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q0 + t), kv, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q1 + t), kv, a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(q2 + t), kv, a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(q3 + t), kv, a3);
        }
        _mm_store_ps(dots, _mm_mul_ps(sum4(a0, a1, a2, a3), vscale));
        for (int64_t r = 0; r < 4; ++r) s[r * s_stride + j] = dots[r];
    }
}

// s[j] = scale * q · k_j for one query (decoding); d % 8 == 0. Eight keys at
// a time keep eight FMA chains in flight.
void scores_1row(const float* q, const float* k, int64_t nk, int64_t d, float scale, float* s) {
    const __m128 vscale = _mm_set1_ps(scale);
    int64_t j = 0;
    for (; j + 8 <= nk; j += 8) {
        const float* kj = k + j * d;
        __m256 a[8];
        for (auto& x : a) x = _mm256_setzero_ps();
        for (int64_t t = 0; t < d; t += 8) {
            const __m256 qv = in_register(_mm256_loadu_ps(q + t));
            for (int64_t u = 0; u < 8; ++u) a[u] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kj + u * d + t), a[u]);
        }
        _mm_storeu_ps(s + j, _mm_mul_ps(sum4(a[0], a[1], a[2], a[3]), vscale));
        _mm_storeu_ps(s + j + 4, _mm_mul_ps(sum4(a[4], a[5], a[6], a[7]), vscale));
    }
    for (; j < nk; ++j) {
        __m256 a = _mm256_setzero_ps();
        for (int64_t t = 0; t < d; t += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(q + t), _mm256_loadu_ps(k + j * d + t), a);
        s[j] = scale * _mm_cvtss_f32(sum4(a, a, a, a));
    }
}

#ifdef TESSERA_SIMD_MATH_AVX512
// The one-row products (decoding) on 512-bit vectors, d % 16 == 0, reading
// the keys and values front to back, one row after the other: the 8-key
// interleave above and the key blocks below left a 2-thread LLaVA-7B-shaped
// decode step's attention (32 heads, 600 keys, d 128) at 0.68-0.72x the
// rate of a plain read of the same memory on the 2-core Zen 5; these read
// at 0.96-0.97x.

// s[j] = scale * q · k_j, two FMA chains a key.
void scores_1row_wide(const float* q, const float* k, int64_t nk, int64_t d, float scale, float* s) {
    for (int64_t j = 0; j < nk; ++j) {
        const float* kj = k + j * d;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0;
        int64_t t = 0;
        for (; t + 32 <= d; t += 32) {
            a0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + t), _mm512_loadu_ps(kj + t), a0);
            a1 = _mm512_fmadd_ps(_mm512_loadu_ps(q + t + 16), _mm512_loadu_ps(kj + t + 16), a1);
        }
        if (t < d) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + t), _mm512_loadu_ps(kj + t), a0);
        s[j] = scale * _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    }
}

// out[c0 : c0 + 16 N] = sum_{j < nk} p[j] v[j, c0 : c0 + 16 N].
template <int N>
void values_1row_columns(const float* p, const float* v, int64_t nk, int64_t d, int64_t c0, float* out) {
    __m512 acc[N];
#pragma GCC unroll 8
    for (int c = 0; c < N; ++c) acc[c] = _mm512_setzero_ps();
    for (int64_t j = 0; j < nk; ++j) {
        const __m512 w = _mm512_set1_ps(p[j]);
        const float* vj = v + j * d + c0;
#pragma GCC unroll 8
        for (int c = 0; c < N; ++c) acc[c] = _mm512_fmadd_ps(w, _mm512_loadu_ps(vj + 16 * c), acc[c]);
    }
#pragma GCC unroll 8
    for (int c = 0; c < N; ++c) _mm512_storeu_ps(out + c0 + 16 * c, acc[c]);
}

// out[:] = sum_{j < nk} p[j] v[j, :], 128 columns a pass (8 accumulators).
void values_1row_wide(const float* p, const float* v, int64_t nk, int64_t d, float* out) {
    int64_t c0 = 0;
    for (; c0 + 128 <= d; c0 += 128) values_1row_columns<8>(p, v, nk, d, c0, out);
    switch ((d - c0) / 16) {
        case 1: return values_1row_columns<1>(p, v, nk, d, c0, out);
        case 2: return values_1row_columns<2>(p, v, nk, d, c0, out);
        case 3: return values_1row_columns<3>(p, v, nk, d, c0, out);
        case 4: return values_1row_columns<4>(p, v, nk, d, c0, out);
        case 5: return values_1row_columns<5>(p, v, nk, d, c0, out);
        case 6: return values_1row_columns<6>(p, v, nk, d, c0, out);
        case 7: return values_1row_columns<7>(p, v, nk, d, c0, out);
    }
}
#endif

// out[r, c0 : c0 + 8 V] (+)= sum_{j < nk} p[r, j] v[j, c0 : c0 + 8 V] for R
// rows: R * V accumulators, each value load serves R rows.
template <int R, int V>
inline void values_chunk(const float* p, int64_t p_stride, const float* v, int64_t nk, int64_t d, int64_t c0,
                         float* out, int64_t out_stride, bool accumulate) {
    // The fixed loops are unrolled up front: otherwise GCC keeps acc on the
    // stack and stores it on every key (measured: 2x slower).
    __m256 acc[R][V];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
        for (int u = 0; u < V; ++u)
            acc[r][u] = accumulate ? _mm256_loadu_ps(out + r * out_stride + c0 + 8 * u) : _mm256_setzero_ps();
    for (int64_t j = 0; j < nk; ++j) {
        const float* vj = v + j * d + c0;
        __m256 vv[V];
#pragma GCC unroll 8
        for (int u = 0; u < V; ++u) vv[u] = in_register(_mm256_loadu_ps(vj + 8 * u));
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
            const __m256 w = _mm256_broadcast_ss(p + r * p_stride + j);
#pragma GCC unroll 8
            for (int u = 0; u < V; ++u) acc[r][u] = _mm256_fmadd_ps(w, vv[u], acc[r][u]);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
        for (int u = 0; u < V; ++u) _mm256_storeu_ps(out + r * out_stride + c0 + 8 * u, acc[r][u]);
}

// out[r, :] = sum_{j < nk} p[r, j] v[j, :] for R rows; d % 8 == 0, nk >= 1. Keys go
// in blocks so a block's value rows are reused from cache by every chunk.
template <int R, int V>
void values_rows(const float* p, int64_t p_stride, const float* v, int64_t nk, int64_t d, float* out,
                 int64_t out_stride) {
    for (int64_t j0 = 0; j0 < nk; j0 += value_key_block) {
        const int64_t n = std::min(value_key_block, nk - j0);
        const bool accumulate = j0 > 0;
        int64_t c0 = 0;
        for (; c0 + 8 * V <= d; c0 += 8 * V)
            values_chunk<R, V>(p + j0, p_stride, v + j0 * d, n, d, c0, out, out_stride, accumulate);
        for (; c0 < d; c0 += 8)
            values_chunk<R, 1>(p + j0, p_stride, v + j0 * d, n, d, c0, out, out_stride, accumulate);
    }
}
#endif

// The same products for any d, one query row at a time.
void scores_scalar(const float* q, const float* k, int64_t nk, int64_t d, float scale, float* s) {
    for (int64_t j = 0; j < nk; ++j) {
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int64_t t = 0; t < d; ++t) acc += q[t] * k[j * d + t];
        s[j] = scale * acc;
    }
}

void values_scalar(const float* p, const float* v, int64_t nk, int64_t d, float* out) {
    std::fill(out, out + d, 0.0f);
    for (int64_t j = 0; j < nk; ++j) {
        const float w = p[j];
#pragma omp simd
        for (int64_t t = 0; t < d; ++t) out[t] += w * v[j * d + t];
    }
}

// One q head over query rows [t0, t0 + b) against its kv head's keys.
// s: [b, past + t0 + b] scores; row i sees keys [0, past + t0 + i + 1).
void attend_block(const CausalAttentionArgs& p, int64_t h, int64_t t0, int64_t b, float* s) {
    const int64_t d = p.head_dim, kvh = h / (p.q_heads / p.kv_heads);
    const int64_t s_stride = p.past + t0 + b;
    const float* q = p.q + t0 * p.q_stride + h * d;
    const float* k = p.k_cache + kvh * p.capacity * d;
    const float* v = p.v_cache + kvh * p.capacity * d;
    const int64_t out_stride = p.q_heads * d;
    float* out = p.out + t0 * out_stride + h * d;
    auto keys_of = [&](int64_t i) { return p.past + t0 + i + 1; };

#ifdef TESSERA_CAUSAL_AVX2
    // Groups of 4 rows share key loads and compute up to the group's last
    // row; the first rows' extra (masked) scores are dropped after softmax.
    const int64_t grouped = d % 8 == 0 ? b / 4 * 4 : 0;
#else
    const int64_t grouped = 0;
#endif

    // s = scale * q k^T over each row's visible keys
    int64_t i = 0;
#ifdef TESSERA_CAUSAL_AVX2
    for (; i < grouped; i += 4)
        scores_4rows(q + i * p.q_stride, p.q_stride, k, keys_of(i + 3), d, p.scale, s + i * s_stride, s_stride);
#ifdef TESSERA_SIMD_MATH_AVX512
    if (d % 16 == 0)
        for (; i < b; ++i) scores_1row_wide(q + i * p.q_stride, k, keys_of(i), d, p.scale, s + i * s_stride);
#endif
    if (d % 8 == 0)
        for (; i < b; ++i) scores_1row(q + i * p.q_stride, k, keys_of(i), d, p.scale, s + i * s_stride);
#endif
    for (; i < b; ++i) scores_scalar(q + i * p.q_stride, k, keys_of(i), d, p.scale, s + i * s_stride);

    // softmax(s + key_bias) per row; the keys a row does not see read as 0
    // for the 4-row value product.
    for (i = 0; i < b; ++i) {
        float* si = s + i * s_stride;
        softmax_row(si, keys_of(i), p.key_bias);
        if (p.row_hook.fn && t0 + i >= p.row_hook.first_row) p.row_hook.fn(p.row_hook.context, h, t0 + i, si, keys_of(i));
        if (i < grouped) std::fill(si + keys_of(i), si + keys_of(i / 4 * 4 + 3), 0.0f);
    }

    // out = s v
    i = 0;
#ifdef TESSERA_CAUSAL_AVX2
    for (; i < grouped; i += 4)
        values_rows<4, 2>(s + i * s_stride, s_stride, v, keys_of(i + 3), d, out + i * out_stride, out_stride);
#ifdef TESSERA_SIMD_MATH_AVX512
    if (d % 16 == 0)
        for (; i < b; ++i) values_1row_wide(s + i * s_stride, v, keys_of(i), d, out + i * out_stride);
#endif
    if (d % 8 == 0)
        for (; i < b; ++i) values_rows<1, 8>(s + i * s_stride, s_stride, v, keys_of(i), d, out + i * out_stride, out_stride);
#endif
    for (; i < b; ++i) values_scalar(s + i * s_stride, v, keys_of(i), d, out + i * out_stride);
}

}  // namespace

int64_t causal_attention_block_rows(int64_t tokens, int64_t past) {
    const int64_t keys = std::max<int64_t>(1, past + tokens);
    int64_t rows = std::clamp<int64_t>(score_budget_floats / keys, 1, std::max<int64_t>(tokens, 1));
    if (rows >= 4) rows = rows / 4 * 4;  // whole groups for the 4-row kernels
    return rows;
}

int64_t causal_attention_scratch_floats(int64_t tokens, int64_t past) {
    // A block's scores are at most min(tokens * keys, max(budget, keys)):
    // both terms grow with tokens and past, so the size is monotone.
    const int64_t keys = past + tokens;
    const int64_t slot = std::min(tokens * keys, std::max(score_budget_floats, keys));
    return int64_t(threads_count()) * slot;
}

void causal_attention(Ledger* ledger, const CausalAttentionArgs& p) {
    assert(p.kv_heads > 0 && p.q_heads % p.kv_heads == 0 && p.past + p.tokens <= p.capacity);
    if (p.tokens <= 0) return;
    const int64_t block = causal_attention_block_rows(p.tokens, p.past);
    const int64_t blocks = (p.tokens + block - 1) / block;
    const int64_t group = p.q_heads / p.kv_heads;
    const int64_t keys = p.past + p.tokens;
    const int64_t slot = std::min(p.tokens * keys, std::max(score_budget_floats, keys));
    const int threads = threads_count();
    // Pairs (query, visible key) per q head.
    const uint64_t pairs = uint64_t(p.tokens) * uint64_t(p.past) + uint64_t(p.tokens) * uint64_t(p.tokens + 1) / 2;

    // Items ordered kv head, block, q head in group: neighbours share keys and values.
    const int64_t items = p.kv_heads * blocks * group;
#pragma omp parallel for schedule(dynamic) num_threads(threads) if (pairs * uint64_t(p.q_heads * p.head_dim) > 65536)
    for (int64_t item = 0; item < items; ++item) {
        const int64_t g = item % group, blk = item / group % blocks, kvh = item / group / blocks;
        const int64_t t0 = blk * block, b = std::min(block, p.tokens - t0);
        assert(b * (p.past + t0 + b) <= slot && omp_get_thread_num() < threads);
        attend_block(p, kvh * group + g, t0, b, p.scratch + int64_t(omp_get_thread_num()) * slot);
    }
    if (ledger) ledger->add(2 * pairs * uint64_t(p.q_heads * p.head_dim));
}

void kv_cache_write(float* k_cache, float* v_cache, int64_t capacity, const float* k, const float* v,
                    int64_t kv_stride, int64_t tokens, int64_t past, int64_t kv_heads, int64_t head_dim) {
    assert(past + tokens <= capacity);
    const size_t bytes = size_t(head_dim) * sizeof(float);
#pragma omp parallel for schedule(static) if (tokens * kv_heads * head_dim > 65536)
    for (int64_t h = 0; h < kv_heads; ++h)
        for (int64_t t = 0; t < tokens; ++t) {
            const int64_t dst = (h * capacity + past + t) * head_dim;
            std::memcpy(k_cache + dst, k + t * kv_stride + h * head_dim, bytes);
            std::memcpy(v_cache + dst, v + t * kv_stride + h * head_dim, bytes);
        }
}

}  // namespace tessera
