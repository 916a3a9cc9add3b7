#include "kernels/attention.h"

#include <algorithm>
#include <cstring>

#include "kernels/elementwise.h"
#include "kernels/gemm.h"

namespace tessera {

int64_t attention_block_rows(int64_t heads, int64_t tokens) {
    const int64_t budget = (int64_t(1) << 20) / int64_t(sizeof(float));
    return std::clamp<int64_t>(budget / std::max<int64_t>(1, heads * tokens), 16, std::max<int64_t>(tokens, 1));
}

int64_t attention_scratch_floats(int64_t heads, int64_t tokens) {
    return heads * std::min(attention_block_rows(heads, tokens), tokens) * tokens;
}

void attention(Ledger* ledger, const AttentionArgs& p) {
    const int64_t n = p.tokens, h = p.heads, d = p.head_dim, c = h * d, row = 3 * c;
    const int64_t block = attention_block_rows(h, n);
    const float* q = p.qkv;
    const float* k = p.qkv + c;
    const float* v = p.qkv + 2 * c;

    for (int64_t r0 = 0; r0 < n; r0 += block) {
        const int64_t b = std::min(block, n - r0);
        float* scores = p.scratch;  // [h, b, n]

        // scores[h, i, j] = scale * q[r0 + i, h] · k[j, h]
        GemmDesc qk;
        qk.batch = h, qk.m = b, qk.k = d, qk.n = n;
        qk.a_stride[0] = d, qk.a_stride[1] = row, qk.a_stride[2] = 1;
        qk.b_stride[0] = d, qk.b_stride[1] = 1, qk.b_stride[2] = row;  // k^T read in place
        qk.c_stride[0] = b * n, qk.c_stride[1] = n, qk.c_stride[2] = 1;
        qk.alpha = p.scale;
        gemm(ledger, qk, q + r0 * row, k, nullptr, scores);

        softmax_rows(scores, h * b, n, p.key_bias);
        if (r0 == 0 && p.cls_probs)
            for (int64_t hh = 0; hh < h; ++hh) std::memcpy(p.cls_probs + hh * n, scores + hh * b * n, n * sizeof(float));

        // out[r0 + i, h] = sum_j scores[h, i, j] v[j, h]
        GemmDesc pv;
        pv.batch = h, pv.m = b, pv.k = n, pv.n = d;
        pv.a_stride[0] = b * n, pv.a_stride[1] = n, pv.a_stride[2] = 1;
        pv.b_stride[0] = d, pv.b_stride[1] = row, pv.b_stride[2] = 1;
        pv.c_stride[0] = d, pv.c_stride[1] = c, pv.c_stride[2] = 1;
        gemm(ledger, pv, scores, v, nullptr, p.out + r0 * c);
    }
}

}  // namespace tessera
