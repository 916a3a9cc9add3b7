// Vector forms of the transcendental functions the kernels apply element by
// element (shared by elementwise.cpp and the GEMM epilogues): 8 lanes with
// AVX2 + FMA, 16 where the build targets AVX-512; callers keep a scalar path
// for other machines.
#pragma once
#include <cstdint>

#if defined(__AVX2__) && defined(__FMA__)
#define TESSERA_SIMD_MATH_AVX2 1
#include <immintrin.h>

namespace tessera::simd {

// The vector operations the kernels' element-wise loops use, one set per
// width, so that each loop body (exp below, layer_norm's passes) is written
// once for 8 and 16 lanes.
struct Lanes8 {
    using V = __m256;
    static constexpr int64_t width = 8;
    static V zero() { return _mm256_setzero_ps(); }
    static V set1(float v) { return _mm256_set1_ps(v); }
    static V load(const float* p) { return _mm256_loadu_ps(p); }
    static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
    static V add(V a, V b) { return _mm256_add_ps(a, b); }
    static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
    static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
    static V div(V a, V b) { return _mm256_div_ps(a, b); }
    static V abs(V a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
    static V copy_sign(V magnitude, V from) {
        return _mm256_or_ps(magnitude, _mm256_and_ps(from, _mm256_set1_ps(-0.0f)));
    }
    static V max(V a, V b) { return _mm256_max_ps(a, b); }
    static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
    static V fnmadd(V a, V b, V c) { return _mm256_fnmadd_ps(a, b, c); }
    static V floor(V a) { return _mm256_floor_ps(a); }
    // v * 2^n for integral n in [-126, 127] (2^n built as a float's exponent bits).
    static V scale_pow2(V v, V n) {
        const __m256i biased = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
        return _mm256_mul_ps(v, _mm256_castsi256_ps(_mm256_slli_epi32(biased, 23)));
    }
    static float sum(V v) {
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
    }
    static float max_of(V v) {
        __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
    }
};

#if defined(__AVX512F__)
#define TESSERA_SIMD_MATH_AVX512 1
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
// GCC 12's AVX-512 intrinsics warn of their own deliberately undefined
// operands once inlined (GCC bug 105593, fixed in 13): silenced in the
// files that include this one.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
struct Lanes16 {
    using V = __m512;
    static constexpr int64_t width = 16;
    static V zero() { return _mm512_setzero_ps(); }
    static V set1(float v) { return _mm512_set1_ps(v); }
    static V load(const float* p) { return _mm512_loadu_ps(p); }
    static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
    static V add(V a, V b) { return _mm512_add_ps(a, b); }
    static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
    static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
    static V div(V a, V b) { return _mm512_div_ps(a, b); }
    static V abs(V a) { return _mm512_abs_ps(a); }
    static V copy_sign(V magnitude, V from) {
        return _mm512_castsi512_ps(_mm512_ternarylogic_epi32(_mm512_castps_si512(magnitude), _mm512_castps_si512(from),
                                                             _mm512_set1_epi32(int(0x80000000u)), 0xd8));  // mask ? from : magnitude
    }
    static V max(V a, V b) { return _mm512_max_ps(a, b); }
    static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
    static V fnmadd(V a, V b, V c) { return _mm512_fnmadd_ps(a, b, c); }
    static V floor(V a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
    static V scale_pow2(V v, V n) { return _mm512_scalef_ps(v, n); }  // one instruction, the same result
    static float sum(V v) { return _mm512_reduce_add_ps(v); }
    static float max_of(V v) { return _mm512_reduce_max_ps(v); }
};

// Lanes [0, count) of 16, count in [0, 16].
inline __mmask16 first_lanes16(int64_t count) { return __mmask16((1u << count) - 1u); }
#endif

// exp(x) for x <= 0: 2^n * P(r) with r = x - n ln 2, |r| <= ln2/2 and a
// degree-6 Taylor polynomial; relative error below 2e-7. The same operations
// at every width (the same result in every lane).
template <typename L>
typename L::V exp_nonpositive(typename L::V x) {
    x = L::max(x, L::set1(-87.0f));
    const typename L::V n = L::floor(L::fmadd(x, L::set1(1.44269504f), L::set1(0.5f)));
    typename L::V r = L::fnmadd(n, L::set1(0.693145752f), x);
    r = L::fnmadd(n, L::set1(1.42860677e-6f), r);
    typename L::V p = L::set1(1.0f / 720.0f);
    p = L::fmadd(p, r, L::set1(1.0f / 120.0f));
    p = L::fmadd(p, r, L::set1(1.0f / 24.0f));
    p = L::fmadd(p, r, L::set1(1.0f / 6.0f));
    p = L::fmadd(p, r, L::set1(0.5f));
    p = L::fmadd(p, r, L::set1(1.0f));
    p = L::fmadd(p, r, L::set1(1.0f));
    return L::scale_pow2(p, n);
}
inline __m256 exp_nonpositive8(__m256 x) { return exp_nonpositive<Lanes8>(x); }
#ifdef TESSERA_SIMD_MATH_AVX512
inline __m512 exp_nonpositive16(__m512 x) { return exp_nonpositive<Lanes16>(x); }
#endif

// GELU with the exact erf, 0.5 x (1 + erf(x / sqrt 2)); erf by Abramowitz and
// Stegun 7.1.26 (absolute error below 1.5e-7, as oneDNN's gelu_erf).
template <typename L>
typename L::V gelu_erf(typename L::V x) {
    using V = typename L::V;
    const V z = L::mul(x, L::set1(0.70710678f));
    const V az = L::abs(z);
    const V t = L::div(L::set1(1.0f), L::fmadd(az, L::set1(0.3275911f), L::set1(1.0f)));
    V p = L::set1(1.061405429f);
    p = L::fmadd(p, t, L::set1(-1.453152027f));
    p = L::fmadd(p, t, L::set1(1.421413741f));
    p = L::fmadd(p, t, L::set1(-0.284496736f));
    p = L::fmadd(p, t, L::set1(0.254829592f));
    p = L::mul(p, t);
    const V e = exp_nonpositive<L>(L::mul(L::sub(L::zero(), az), az));
    const V erf = L::copy_sign(L::fnmadd(p, e, L::set1(1.0f)), z);
    return L::mul(L::mul(L::set1(0.5f), x), L::add(L::set1(1.0f), erf));
}
inline __m256 gelu_erf8(__m256 x) { return gelu_erf<Lanes8>(x); }
#ifdef TESSERA_SIMD_MATH_AVX512
inline __m512 gelu_erf16(__m512 x) { return gelu_erf<Lanes16>(x); }
#endif

// Lanes [0, count) of 8 set (all bits), count in [0, 8]: the mask of a
// row's last, partial vector.
inline __m256i first_lanes8(int64_t count) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(count)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

}  // namespace tessera::simd
#endif
