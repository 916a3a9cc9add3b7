#include "kernels/gathered_attention.h"

#include <omp.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cassert>

#include "kernels/elementwise.h"

namespace tessera {

void GatheredAttentionPlan::size_scratch(int64_t floats_per_slot) {
    slot_floats = floats_per_slot;
    slots = omp_get_max_threads();
    scratch.assign(size_t(int64_t(slots) * slot_floats), 0.0f);
}

void GatheredAttentionPlan::bind(GatheredAttentionArgs& args) {
    args.query_start = groups.query_start.data(), args.queries = groups.queries.data();
    args.key_start = groups.key_start.data(), args.keys = groups.keys.data();
    args.groups = groups.groups();
    args.scratch = scratch.data(), args.slots = slots, args.slot_floats = slot_floats;
}

int64_t gathered_attention_slot_floats(const AttentionGroups& groups) {
    int64_t most = 0;
    for (int64_t g = 0; g < groups.groups(); ++g) {
        const int64_t nq = groups.query_start[size_t(g + 1)] - groups.query_start[size_t(g)];
        const int64_t nk = groups.key_start[size_t(g + 1)] - groups.key_start[size_t(g)];
        most = std::max(most, nq * nk);
    }
    return most;
}

namespace {

// A row of `d` floats of token t's q, k or v for head offset `col`.
inline const float* row_of(const float* base, int32_t t, int64_t row, int64_t col) {
    return base + int64_t(t) * row + col;
}

#if defined(__AVX2__) && defined(__FMA__)
// Sum of the 8 lanes of each of a0..a3, as one 4-lane vector.
inline __m128 sum4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
    const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}
#endif

// scores[i, a] = scale * q[qs[i]] · k[ks[a]] over d floats. Four queries
// share each key row load; the four dot products are reduced together.
void gathered_scores(const float* q, const int32_t* qs, int64_t nq, const float* k, const int32_t* ks, int64_t nk,
                     int64_t row, int64_t col, int64_t d, float scale, float* scores) {
    int64_t i = 0;
#if defined(__AVX2__) && defined(__FMA__)
    if (d % 8 == 0)
        for (; i + 4 <= nq; i += 4) {
            const float* q0 = row_of(q, qs[i], row, col);
            const float* q1 = row_of(q, qs[i + 1], row, col);
            const float* q2 = row_of(q, qs[i + 2], row, col);
            const float* q3 = row_of(q, qs[i + 3], row, col);
            for (int64_t a = 0; a < nk; ++a) {
                const float* ka = row_of(k, ks[a], row, col);
                __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
                for (int64_t t = 0; t < d; t += 8) {
                    const __m256 kv = _mm256_loadu_ps(ka + t);
                    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(q0 + t), kv, s0);
                    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(q1 + t), kv, s1);
                    s2 = _mm256_fmadd_ps(_mm256_loadu_ps(q2 + t), kv, s2);
                    s3 = _mm256_fmadd_ps(_mm256_loadu_ps(q3 + t), kv, s3);
                }
                alignas(16) float dots[4];
                _mm_store_ps(dots, _mm_mul_ps(sum4(s0, s1, s2, s3), _mm_set1_ps(scale)));
                for (int64_t r = 0; r < 4; ++r) scores[(i + r) * nk + a] = dots[r];
            }
        }
#endif
    for (; i < nq; ++i) {
        const float* qi = row_of(q, qs[i], row, col);
        for (int64_t a = 0; a < nk; ++a) {
            const float* ka = row_of(k, ks[a], row, col);
            float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
            for (int64_t t = 0; t < d; ++t) acc += qi[t] * ka[t];
            scores[i * nk + a] = scale * acc;
        }
    }
}

// out[qs[i]] = sum_a probs[i, a] v[ks[a]] over d floats. Four queries share
// each value row load; 16 output columns stay in registers over all keys.
void gathered_values(const float* probs, const int32_t* qs, int64_t nq, const float* v, const int32_t* ks, int64_t nk,
                     int64_t row, int64_t col, int64_t d, float* out, int64_t out_row) {
    int64_t i = 0;
#if defined(__AVX2__) && defined(__FMA__)
    if (d % 16 == 0)
        for (; i + 4 <= nq; i += 4) {
            const float* p = probs + i * nk;
            for (int64_t t = 0; t < d; t += 16) {
                __m256 o[4][2];
                for (auto& r : o) r[0] = r[1] = _mm256_setzero_ps();
                for (int64_t a = 0; a < nk; ++a) {
                    const float* va = row_of(v, ks[a], row, col) + t;
                    const __m256 v0 = _mm256_loadu_ps(va), v1 = _mm256_loadu_ps(va + 8);
                    for (int64_t r = 0; r < 4; ++r) {
                        const __m256 w = _mm256_broadcast_ss(p + r * nk + a);
                        o[r][0] = _mm256_fmadd_ps(w, v0, o[r][0]);
                        o[r][1] = _mm256_fmadd_ps(w, v1, o[r][1]);
                    }
                }
                for (int64_t r = 0; r < 4; ++r) {
                    float* dst = out + int64_t(qs[i + r]) * out_row + col + t;
                    _mm256_storeu_ps(dst, o[r][0]);
                    _mm256_storeu_ps(dst + 8, o[r][1]);
                }
            }
        }
#endif
    for (; i < nq; ++i) {
        const float* p = probs + i * nk;
        float* oi = out + int64_t(qs[i]) * out_row + col;
        std::fill(oi, oi + d, 0.0f);
        for (int64_t a = 0; a < nk; ++a) {
            const float* va = row_of(v, ks[a], row, col);
            const float w = p[a];
#pragma omp simd
            for (int64_t t = 0; t < d; ++t) oi[t] += w * va[t];
        }
    }
}

}  // namespace

void gathered_attention(Ledger* ledger, const GatheredAttentionArgs& p) {
    const int64_t h_count = p.heads, d = p.head_dim, c = h_count * d, row = 3 * c;
    const float* q = p.qkv;
    const float* k = p.qkv + c;
    const float* v = p.qkv + 2 * c;
    if (p.cls_probs) std::fill(p.cls_probs, p.cls_probs + h_count * p.tokens, 0.0f);

    uint64_t pairs = 0;  // query-key pairs over all groups
    for (int64_t g = 0; g < p.groups; ++g)
        pairs += uint64_t(p.query_start[g + 1] - p.query_start[g]) * uint64_t(p.key_start[g + 1] - p.key_start[g]);
    const int64_t items = p.groups * h_count;

#pragma omp parallel for schedule(dynamic) num_threads(std::max(1, p.slots)) if (pairs * uint64_t(c) > 65536)
    for (int64_t item = 0; item < items; ++item) {
        const int64_t g = item / h_count, h = item % h_count;
        const int32_t* qs = p.queries + p.query_start[g];
        const int32_t* ks = p.keys + p.key_start[g];
        const int64_t nq = p.query_start[g + 1] - p.query_start[g];
        const int64_t nk = p.key_start[g + 1] - p.key_start[g];
        if (nq == 0) continue;
        assert(nq * nk <= p.slot_floats && omp_get_thread_num() < std::max(1, p.slots));
        float* scores = p.scratch + int64_t(omp_get_thread_num()) * p.slot_floats;  // [nq, nk]

        // scores = softmax(scale * q k^T + key_bias) over the group's keys
        gathered_scores(q, qs, nq, k, ks, nk, row, h * d, d, p.scale, scores);
        if (p.key_bias)
            for (int64_t i = 0; i < nq; ++i)
                for (int64_t a = 0; a < nk; ++a) scores[i * nk + a] += p.key_bias[ks[a]];
        softmax_rows(scores, nq, nk);
        for (int64_t i = 0; i < nq && p.cls_probs; ++i)
            if (qs[i] == 0)
                for (int64_t a = 0; a < nk; ++a) p.cls_probs[h * p.tokens + ks[a]] = scores[i * nk + a];

        // out = scores v over the group's keys
        gathered_values(scores, qs, nq, v, ks, nk, row, h * d, d, p.out, c);
    }
    if (ledger) ledger->add(2 * pairs * uint64_t(c));
}

void grid_cells(int prefix, int grid_h, int grid_w, int cells_y, int cells_x, std::vector<int32_t>& start,
                std::vector<int32_t>& tokens) {
    assert(cells_y >= 1 && cells_x >= 1 && cells_y <= grid_h && cells_x <= grid_w);
    start.assign(1, 0);
    tokens.clear();
    tokens.reserve(size_t(grid_h) * size_t(grid_w));
    for (int cy = 0; cy < cells_y; ++cy)
        for (int cx = 0; cx < cells_x; ++cx) {
            for (int y = cy * grid_h / cells_y; y < (cy + 1) * grid_h / cells_y; ++y)
                for (int x = cx * grid_w / cells_x; x < (cx + 1) * grid_w / cells_x; ++x)
                    tokens.push_back(prefix + y * grid_w + x);
            start.push_back(int32_t(tokens.size()));
        }
}

}  // namespace tessera
