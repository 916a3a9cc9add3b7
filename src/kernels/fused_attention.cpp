#include "kernels/fused_attention.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "kernels/elementwise.h"
#include "kernels/query_shares.h"
#include "kernels/simd_math.h"
#include "tessera/error.h"
#include "tessera/threads.h"

namespace tessera {

namespace {

constexpr int64_t tile_rows = 6;       // query rows per register tile
constexpr int64_t score_vectors = 4;   // 16-key vectors per score tile: 6 x 4 accumulators
constexpr int64_t max_head_vectors = 4;  // head_dim / 16 the value tile holds: 6 x 4 accumulators

int64_t round16(int64_t v) { return (v + 15) / 16 * 16; }

// Float offsets in the scratch, one slot per thread: the keys of the head
// at hand transposed, [d][nk] (nk = tokens rounded up to 16, zero past the
// last key), a tile's scaled queries [tile_rows][d], its scores
// [tile_rows][nk] and their rows' reciprocals. Each thread transposes every
// head's keys itself, just before it needs them (about 1 us for ViT-Tiny's
// three heads at 72 tokens): no barrier, and no keys written by one core for
// the other to read.
//
// In bf16 (vdpbf16ps multiplies pairs of bf16 and adds both products to an
// f32 lane) the keys are stored in pairs of dims, [d/2][nk][2], and the
// values in pairs of keys, [nk/2][d][2] (zero past the last key), both
// rounded to bf16; queries [tile_rows][d] and the tile's probabilities
// [tile_rows][nk] in bf16 too, scores in f32.
struct FusedScratch {
    int64_t nk, keys_t, values, queries, scores, probs, row_inv, slot_floats;
};

FusedScratch fused_scratch(int64_t tokens, int64_t head_dim, bool bf16) {
    FusedScratch r;
    r.nk = round16(tokens);
    const int64_t per_float = bf16 ? 2 : 1;  // operands per float of scratch
    r.keys_t = 0;
    r.values = r.keys_t + head_dim * r.nk / per_float;
    r.queries = r.values + (bf16 ? head_dim * r.nk / per_float : 0);
    r.scores = r.queries + round16(tile_rows * head_dim / per_float);
    r.probs = r.scores + tile_rows * r.nk;
    r.row_inv = r.probs + (bf16 ? tile_rows * r.nk / per_float : 0);
    r.slot_floats = r.row_inv + 16;
    return r;
}

}  // namespace

#ifdef TESSERA_SIMD_MATH_AVX512

namespace {

// r[i] <- column i of the 16 x 16 block whose rows are r[0..15].
inline void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; ++i) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // r[4g + m], in 128-bit lane L: element 4L + m of rows 4g..4g+3
    for (int g = 0; g < 4; ++g) {
        const __m512d a = _mm512_castps_pd(t[4 * g]), b = _mm512_castps_pd(t[4 * g + 1]);
        const __m512d c = _mm512_castps_pd(t[4 * g + 2]), d = _mm512_castps_pd(t[4 * g + 3]);
        r[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    // element e = 4L + m: lane g of the result from lane L of r[4g + m]
    __m512 out[16];
    for (int m = 0; m < 4; ++m) {
        const __m512 x0 = _mm512_shuffle_f32x4(r[m], r[4 + m], 0x44), x1 = _mm512_shuffle_f32x4(r[m], r[4 + m], 0xee);
        const __m512 y0 = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0x44);
        const __m512 y1 = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0xee);
        out[m] = _mm512_shuffle_f32x4(x0, y0, 0x88);
        out[4 + m] = _mm512_shuffle_f32x4(x0, y0, 0xdd);
        out[8 + m] = _mm512_shuffle_f32x4(x1, y1, 0x88);
        out[12 + m] = _mm512_shuffle_f32x4(x1, y1, 0xdd);
    }
    for (int i = 0; i < 16; ++i) r[i] = out[i];
}

// 16 outputs of a head row: f32 into out, or rounded to bf16 into out16
// where it is given.
inline void store_output(float* out, uint16_t* out16, __m512 o) {
    if (!out16) {
        _mm512_storeu_ps(out, o);
        return;
    }
#ifdef __AVX512BF16__
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out16), (__m256i)_mm512_cvtneps_pbh(o));
#else
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, o);
    scale_to_bf16(out16, lanes, 16, 1.0f);
#endif
}

// s[i][16v + l] = q[i] . keys_t[:, 16v + l] for the tile's R query rows and
// V vectors of 16 keys; q [R][d], keys_t and s with row strides nk.
template <int R, int V>
void score_tile(const float* q, int64_t d, const float* keys_t, int64_t nk, float* s) {
    __m512 acc[R][V];
    for (int i = 0; i < R; ++i)
        for (int v = 0; v < V; ++v) acc[i][v] = _mm512_setzero_ps();
    for (int64_t k = 0; k < d; ++k) {
        __m512 key[V];
        for (int v = 0; v < V; ++v) key[v] = _mm512_loadu_ps(keys_t + k * nk + 16 * v);
        for (int i = 0; i < R; ++i) {
            const __m512 qi = _mm512_set1_ps(q[i * d + k]);
            for (int v = 0; v < V; ++v) acc[i][v] = _mm512_fmadd_ps(qi, key[v], acc[i][v]);
        }
    }
    for (int i = 0; i < R; ++i)
        for (int v = 0; v < V; ++v) _mm512_storeu_ps(s + i * nk + 16 * v, acc[i][v]);
}

// out[i][:16U] = inv[i] * sum_j p[i][j] values[j][:16U] over the n keys, for
// the tile's R rows (as store_output stores them); p row stride nk, values
// row stride ldv, out and out16 row stride ldo.
template <int R, int U>
void value_tile(const float* p, int64_t nk, int64_t n, const float* values, int64_t ldv, const float* inv, float* out,
                uint16_t* out16, int64_t ldo) {
    __m512 acc[R][U];
    for (int i = 0; i < R; ++i)
        for (int u = 0; u < U; ++u) acc[i][u] = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; ++j) {
        __m512 value[U];
        for (int u = 0; u < U; ++u) value[u] = _mm512_loadu_ps(values + j * ldv + 16 * u);
        for (int i = 0; i < R; ++i) {
            const __m512 pi = _mm512_set1_ps(p[i * nk + j]);
            for (int u = 0; u < U; ++u) acc[i][u] = _mm512_fmadd_ps(pi, value[u], acc[i][u]);
        }
    }
    for (int i = 0; i < R; ++i) {
        const __m512 scale = _mm512_set1_ps(inv[i]);
        for (int u = 0; u < U; ++u)
            store_output(out + i * ldo + 16 * u, out16 ? out16 + i * ldo + 16 * u : nullptr, _mm512_mul_ps(acc[i][u], scale));
    }
}

// The tiles by row count (1..tile_rows) and vector count, chosen at run time.
using ScoreTile = void (*)(const float*, int64_t, const float*, int64_t, float*);
using ValueTile = void (*)(const float*, int64_t, int64_t, const float*, int64_t, const float*, float*, uint16_t*,
                           int64_t);

template <int R>
constexpr std::array<ScoreTile, score_vectors> score_tiles_of() {
    return {score_tile<R, 1>, score_tile<R, 2>, score_tile<R, 3>, score_tile<R, 4>};
}
template <int R>
constexpr std::array<ValueTile, max_head_vectors> value_tiles_of() {
    return {value_tile<R, 1>, value_tile<R, 2>, value_tile<R, 3>, value_tile<R, 4>};
}
constexpr std::array<std::array<ScoreTile, score_vectors>, tile_rows> score_tiles = {
    score_tiles_of<1>(), score_tiles_of<2>(), score_tiles_of<3>(), score_tiles_of<4>(), score_tiles_of<5>(), score_tiles_of<6>()};
constexpr std::array<std::array<ValueTile, max_head_vectors>, tile_rows> value_tiles = {
    value_tiles_of<1>(), value_tiles_of<2>(), value_tiles_of<3>(), value_tiles_of<4>(), value_tiles_of<5>(), value_tiles_of<6>()};

#ifdef __AVX512BF16__
// 16 pairs (a[l], b[l]) of bf16, rounded to nearest even, one per 32-bit
// lane: the operand layout of vdpbf16ps.
inline __m512i bf16_pairs(__m512 a, __m512 b) {
    const __m512i low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    return (__m512i)_mm512_cvtne2ps_pbh(_mm512_permutex2var_ps(a, high, b), _mm512_permutex2var_ps(a, low, b));
}

inline __m512bh pair_at(const uint16_t* p) {
    int32_t pair;
    std::memcpy(&pair, p, sizeof pair);
    return (__m512bh)_mm512_set1_epi32(pair);
}

// score_tile on bf16 operands: q [R][d], keys in pairs of dims [d/2][nk][2].
template <int R, int V>
void score_tile_bf16(const uint16_t* q, int64_t d, const uint16_t* keys2, int64_t nk, float* s) {
    __m512 acc[R][V];
    for (int i = 0; i < R; ++i)
        for (int v = 0; v < V; ++v) acc[i][v] = _mm512_setzero_ps();
    for (int64_t k = 0; k < d; k += 2) {
        __m512bh key[V];
        for (int v = 0; v < V; ++v) key[v] = (__m512bh)_mm512_loadu_si512(keys2 + k * nk + 32 * v);
        for (int i = 0; i < R; ++i) {
            const __m512bh qi = pair_at(q + i * d + k);
            for (int v = 0; v < V; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], qi, key[v]);
        }
    }
    for (int i = 0; i < R; ++i)
        for (int v = 0; v < V; ++v) _mm512_storeu_ps(s + i * nk + 16 * v, acc[i][v]);
}

// value_tile on bf16 operands: probabilities p [R][nk] (zero past the last
// key), values in pairs of keys [nk/2][d][2].
template <int R, int U>
void value_tile_bf16(const uint16_t* p, int64_t nk, int64_t pairs, const uint16_t* values2, int64_t d, const float* inv,
                     float* out, uint16_t* out16, int64_t ldo) {
    __m512 acc[R][U];
    for (int i = 0; i < R; ++i)
        for (int u = 0; u < U; ++u) acc[i][u] = _mm512_setzero_ps();
    for (int64_t j = 0; j < 2 * pairs; j += 2) {
        __m512bh value[U];
        for (int u = 0; u < U; ++u) value[u] = (__m512bh)_mm512_loadu_si512(values2 + j * d + 32 * u);
        for (int i = 0; i < R; ++i) {
            const __m512bh pi = pair_at(p + i * nk + j);
            for (int u = 0; u < U; ++u) acc[i][u] = _mm512_dpbf16_ps(acc[i][u], pi, value[u]);
        }
    }
    for (int i = 0; i < R; ++i) {
        const __m512 scale = _mm512_set1_ps(inv[i]);
        for (int u = 0; u < U; ++u)
            store_output(out + i * ldo + 16 * u, out16 ? out16 + i * ldo + 16 * u : nullptr, _mm512_mul_ps(acc[i][u], scale));
    }
}

using ScoreTileBf16 = void (*)(const uint16_t*, int64_t, const uint16_t*, int64_t, float*);
using ValueTileBf16 = void (*)(const uint16_t*, int64_t, int64_t, const uint16_t*, int64_t, const float*, float*, uint16_t*,
                               int64_t);
template <int R>
constexpr std::array<ScoreTileBf16, score_vectors> score_tiles_bf16_of() {
    return {score_tile_bf16<R, 1>, score_tile_bf16<R, 2>, score_tile_bf16<R, 3>, score_tile_bf16<R, 4>};
}
template <int R>
constexpr std::array<ValueTileBf16, max_head_vectors> value_tiles_bf16_of() {
    return {value_tile_bf16<R, 1>, value_tile_bf16<R, 2>, value_tile_bf16<R, 3>, value_tile_bf16<R, 4>};
}
constexpr std::array<std::array<ScoreTileBf16, score_vectors>, tile_rows> score_tiles_bf16 = {
    score_tiles_bf16_of<1>(), score_tiles_bf16_of<2>(), score_tiles_bf16_of<3>(),
    score_tiles_bf16_of<4>(), score_tiles_bf16_of<5>(), score_tiles_bf16_of<6>()};
constexpr std::array<std::array<ValueTileBf16, max_head_vectors>, tile_rows> value_tiles_bf16 = {
    value_tiles_bf16_of<1>(), value_tiles_bf16_of<2>(), value_tiles_bf16_of<3>(),
    value_tiles_bf16_of<4>(), value_tiles_bf16_of<5>(), value_tiles_bf16_of<6>()};
#endif

// The keys of head hh transposed, 16 keys x 16 dims at a time, zero past the
// last key: store(k0 + i, j0, column) for each dim k0 + i of keys j0..j0+15.
template <typename Store>
void transpose_keys(const AttentionArgs& p, int64_t hh, int64_t nk, Store&& store) {
    const int64_t n = p.tokens, d = p.head_dim, c = p.heads * d, row = 3 * c;
    for (int64_t j0 = 0; j0 < nk; j0 += 16) {
        const int64_t valid = std::min<int64_t>(16, n - j0);
        for (int64_t k0 = 0; k0 < d; k0 += 16) {
            __m512 r[16];
            for (int64_t i = 0; i < 16; ++i)
                r[i] = i < valid ? _mm512_loadu_ps(p.qkv + (j0 + i) * row + c + hh * d + k0) : _mm512_setzero_ps();
            transpose16(r);
            store(k0, j0, r);
        }
    }
}

}  // namespace

bool attention_fused_available(int64_t tokens, int64_t head_dim, bool bf16) {
#ifndef __AVX512BF16__
    if (bf16) return false;
#endif
    return tokens >= 16 && head_dim % 16 == 0 && head_dim >= 16 && head_dim <= 16 * max_head_vectors;
}

namespace {

// One thread's query rows [first, last) of head hh in f32.
void attend_f32(const AttentionArgs& p, const FusedScratch& at, float* slot, int64_t hh, int64_t first, int64_t last) {
    const int64_t n = p.tokens, d = p.head_dim, c = p.heads * d, row = 3 * c, nk = at.nk;
    float* const keys_t = slot + at.keys_t;
    float* const queries = slot + at.queries;
    float* const scores = slot + at.scores;
    float* const row_inv = slot + at.row_inv;
    transpose_keys(p, hh, nk, [&](int64_t k0, int64_t j0, const __m512* r) {
        for (int64_t i = 0; i < 16; ++i) _mm512_storeu_ps(keys_t + (k0 + i) * nk + j0, r[i]);
    });
    const __m512 scale = _mm512_set1_ps(p.scale);
    const float* const values = p.qkv + 2 * c + hh * d;
    for (int64_t r0 = first; r0 < last; r0 += tile_rows) {
        const int64_t rows = std::min(tile_rows, last - r0);
        for (int64_t i = 0; i < rows; ++i)
            for (int64_t k = 0; k < d; k += 16)
                _mm512_storeu_ps(queries + i * d + k, _mm512_mul_ps(_mm512_loadu_ps(p.qkv + (r0 + i) * row + hh * d + k), scale));
        for (int64_t j0 = 0; j0 < nk; j0 += 16 * score_vectors) {
            const int64_t vectors = std::min(score_vectors, (nk - j0) / 16);
            score_tiles[size_t(rows - 1)][size_t(vectors - 1)](queries, d, keys_t + j0, nk, scores + j0);
        }
        for (int64_t i = 0; i < rows; ++i) row_inv[i] = 1.0f / softmax_row_unnormalized(scores + i * nk, n, p.key_bias);
        if (r0 == 0 && p.cls_probs)
            for (int64_t j = 0; j < n; ++j) p.cls_probs[hh * n + j] = scores[j] * row_inv[0];
        value_tiles[size_t(rows - 1)][size_t(d / 16 - 1)](scores, nk, n, values, row, row_inv, p.out + r0 * c + hh * d,
                                                           p.out_bf16 ? p.out_bf16 + r0 * c + hh * d : nullptr, c);
    }
}

#ifdef __AVX512BF16__
// The same in bf16: operands rounded to bf16 as the oneDNN bf16 form rounds
// them (queries after scaling, the softmax's exps), scores, softmax and
// accumulation in f32.
void attend_bf16(const AttentionArgs& p, const FusedScratch& at, float* slot, int64_t hh, int64_t first, int64_t last) {
    const int64_t n = p.tokens, d = p.head_dim, c = p.heads * d, row = 3 * c, nk = at.nk;
    auto* const keys2 = reinterpret_cast<uint16_t*>(slot + at.keys_t);    // [d/2][nk][2]
    auto* const values2 = reinterpret_cast<uint16_t*>(slot + at.values);  // [nk/2][d][2]
    auto* const queries = reinterpret_cast<uint16_t*>(slot + at.queries);
    float* const scores = slot + at.scores;
    auto* const probs = reinterpret_cast<uint16_t*>(slot + at.probs);
    float* const row_inv = slot + at.row_inv;
    transpose_keys(p, hh, nk, [&](int64_t k0, int64_t j0, const __m512* r) {
        for (int64_t i = 0; i < 16; i += 2)
            _mm512_storeu_si512(keys2 + (k0 + i) * nk + 2 * j0, bf16_pairs(r[i], r[i + 1]));
    });
    const float* const values = p.qkv + 2 * c + hh * d;
    const int64_t pairs = (n + 1) / 2;
    for (int64_t j = 0; j < 2 * pairs; j += 2)
        for (int64_t e = 0; e < d; e += 16) {
            const __m512 a = _mm512_loadu_ps(values + j * row + e);
            const __m512 b = j + 1 < n ? _mm512_loadu_ps(values + (j + 1) * row + e) : _mm512_setzero_ps();
            _mm512_storeu_si512(values2 + j * d + 2 * e, bf16_pairs(a, b));
        }
    for (int64_t r0 = first; r0 < last; r0 += tile_rows) {
        const int64_t rows = std::min(tile_rows, last - r0);
        for (int64_t i = 0; i < rows; ++i)
            scale_to_bf16(queries + i * d, p.qkv + (r0 + i) * row + hh * d, d, p.scale);
        for (int64_t j0 = 0; j0 < nk; j0 += 16 * score_vectors) {
            const int64_t vectors = std::min(score_vectors, (nk - j0) / 16);
            score_tiles_bf16[size_t(rows - 1)][size_t(vectors - 1)](queries, d, keys2 + 2 * j0, nk, scores + j0);
        }
        for (int64_t i = 0; i < rows; ++i) {
            float* const s = scores + i * nk;
            uint16_t* const pr = probs + i * nk;
            if (r0 == 0 && i == 0 && p.cls_probs) {  // the CLS row's probabilities in f32 for the caller
                row_inv[i] = 1.0f / softmax_row_unnormalized(s, n, p.key_bias);
                for (int64_t j = 0; j < n; ++j) p.cls_probs[hh * n + j] = s[j] * row_inv[i];
                scale_to_bf16(pr, s, n, 1.0f);
            } else {
                row_inv[i] = 1.0f / softmax_row_unnormalized_bf16(s, pr, n, p.key_bias);
            }
            if (n % 2) pr[n] = 0;  // the last pair's second key
        }
        value_tiles_bf16[size_t(rows - 1)][size_t(d / 16 - 1)](probs, nk, pairs, values2, d, row_inv,
                                                               p.out + r0 * c + hh * d,
                                                               p.out_bf16 ? p.out_bf16 + r0 * c + hh * d : nullptr, c);
    }
}
#endif

}  // namespace

void attention_fused_rows(const AttentionArgs& p, int slot, int64_t first, int64_t last) {
    if (!attention_fused_available(p.tokens, p.head_dim, p.bf16)) fail("attention", "no fused form for these shapes");
    const FusedScratch at = fused_scratch(p.tokens, p.head_dim, p.bf16);
    float* const scratch = p.scratch + slot * at.slot_floats;
    for (int64_t hh = 0; hh < p.heads && first < last; ++hh) {
#ifdef __AVX512BF16__
        if (p.bf16) {
            attend_bf16(p, at, scratch, hh, first, last);
            continue;
        }
#endif
        attend_f32(p, at, scratch, hh, first, last);
    }
}

void attention_fused(const AttentionArgs& p) {
    if (!attention_fused_available(p.tokens, p.head_dim, p.bf16)) fail("attention", "no fused form for these shapes");
    for_query_shares(p, [&](int t, int, int64_t first, int64_t last) { attention_fused_rows(p, t, first, last); });
}

#else  // no AVX-512 code in this build: the other forms run

bool attention_fused_available(int64_t, int64_t, bool) { return false; }

void attention_fused(const AttentionArgs&) { fail("attention", "the fused form needs a build with AVX-512"); }
void attention_fused_rows(const AttentionArgs&, int, int64_t, int64_t) {
    fail("attention", "the fused form needs a build with AVX-512");
}

#endif

int64_t attention_fused_scratch_floats(int64_t, int64_t tokens, int64_t head_dim, int slots) {
    return std::max(1, slots) *
           std::max(fused_scratch(tokens, head_dim, false).slot_floats, fused_scratch(tokens, head_dim, true).slot_floats);
}

}  // namespace tessera
