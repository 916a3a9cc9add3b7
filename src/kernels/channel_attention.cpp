#include "kernels/channel_attention.h"

#include <cassert>
#include <cmath>

#include "kernels/elementwise.h"
#include "kernels/gemm.h"

namespace tessera {

int64_t channel_attention_scratch_floats(int64_t channels, int64_t groups) { return channels * (channels / groups); }

void channel_attention(Ledger* ledger, const ChannelAttentionArgs& p) {
    assert(p.groups >= 1 && p.channels % p.groups == 0);
    const int64_t n = p.tokens, c = p.channels, cg = c / p.groups, row = 3 * c;
    const float* q = p.qkv;
    const float* k = p.qkv + c;
    const float* v = p.qkv + 2 * c;
    float* maps = p.scratch;  // [groups, cg, cg]

    // maps[g, i, j] = C_g^-1/2 * sum_t k[t, g, i] v[t, g, j]  (k^T read in place)
    GemmDesc kv;
    kv.batch = p.groups, kv.m = cg, kv.k = n, kv.n = cg;
    kv.a_stride[0] = cg, kv.a_stride[1] = 1, kv.a_stride[2] = row;
    kv.b_stride[0] = cg, kv.b_stride[1] = row, kv.b_stride[2] = 1;
    kv.c_stride[0] = cg * cg, kv.c_stride[1] = cg, kv.c_stride[2] = 1;
    kv.alpha = 1.0f / std::sqrt(float(cg));
    gemm(ledger, kv, k, v, nullptr, maps);

    softmax_rows(maps, p.groups * cg, cg);

    // out[t, g, i] = sum_j q[t, g, j] maps[g, i, j]  (O = q M^T, M^T read in place)
    GemmDesc qm;
    qm.batch = p.groups, qm.m = n, qm.k = cg, qm.n = cg;
    qm.a_stride[0] = cg, qm.a_stride[1] = row, qm.a_stride[2] = 1;
    qm.b_stride[0] = cg * cg, qm.b_stride[1] = 1, qm.b_stride[2] = cg;
    qm.c_stride[0] = cg, qm.c_stride[1] = c, qm.c_stride[2] = 1;
    gemm(ledger, qm, q, maps, nullptr, p.out);
}

}  // namespace tessera
