#include "kernels/attention.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "kernels/elementwise.h"
#include "kernels/fused_attention.h"
#include "kernels/gemm.h"
#include "kernels/packed_gemm.h"
#include "kernels/query_shares.h"
#include "tessera/threads.h"

namespace tessera {

namespace {

// Query rows per work item: the item's keys (packed) are reused by all of them.
constexpr int64_t rows_per_item = 48;

int64_t packed_floats(int64_t tokens, int64_t head_dim) {
    return packed_matrix_floats(tokens, head_dim) + packed_matrix_floats(head_dim, tokens);
}

}  // namespace

int64_t attention_block_rows(int64_t heads, int64_t tokens) { return std::min(rows_per_item, std::max<int64_t>(tokens, 1)); }

namespace {

// Query rows per block of the oneDNN form: as many as keep the block's scores
// within about 2 MB (a core's L2 on the CPUs this form is for), at least 64:
// oneDNN's kernels run tall blocks fastest, and fewer blocks mean fewer calls.
int64_t onednn_block_rows(int64_t heads, int64_t tokens) {
    constexpr int64_t score_floats = int64_t(1) << 19;
    return std::min(std::max<int64_t>(tokens, 1), std::max<int64_t>(64, score_floats / std::max<int64_t>(1, heads * tokens)));
}

// Byte offsets of the oneDNN form's scratch regions: keys and values of
// every head, then one slot per thread, each with one block's queries,
// scores, probabilities (bf16 form only: the f32 form's softmax stays in the
// scores), head outputs and the reciprocal of each score row's sum. Offsets
// within a slot are from its start. Operands (keys, values, queries,
// probabilities) are `operand_bytes` wide; every region starts 64-byte aligned.
struct OnednnScratch {
    int64_t keys, values, slots, slot_bytes;                   // from the scratch's start
    int64_t queries, scores, probs, head_out, row_inv, bytes;  // queries..row_inv: within a slot
};

OnednnScratch onednn_scratch(int64_t heads, int64_t tokens, int64_t head_dim, int64_t operand_bytes, int slots) {
    const int64_t block = onednn_block_rows(heads, tokens);
    int64_t at = 0;
    auto region = [&](int64_t bytes) {
        const int64_t start = at;
        at += (bytes + 63) / 64 * 64;
        return start;
    };
    OnednnScratch r;
    r.queries = region(heads * block * head_dim * operand_bytes);
    r.scores = region(heads * block * tokens * 4);
    r.probs = region(operand_bytes == 4 ? 0 : heads * block * tokens * operand_bytes);
    r.head_out = region(heads * block * head_dim * 4);
    r.row_inv = region(heads * block * 4);
    r.slot_bytes = at;
    at = 0;
    r.keys = region(heads * tokens * head_dim * operand_bytes);
    r.values = region(heads * tokens * head_dim * operand_bytes);
    r.slots = region(std::max(1, slots) * r.slot_bytes);
    r.bytes = at;
    return r;
}

int64_t onednn_floats(int64_t heads, int64_t tokens, int64_t head_dim, int slots) {
    return std::max(onednn_scratch(heads, tokens, head_dim, 4, slots).bytes,
                    onednn_scratch(heads, tokens, head_dim, 2, slots).bytes) /
           4;
}

}  // namespace

int64_t attention_scratch_floats(int64_t heads, int64_t tokens, int64_t head_dim, int slots) {
    const int64_t block = attention_block_rows(heads, tokens);
    const int64_t packed_form = heads * packed_floats(tokens, head_dim) + int64_t(slots) * block * (head_dim + tokens);
    return std::max({packed_form, onednn_floats(heads, tokens, head_dim, slots),
                     attention_fused_scratch_floats(heads, tokens, head_dim, slots)});
}

namespace {

// c[i] = a[i] · b[i] for i < batch, each operand dense and row-major:
// a [batch, m, k], b [batch, k, n], c [batch, m, n].
GemmDesc dense_batched(int64_t batch, int64_t m, int64_t k, int64_t n) {
    GemmDesc g;
    g.batch = batch, g.m = m, g.k = k, g.n = n;
    g.a_stride[0] = m * k, g.a_stride[1] = k;
    g.b_stride[0] = k * n, g.b_stride[1] = n;
    g.c_stride[0] = m * n, g.c_stride[1] = n;
    return g;
}

// Operand stores of the oneDNN form: f32 as is, bf16 rounded.
inline void store_operands(float* y, const float* x, int64_t n, float scale) {
    if (scale == 1.0f) std::memcpy(y, x, size_t(n) * sizeof(float));
    else
        for (int64_t t = 0; t < n; ++t) y[t] = x[t] * scale;
}
inline void store_operands(uint16_t* y, const float* x, int64_t n, float scale) { scale_to_bf16(y, x, n, scale); }

inline void batched_product(const GemmDesc& d, const float* a, const float* b, float* c) { gemm(nullptr, d, a, b, nullptr, c); }
inline void batched_product(GemmDesc d, const uint16_t* a, const uint16_t* b, float* c) {
    d.operands = DType::bf16;
    gemm_bf16(nullptr, d, a, b, nullptr, c);
}

// The oneDNN form: keys and values copied out of the fused buffer into dense
// per-head matrices first (oneDNN runs strided operands on a generic kernel
// several times slower: 26 GFLOP/s for the value product measured on a Xeon
// with AVX-512, and 9-44% slower for either product read in place on a
// Sapphire Rapids host). Then each thread takes a contiguous share of the
// query rows and, per block of its rows, copies the queries, computes the
// scores of every head in one batched product, the softmax, one batched value
// product, and scatters the heads' outputs into their columns. The softmax is
// left undivided: each head output row is scaled by 1 / its score row's sum
// as it is scattered (d multiplies instead of n). One parallel region, split
// over rows rather than heads (3 heads on 2 threads would leave one idle a
// third of the time), whose only barrier follows the copies: with one region
// per step, EViT's pruned ViT-Tiny blocks (72-140 tokens) ran their copies
// and softmax on one thread while the other waited. Operand is float, or
// uint16_t for bf16 products (operands rounded as they are copied).
template <typename Operand>
void attention_onednn(const AttentionArgs& p) {
    const int64_t n = p.tokens, h = p.heads, d = p.head_dim, c = h * d, row = 3 * c;
    const int slots = p.slots > 0 ? p.slots : threads_count();
    const OnednnScratch at = onednn_scratch(h, n, d, sizeof(Operand), slots);
    char* const base = reinterpret_cast<char*>(p.scratch);
    Operand* const keys = reinterpret_cast<Operand*>(base + at.keys);      // [h, n, d]
    Operand* const values = reinterpret_cast<Operand*>(base + at.values);  // [h, n, d]
    for_query_shares(p, [&](int t, int, int64_t first, int64_t last) {
#pragma omp for schedule(static)
        for (int64_t j = 0; j < n; ++j)
            for (int64_t hh = 0; hh < h; ++hh) {
                store_operands(keys + (hh * n + j) * d, p.qkv + j * row + c + hh * d, d, 1.0f);
                store_operands(values + (hh * n + j) * d, p.qkv + j * row + 2 * c + hh * d, d, 1.0f);
            }
        // (the loop's barrier: every key and value is in place from here on)
        char* const slot = base + at.slots + t * at.slot_bytes;
        Operand* const queries = reinterpret_cast<Operand*>(slot + at.queries);  // [h, rows, d], scaled
        float* const scores = reinterpret_cast<float*>(slot + at.scores);        // [h, rows, n]
        // [h, rows, n]: the softmax's output, the value product's left operand
        Operand* const probs = std::is_same_v<Operand, float> ? reinterpret_cast<Operand*>(scores)
                                                              : reinterpret_cast<Operand*>(slot + at.probs);
        float* const head_out = reinterpret_cast<float*>(slot + at.head_out);  // [h, rows, d]
        float* const row_inv = reinterpret_cast<float*>(slot + at.row_inv);    // [h, rows]: 1 / sum of each score row
        const int64_t block = onednn_block_rows(h, n);
        for (int64_t r0 = first; r0 < last; r0 += block) {
            const int64_t rows = std::min(block, last - r0);
            for (int64_t i = 0; i < rows; ++i)
                for (int64_t hh = 0; hh < h; ++hh)
                    store_operands(queries + (hh * rows + i) * d, p.qkv + (r0 + i) * row + hh * d, d, p.scale);
            // scores[hh] = queries[hh] . keys[hh]^T, the transpose read by
            // strides (oneDNN's brgemm copies it into its blocked layout
            // itself, faster than a transposing copy here)
            GemmDesc keys_transposed = dense_batched(h, rows, d, n);
            keys_transposed.b_stride[1] = 1, keys_transposed.b_stride[2] = d;
            batched_product(keys_transposed, queries, keys, scores);
            for (int64_t r = 0; r < h * rows; ++r) {
                // bf16: the exps go straight to bf16, except in the rows whose
                // f32 probabilities the caller asked for (query 0 of each head)
                if (std::is_same_v<Operand, float> || (p.cls_probs && r0 == 0 && r % rows == 0)) {
                    row_inv[r] = 1.0f / softmax_row_unnormalized(scores + r * n, n, p.key_bias);
                    if constexpr (!std::is_same_v<Operand, float>)
                        store_operands(probs + r * n, scores + r * n, n, 1.0f);
                } else if constexpr (!std::is_same_v<Operand, float>) {
                    row_inv[r] = 1.0f / softmax_row_unnormalized_bf16(scores + r * n, probs + r * n, n, p.key_bias);
                }
            }
            if (r0 == 0 && p.cls_probs)
                for (int64_t hh = 0; hh < h; ++hh)
                    for (int64_t j = 0; j < n; ++j)
                        p.cls_probs[hh * n + j] = scores[hh * rows * n + j] * row_inv[hh * rows];
            // head_out[hh] = probs[hh] . values[hh]
            batched_product(dense_batched(h, rows, n, d), probs, values, head_out);
            for (int64_t i = 0; i < rows; ++i)
                for (int64_t hh = 0; hh < h; ++hh) {
                    const float* o = head_out + (hh * rows + i) * d;
                    const float inv = row_inv[hh * rows + i];
                    if (p.out_bf16) scale_to_bf16(p.out_bf16 + (r0 + i) * c + hh * d, o, d, inv);
                    else {
                        float* dst = p.out + (r0 + i) * c + hh * d;
                        for (int64_t e = 0; e < d; ++e) dst[e] = o[e] * inv;
                    }
                }
        }
    });
}

}  // namespace

bool attention_rows_available(const AttentionArgs& p) {
    return p.onednn && p.fused && attention_fused_available(p.tokens, p.head_dim, p.bf16);
}

void attention_rows(Ledger* ledger, const AttentionArgs& p, int slot, int64_t first, int64_t last) {
    if (!attention_rows_available(p)) fail("attention", "no form runs a share of the query rows for these shapes");
    attention_fused_rows(p, slot, first, last);
    if (ledger) ledger->add(uint64_t(2 * p.heads * (last - first) * p.tokens * p.head_dim));
}

void attention(Ledger* ledger, const AttentionArgs& p) {
    if (p.onednn) {
        if (p.fused && attention_fused_available(p.tokens, p.head_dim, p.bf16)) attention_fused(p);
        else if (p.bf16) attention_onednn<uint16_t>(p);
        else attention_onednn<float>(p);
        if (ledger) ledger->add(uint64_t(2 * p.heads * p.tokens * p.tokens * p.head_dim));
        return;
    }
    const int64_t n = p.tokens, h = p.heads, d = p.head_dim, c = h * d, row = 3 * c;
    const int64_t block = attention_block_rows(h, n), per_head = packed_floats(n, d);
    const int slots = p.slots > 0 ? p.slots : threads_count();
    float* const packed = p.scratch;
    float* const slot_base = p.scratch + h * per_head;

    // Each head's keys as the "weights" of the score product (one panel per
    // 16 keys) and its values transposed as those of the value product.
    // Keys and values are separate tasks: 3 heads on 2 threads would leave
    // one thread idle a third of the time.
#pragma omp parallel for schedule(static) num_threads(slots) if (h * n * d > 32768)
    for (int64_t task = 0; task < 2 * h; ++task) {
        const int64_t hh = task / 2;
        float* kp = packed + hh * per_head;
        if (task % 2 == 0) pack_matrix_strided(p.qkv + c + hh * d, row, n, d, kp);
        else pack_matrix_transposed(p.qkv + 2 * c + hh * d, row, d, n, kp + packed_matrix_floats(n, d));
    }

    // Work items: (head, block of query rows). Per item: scaled queries,
    // scores against every key, softmax in place, value product straight
    // into the output columns of the head. Scores never exceed block x n.
    const int64_t blocks = (n + block - 1) / block, items = h * blocks;
#pragma omp parallel for schedule(dynamic) num_threads(slots) if (items > 1 && h * n * n * d > 65536)
    for (int64_t item = 0; item < items; ++item) {
        const int64_t hh = item / blocks, r0 = (item % blocks) * block, rows = std::min(block, n - r0);
        float* q = slot_base + int64_t(omp_get_thread_num()) * block * (d + n);
        float* scores = q + block * d;
        for (int64_t i = 0; i < rows; ++i) {
            const float* src = p.qkv + (r0 + i) * row + hh * d;
            for (int64_t j = 0; j < d; ++j) q[i * d + j] = src[j] * p.scale;
        }
        const float* kp = packed + hh * per_head;
        linear_packed_rows(scores, n, q, d, PackedMatrix{kp, n, d}, nullptr, rows);
        for (int64_t i = 0; i < rows; ++i) softmax_row(scores + i * n, n, p.key_bias);
        if (r0 == 0 && p.cls_probs) std::memcpy(p.cls_probs + hh * n, scores, size_t(n) * sizeof(float));
        linear_packed_rows(p.out + r0 * c + hh * d, c, scores, n, PackedMatrix{kp + packed_matrix_floats(n, d), d, n},
                           nullptr, rows);
    }
    if (ledger) ledger->add(uint64_t(2 * h * n * n * d));
}

}  // namespace tessera
