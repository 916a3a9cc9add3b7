#include "kernels/elementwise.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__AVX2__) && defined(__FMA__)
#define TESSERA_ELEMENTWISE_AVX2 1
#include <immintrin.h>
#endif

#include "kernels/simd_math.h"
#include "tessera/tensor.h"

namespace tessera {

namespace {

// exp(x) for x <= 0 (softmax after max subtraction): 2^n * P(r) with
// r = x - n ln 2, |r| <= ln2/2 and a degree-6 Taylor polynomial; relative
// error below 2e-7, far under the float32 noise of the products around it.
// libm's scalar expf was 15% of a ViT-Tiny pass. Vector loops use
// simd_math.h's forms of it (8 or 16 lanes); this one serves scalar tails and
// builds without AVX2.
inline float exp_nonpositive(float x) {
    x = std::max(x, -87.0f);
    const float n = std::floor(x * 1.44269504f + 0.5f);
    const float r = x - n * 0.693145752f - n * 1.42860677e-6f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t bits = (int32_t(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof(scale));
    return p * scale;
}

// 1 / (1 + exp(-z)) from exp of a non-positive argument only, so it stays
// finite for any z (sigmoid8 is the 8-lane form).
inline float sigmoid(float z) {
    const float e = exp_nonpositive(-std::abs(z));
    const float r = 1.0f / (1.0f + e);
    return z >= 0.0f ? r : e * r;
}

#ifdef TESSERA_ELEMENTWISE_AVX2
using simd::exp_nonpositive8;

inline __m256 sigmoid8(__m256 z) {
    const __m256 e = exp_nonpositive8(_mm256_or_ps(z, _mm256_set1_ps(-0.0f)));  // exp(-|z|)
    const __m256 r = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
    return _mm256_blendv_ps(_mm256_mul_ps(e, r), r, _mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_GE_OQ));
}
#endif

// x = x * sigmoid(1.702 x) over n floats, one thread.
void quick_gelu_span(float* x, int64_t n) {
    int64_t i = 0;
#ifdef TESSERA_ELEMENTWISE_AVX2
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        _mm256_storeu_ps(x + i, _mm256_mul_ps(v, sigmoid8(_mm256_mul_ps(v, _mm256_set1_ps(1.702f)))));
    }
#endif
    for (; i < n; ++i) x[i] = x[i] * sigmoid(1.702f * x[i]);
}

// out[i] = silu(gate[i]) * up[i], one thread; out may equal gate.
void silu_mul_span(float* out, const float* gate, const float* up, int64_t n) {
    int64_t i = 0;
#ifdef TESSERA_ELEMENTWISE_AVX2
    for (; i + 8 <= n; i += 8) {
        const __m256 g = _mm256_loadu_ps(gate + i);
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(g, sigmoid8(g)), _mm256_loadu_ps(up + i)));
    }
#endif
    for (; i < n; ++i) out[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

// head_dim / 2 of the largest head rope_apply serves (its cos/sin live on the stack).
constexpr int64_t rope_max_half = 512;

}  // namespace

namespace {

// Stores of layer_norm's results, one value or a vector of them: f32 as is,
// bf16 rounded to nearest even (as f32_to_bf16, NaNs kept quiet). Where the
// CPU converts to bf16 itself (AVX512-BF16) one instruction does it; it
// also flushes f32 denormals (below 1.2e-38) to zero.
inline void store1(float* y, float v) { *y = v; }
inline void store1(uint16_t* y, float v) { *y = f32_to_bf16(v); }
#ifdef TESSERA_ELEMENTWISE_AVX2
inline void store_lanes(float* y, __m256 v) { _mm256_storeu_ps(y, v); }
#if defined(__AVX512BF16__) && defined(__AVX512VL__)
inline void store_lanes(uint16_t* y, __m256 v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y), (__m128i)_mm256_cvtneps_pbh(v));
}
#else
inline void store_lanes(uint16_t* y, __m256 v) {
    const __m256i bits = _mm256_castps_si256(v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    const __m256i rounded =
        _mm256_srli_epi32(_mm256_add_epi32(bits, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb)), 16);
    const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(0x7fffffff)),
                                           _mm256_set1_epi32(0x7f800000));
    const __m256i nan_bits = _mm256_or_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(0x40));
    const __m256i half = _mm256_blendv_epi8(rounded, nan_bits, nan);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y),
                     _mm_packus_epi32(_mm256_castsi256_si128(half), _mm256_extracti128_si256(half, 1)));
}
#endif
#endif

#ifdef TESSERA_SIMD_MATH_AVX512
inline void store_lanes(float* y, __m512 v) { _mm512_storeu_ps(y, v); }
inline void store_lanes(uint16_t* y, __m512 v) {
#ifdef __AVX512BF16__
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y), (__m256i)_mm512_cvtneps_pbh(v));
#else
    store_lanes(y, _mm512_castps512_ps256(v));
    store_lanes(y + 8, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
#endif
}
using simd::Lanes16;
#endif
#ifdef TESSERA_ELEMENTWISE_AVX2
using simd::Lanes8;
#endif

// layer_norm's three passes over whole vectors of L's width from x[i]; each
// moves i past what it did (the caller finishes the row).
template <typename L>
float sum_lanes(const float* x, int64_t dim, int64_t& i) {
    typename L::V acc = L::zero();
    for (; i + L::width <= dim; i += L::width) acc = L::add(acc, L::load(x + i));
    return L::sum(acc);
}

template <typename L>
float squared_deviations_lanes(const float* x, float mean, int64_t dim, int64_t& i) {
    const typename L::V m = L::set1(mean);
    typename L::V acc = L::zero();
    for (; i + L::width <= dim; i += L::width) {
        const typename L::V d = L::sub(L::load(x + i), m);
        acc = L::fmadd(d, d, acc);
    }
    return L::sum(acc);
}

template <typename L, typename Out>
void normalize_lanes(Out* y, const float* x, float mean, float inv, const float* gamma, const float* beta, int64_t dim,
                     int64_t& i) {
    const typename L::V m = L::set1(mean), s = L::set1(inv);
    for (; i + L::width <= dim; i += L::width) {
        const typename L::V d = L::mul(L::sub(L::load(x + i), m), s);
        store_lanes(y + i, L::fmadd(d, L::load(gamma + i), L::load(beta + i)));
    }
}

template <typename Out>
void layer_norm_rows(Out* y, const float* x, const float* gamma, const float* beta, int64_t rows, int64_t dim,
                     float eps) {
#pragma omp parallel for schedule(static) if (rows * dim > 16384)
    for (int64_t r = 0; r < rows; ++r) {
        const float* xr = x + r * dim;
        Out* yr = y + r * dim;
        // Two passes in float (the variance from x - mean, not E[x^2] - mean^2):
        // stable for the large activations some ViT channels carry. Vector
        // partial sums (16 lanes, then 8, then scalar); a scalar loop was 5%
        // of a ViT forward whose products run on AVX-512.
        float sum = 0.0f;
        int64_t i = 0;
#ifdef TESSERA_SIMD_MATH_AVX512
        sum += sum_lanes<Lanes16>(xr, dim, i);
#endif
#ifdef TESSERA_ELEMENTWISE_AVX2
        sum += sum_lanes<Lanes8>(xr, dim, i);
#endif
        for (; i < dim; ++i) sum += xr[i];
        const float mean = sum / float(dim);
        float var = 0.0f;
        i = 0;
#ifdef TESSERA_SIMD_MATH_AVX512
        var += squared_deviations_lanes<Lanes16>(xr, mean, dim, i);
#endif
#ifdef TESSERA_ELEMENTWISE_AVX2
        var += squared_deviations_lanes<Lanes8>(xr, mean, dim, i);
#endif
        for (; i < dim; ++i) var += (xr[i] - mean) * (xr[i] - mean);
        const float inv = 1.0f / std::sqrt(var / float(dim) + eps);
        i = 0;
#ifdef TESSERA_SIMD_MATH_AVX512
        normalize_lanes<Lanes16>(yr, xr, mean, inv, gamma, beta, dim, i);
#endif
#ifdef TESSERA_ELEMENTWISE_AVX2
        normalize_lanes<Lanes8>(yr, xr, mean, inv, gamma, beta, dim, i);
#endif
        for (; i < dim; ++i) store1(yr + i, (xr[i] - mean) * inv * gamma[i] + beta[i]);
    }
}

}  // namespace

void layer_norm(float* y, const float* x, const float* gamma, const float* beta, int64_t rows, int64_t dim,
                float eps) {
    layer_norm_rows(y, x, gamma, beta, rows, dim, eps);
}

void layer_norm_bf16(uint16_t* y, const float* x, const float* gamma, const float* beta, int64_t rows, int64_t dim,
                     float eps) {
    layer_norm_rows(y, x, gamma, beta, rows, dim, eps);
}

void scale_to_bf16(uint16_t* y, const float* x, int64_t n, float scale) {
    int64_t i = 0;
#ifdef TESSERA_SIMD_MATH_AVX512
    const __m512 s16 = _mm512_set1_ps(scale);
    for (; i + 16 <= n; i += 16) store_lanes(y + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), s16));
#endif
#ifdef TESSERA_ELEMENTWISE_AVX2
    const __m256 s8 = _mm256_set1_ps(scale);
    for (; i + 8 <= n; i += 8) store_lanes(y + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), s8));
#endif
    for (; i < n; ++i) y[i] = f32_to_bf16(x[i] * scale);
}

void gelu_erf(float* x, int64_t n) {
    constexpr int64_t chunk = 4096;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t c = 0; c < n; c += chunk) {
        const int64_t end = std::min(n, c + chunk);
        int64_t i = c;
#ifdef TESSERA_SIMD_MATH_AVX2
        for (; i + 8 <= end; i += 8) _mm256_storeu_ps(x + i, simd::gelu_erf8(_mm256_loadu_ps(x + i)));
#endif
        for (; i < end; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * float(M_SQRT1_2)));
    }
}

void softmax_rows(float* x, int64_t rows, int64_t n, const float* bias) {
#pragma omp parallel for schedule(static) if (rows * n > 16384)
    for (int64_t r = 0; r < rows; ++r) softmax_row(x + r * n, n, bias);
}

namespace {

// A row's last, partial vector (count of its lanes) stored under a mask: f32
// as is, bf16 converted as store_lanes converts (without AVX512-BF16 through
// a small buffer, the row's only scalar conversions).
#ifdef TESSERA_SIMD_MATH_AVX512
inline void store_first_lanes(float* y, __m512 v, int64_t count) {
    _mm512_mask_storeu_ps(y, simd::first_lanes16(count), v);
}
inline void store_first_lanes(uint16_t* y, __m512 v, int64_t count) {
#if defined(__AVX512BF16__) && defined(__AVX512BW__) && defined(__AVX512VL__)
    _mm256_mask_storeu_epi16(y, simd::first_lanes16(count), (__m256i)_mm512_cvtneps_pbh(v));
#else
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, v);
    for (int64_t t = 0; t < count; ++t) y[t] = f32_to_bf16(lanes[t]);
#endif
}
#endif
#ifdef TESSERA_ELEMENTWISE_AVX2
inline void store_first_lanes(float* y, __m256 v, int64_t count) { _mm256_maskstore_ps(y, simd::first_lanes8(count), v); }
inline void store_first_lanes(uint16_t* y, __m256 v, int64_t count) {
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, v);
    for (int64_t t = 0; t < count; ++t) y[t] = f32_to_bf16(lanes[t]);
}
#endif

// y = exp(x + bias - max) for a row of n, returning the sum of the f32
// exps; bias (may be null) is added to x in place. y is x itself (f32) or a
// bf16 row.
template <typename Out>
float softmax_exp_row(float* x, Out* y, int64_t n, const float* bias) {
    if (bias)
        for (int64_t j = 0; j < n; ++j) x[j] += bias[j];
    // Two passes: the row's maximum, then exp(x - max) and its sum. The last,
    // partial vector is loaded and stored under a mask: a row of 197 scores
    // would otherwise leave 5 to the scalar exp, a sixth of the row's exps.
    int64_t j = 0;
#if defined(TESSERA_SIMD_MATH_AVX512)
    __m512 max16 = _mm512_set1_ps(-INFINITY);
    for (; j + 16 <= n; j += 16) max16 = _mm512_max_ps(max16, _mm512_loadu_ps(x + j));
    const __mmask16 tail = simd::first_lanes16(n - j);
    max16 = _mm512_mask_max_ps(max16, tail, max16, _mm512_maskz_loadu_ps(tail, x + j));
    const __m512 m16 = _mm512_set1_ps(simd::Lanes16::max_of(max16));
    __m512 sum16 = _mm512_setzero_ps();
    for (j = 0; j + 16 <= n; j += 16) {
        const __m512 e = simd::exp_nonpositive16(_mm512_sub_ps(_mm512_loadu_ps(x + j), m16));
        store_lanes(y + j, e);
        sum16 = _mm512_add_ps(sum16, e);
    }
    const __m512 e = simd::exp_nonpositive16(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, x + j), m16));
    store_first_lanes(y + j, e, n - j);
    return simd::Lanes16::sum(_mm512_mask_add_ps(sum16, tail, sum16, e));
#elif defined(TESSERA_ELEMENTWISE_AVX2)
    const __m256 minus_inf = _mm256_set1_ps(-INFINITY);
    __m256 max8 = minus_inf;
    for (; j + 8 <= n; j += 8) max8 = _mm256_max_ps(max8, _mm256_loadu_ps(x + j));
    const __m256i tail = simd::first_lanes8(n - j);
    const __m256 tail_lanes = _mm256_castsi256_ps(tail);
    max8 = _mm256_max_ps(max8, _mm256_blendv_ps(minus_inf, _mm256_maskload_ps(x + j, tail), tail_lanes));
    const __m256 m8 = _mm256_set1_ps(simd::Lanes8::max_of(max8));
    __m256 sum8 = _mm256_setzero_ps();
    for (j = 0; j + 8 <= n; j += 8) {
        const __m256 e = exp_nonpositive8(_mm256_sub_ps(_mm256_loadu_ps(x + j), m8));
        store_lanes(y + j, e);
        sum8 = _mm256_add_ps(sum8, e);
    }
    const __m256 e = exp_nonpositive8(_mm256_sub_ps(_mm256_maskload_ps(x + j, tail), m8));
    store_first_lanes(y + j, e, n - j);
    return simd::Lanes8::sum(_mm256_add_ps(sum8, _mm256_and_ps(e, tail_lanes)));
#else
    float m = -INFINITY, sum = 0.0f;
    for (; j < n; ++j) m = std::max(m, x[j]);
    for (j = 0; j < n; ++j) {
        const float e = exp_nonpositive(x[j] - m);
        store1(y + j, e);
        sum += e;
    }
    return sum;
#endif
}

}  // namespace

float softmax_row_unnormalized(float* x, int64_t n, const float* bias) { return softmax_exp_row(x, x, n, bias); }

float softmax_row_unnormalized_bf16(float* x, uint16_t* probs, int64_t n, const float* bias) {
    return softmax_exp_row(x, probs, n, bias);
}

void softmax_row(float* x, int64_t n, const float* bias) {
    const float inv = 1.0f / softmax_row_unnormalized(x, n, bias);
    for (int64_t j = 0; j < n; ++j) x[j] *= inv;
}

void rms_norm(float* y, const float* x, const float* weight, int64_t rows, int64_t dim, float eps) {
#pragma omp parallel for schedule(static) if (rows * dim > 16384)
    for (int64_t r = 0; r < rows; ++r) {
        const float* xr = x + r * dim;
        float* yr = y + r * dim;
        // The mean of squares in double; then float32 like HF's rsqrt(variance + eps).
        double sum_sq = 0.0;
#pragma omp simd reduction(+ : sum_sq)
        for (int64_t i = 0; i < dim; ++i) sum_sq += double(xr[i]) * double(xr[i]);
        const float inv = 1.0f / std::sqrt(float(sum_sq / double(dim)) + eps);
#pragma omp simd
        for (int64_t i = 0; i < dim; ++i) yr[i] = weight[i] * (xr[i] * inv);
    }
}

void quick_gelu(float* x, int64_t n) {
    constexpr int64_t chunk = 4096;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i += chunk) quick_gelu_span(x + i, std::min(chunk, n - i));
}

void silu_mul(float* out, const float* gate_up, int64_t rows, int64_t inter) {
    // In place, rows [lo, 2 lo) write [lo, 2 lo) * inter, below everything
    // they and later rows read ([2 lo, ...) * 2 inter): each wave is parallel.
    const bool in_place = out == gate_up;
    for (int64_t lo = 0; lo < rows;) {
        const int64_t hi = in_place ? std::min(rows, std::max<int64_t>(1, 2 * lo)) : rows;
#pragma omp parallel for schedule(static) if ((hi - lo) * inter > 65536)
        for (int64_t r = lo; r < hi; ++r) {
            // Row 0 in place: out[i] is gate[i], read just before it is written.
            const float* gate = gate_up + r * 2 * inter;
            silu_mul_span(out + r * inter, gate, gate + inter, inter);
        }
        lo = hi;
    }
}

void silu_mul_separate(float* gate, const float* up, int64_t n) {
    constexpr int64_t chunk = 4096;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i += chunk) silu_mul_span(gate + i, gate + i, up + i, std::min(chunk, n - i));
}

void rope_apply(float* x, int64_t rows, int64_t row_stride, int64_t heads, int64_t head_dim,
                const int32_t* positions, const float* inv_freq, float attention_scaling) {
    const int64_t half = head_dim / 2;
    assert(head_dim % 2 == 0 && half <= rope_max_half);
#pragma omp parallel for schedule(static) if (rows * heads * head_dim > 16384)
    for (int64_t r = 0; r < rows; ++r) {
        // One cos/sin table per row, shared by its heads.
        float cos_a[rope_max_half], sin_a[rope_max_half];
        for (int64_t i = 0; i < half; ++i) {
            const float a = float(positions[r]) * inv_freq[i];
            cos_a[i] = float(std::cos(double(a))) * attention_scaling;
            sin_a[i] = float(std::sin(double(a))) * attention_scaling;
        }
        for (int64_t h = 0; h < heads; ++h) {
            float* lo = x + r * row_stride + h * head_dim;
            float* hi = lo + half;
#pragma omp simd
            for (int64_t i = 0; i < half; ++i) {
                const float x1 = lo[i], x2 = hi[i];
                lo[i] = x1 * cos_a[i] - x2 * sin_a[i];
                hi[i] = x2 * cos_a[i] + x1 * sin_a[i];
            }
        }
    }
}

void rope_inv_freq(float* inv_freq, int64_t head_dim, double theta) {
    // torch: 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)), all float32.
    for (int64_t i = 0; i < head_dim / 2; ++i)
        inv_freq[i] = 1.0f / std::pow(float(theta), float(2 * i) / float(head_dim));
}

}  // namespace tessera
