#include "stages/tome.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/gemm.h"
#include "tessera/error.h"

namespace tessera {

void tome_work_init(TomeWork& work, int max_tokens, int dim, int head_dim) {
    const size_t t = size_t(max_tokens), a = (t + 1) / 2, b = t / 2;
    work.max_tokens = max_tokens, work.dim = dim, work.head_dim = head_dim;
    work.metric.assign(t * size_t(head_dim), 0.0f);
    work.unit.assign(t * size_t(head_dim), 0.0f);
    work.scores.assign(a * b, 0.0f);
    work.node_max.assign(a, 0.0f);
    work.node_idx.assign(a, 0);
    work.edge.assign(a, 0);
    work.old_to_new.assign(t, 0);
    work.merged.assign(t * size_t(dim), 0.0f);
    work.size_sum.assign(t, 0.0f);
}

void tome_mean_keys(float* metric, const float* qkv, int tokens, int heads, int head_dim) {
    const int64_t c = int64_t(heads) * head_dim, row = 3 * c;
    const float inv = 1.0f / float(heads);
    for (int64_t t = 0; t < tokens; ++t) {
        const float* k = qkv + t * row + c;  // the k part of this token's row
        float* m = metric + t * head_dim;
        std::fill(m, m + head_dim, 0.0f);
        for (int h = 0; h < heads; ++h)
            for (int i = 0; i < head_dim; ++i) m[i] += k[h * head_dim + i];
        for (int i = 0; i < head_dim; ++i) m[i] *= inv;
    }
}

TomePlan tome_match(TomeWork& work, int tokens, int r, bool class_token, Ledger* ledger) {
    const int t = tokens, d = work.head_dim;
    const int protected_tokens = class_token ? 1 : 0;
    TomePlan plan;
    plan.tokens = t;
    plan.old_to_new = work.old_to_new.data();
    int32_t* old_to_new = work.old_to_new.data();

    // r = min(r, (t - protected) // 2): at most half of the tokens merge.
    r = std::min(r, (t - protected_tokens) / 2);
    if (r <= 0) {
        for (int i = 0; i < t; ++i) old_to_new[i] = i;
        plan.new_count = t;
        return plan;
    }

    // metric = metric / metric.norm(dim=-1, keepdim=True)
    // a, b = metric[..., ::2, :], metric[..., 1::2, :]  (unit rows of A, then of B: both dense)
    const int na = (t + 1) / 2, nb = t / 2;
    const float* metric = work.metric.data();
    float* unit_a = work.unit.data();
    float* unit_b = unit_a + int64_t(na) * d;
    for (int i = 0; i < t; ++i) {
        const float* m = metric + int64_t(i) * d;
        float* u = (i % 2 == 0 ? unit_a : unit_b) + int64_t(i / 2) * d;
        float sq = 0.0f;
        for (int j = 0; j < d; ++j) sq += m[j] * m[j];
        const float inv = 1.0f / std::max(std::sqrt(sq), 1e-12f);  // a zero key stays zero, not NaN
        for (int j = 0; j < d; ++j) u[j] = m[j] * inv;
    }

    // scores = a @ b.transpose(-1, -2)
    float* scores = work.scores.data();
    GemmDesc g;
    g.m = na, g.k = d, g.n = nb;
    g.a_stride[0] = int64_t(na) * d, g.a_stride[1] = d, g.a_stride[2] = 1;
    g.b_stride[0] = int64_t(nb) * d, g.b_stride[1] = 1, g.b_stride[2] = d;  // b^T read in place
    g.c_stride[0] = int64_t(na) * nb, g.c_stride[1] = nb, g.c_stride[2] = 1;
    gemm(ledger, g, unit_a, unit_b, nullptr, scores);

    // if class_token: scores[..., 0, :] = -math.inf
    if (class_token) std::fill(scores, scores + nb, -std::numeric_limits<float>::infinity());

    // node_max, node_idx = scores.max(dim=-1)
    float* node_max = work.node_max.data();
    int32_t* node_idx = work.node_idx.data();
    for (int i = 0; i < na; ++i) {
        const float* row = scores + int64_t(i) * nb;
        int best = 0;
        for (int j = 1; j < nb; ++j)
            if (row[j] > row[best]) best = j;
        node_max[i] = row[best], node_idx[i] = best;
    }

    // edge_idx = node_max.argsort(dim=-1, descending=True); ties: lower index first
    int32_t* edge = work.edge.data();
    for (int i = 0; i < na; ++i) edge[i] = i;
    std::sort(edge, edge + na, [&](int32_t x, int32_t y) {
        return node_max[x] > node_max[y] || (node_max[x] == node_max[y] && x < y);
    });
    // src_idx = edge_idx[..., :r, :], unm_idx = edge_idx[..., r:, :]
    // if class_token: unm_idx = unm_idx.sort(dim=1)[0]
    if (class_token) std::sort(edge + r, edge + na);

    // torch.cat([unm, dst], dim=1): unmerged A tokens, then all of B.
    const int unmerged = na - r;
    for (int k = 0; k < unmerged; ++k) old_to_new[2 * edge[r + k]] = k;
    for (int j = 0; j < nb; ++j) old_to_new[2 * j + 1] = unmerged + j;
    // dst = dst.scatter_reduce(-2, dst_idx, src): src token a joins B token node_idx[a].
    for (int k = 0; k < r; ++k) old_to_new[2 * edge[k]] = unmerged + node_idx[edge[k]];

    plan.r = r;
    plan.new_count = t - r;
    return plan;
}

void tome_merge(float* out, float* size_sum, const float* x, const float* size, const int32_t* old_to_new,
                int tokens, int new_count, int dim) {
    // x = merge(x * size, mode="sum"); size = merge(size, mode="sum"); x = x / size
    std::fill(out, out + int64_t(new_count) * dim, 0.0f);
    std::fill(size_sum, size_sum + new_count, 0.0f);
    for (int t = 0; t < tokens; ++t) {
        const int32_t n = old_to_new[t];
        if (n < 0) continue;
        const float w = size[t];
        const float* src = x + int64_t(t) * dim;
        float* dst = out + int64_t(n) * dim;
        for (int i = 0; i < dim; ++i) dst[i] += src[i] * w;
        size_sum[n] += w;
    }
    for (int n = 0; n < new_count; ++n) {
        float* dst = out + int64_t(n) * dim;
        for (int i = 0; i < dim; ++i) dst[i] /= size_sum[n];
    }
}

// ---------------------------------------------------------------- the stage

TomeStage::TomeStage(YamlMap& params) : params_(params) {
    const bool has_r = params.has("r"), has_schedule = params.has("schedule");
    if (has_r && has_schedule) params.error("schedule", "give either r or schedule, not both");
    if (!has_r && !has_schedule)
        params.error("r", "is missing: give r (tokens merged per block) or schedule (one r per block)");
    r_ = params.integer("r", 0, 0, 1 << 20);
    schedule_ = params.integers("schedule", {}, 0, 1 << 20);
    if (has_schedule && schedule_.empty()) params.error("schedule", "must list one r per block");
    blocks_ = params.integers("blocks", {}, 0, 4095);
    if (has_schedule && params.has("blocks"))
        params.error("blocks", "a schedule already says which blocks merge (give 0 to skip one): drop blocks");
    if (params.has("blocks") && blocks_.empty()) params.error("blocks", "must list at least one block");
    for (size_t i = 0; i < blocks_.size(); ++i)
        for (size_t j = 0; j < i; ++j)
            if (blocks_[i] == blocks_[j]) params.error("blocks", "block " + std::to_string(blocks_[i]) + " is listed twice");
    proportional_attention_ = params.boolean("proportional_attention", true);
    params_ = params;  // with every key marked as read
}

int TomeStage::r_at(int block) const {
    if (!schedule_.empty()) return block < int(schedule_.size()) ? schedule_[size_t(block)] : 0;
    if (blocks_.empty()) return r_;
    return std::find(blocks_.begin(), blocks_.end(), block) != blocks_.end() ? r_ : 0;
}

void TomeStage::check(const EncoderShape& shape) const {
    if (shape.prefix > 1)
        fail(params_.file(), "stage 'tome' protects one class token; this encoder has " +
                                 std::to_string(shape.prefix) + " prefix tokens");
    if (!schedule_.empty() && int(schedule_.size()) != shape.depth)
        params_.error("schedule", "has " + std::to_string(schedule_.size()) + " entries but the encoder has " +
                                      std::to_string(shape.depth) + " blocks");
    for (int b : blocks_)
        if (b >= shape.depth)
            params_.error("blocks", "block " + std::to_string(b) + " is past the last block " +
                                        std::to_string(shape.depth - 1));

    // Follow the token count through the blocks. A schedule must fit at
    // every block; a fixed r must fit at the first merging block, later
    // blocks lower it as the official guard does.
    int t = shape.tokens();
    bool first = true;
    for (int l = 0; l < shape.depth; ++l) {
        int r = r_at(l);
        if (r <= 0) continue;
        const int most = (t - shape.prefix) / 2;
        if (r > most) {
            const std::string why = " tokens at block " + std::to_string(l) + " but only " + std::to_string(most) +
                                    " of its " + std::to_string(t - shape.prefix) +
                                    " non-protected tokens can merge (at most half)";
            if (!schedule_.empty())
                params_.error("schedule", "entry " + std::to_string(l) + " merges " + std::to_string(r) + why);
            if (first) params_.error("r", "merges " + std::to_string(r) + why);
            r = most;
        }
        first = false;
        t -= r;
    }
    tome_work_init(work_, shape.tokens(), shape.dim, shape.dim / shape.heads);
}

void TomeStage::encoder_after_attention(BlockView& v) {
    const int r = r_at(v.block);
    if (r <= 0) return;
    TokenState& s = *v.state;
    const int t = s.count, head_dim = v.dim / v.heads;
    if (work_.max_tokens < t || work_.dim != v.dim || work_.head_dim != head_dim)
        tome_work_init(work_, t, v.dim, head_dim);  // only when check() did not size it

    if (!v.qkv)
        fail("tome", "block " + std::to_string(v.block) +
                         ": an earlier stage in this block reorganized the tokens, so this block's keys no longer "
                         "match them; list tome before it");
    tome_mean_keys(work_.metric.data(), v.qkv, t, v.heads, head_dim);
    const TomePlan plan = tome_match(work_, t, r, s.prefix > 0, v.ledger);
    if (plan.r == 0) return;
    tome_merge(work_.merged.data(), work_.size_sum.data(), v.x, s.size.data(), plan.old_to_new, t, plan.new_count,
               v.dim);
    std::memcpy(v.x, work_.merged.data(), size_t(plan.new_count) * size_t(v.dim) * sizeof(float));
    s.remap(plan.old_to_new, plan.new_count);  // sizes add, merged tokens keep all their patches
    if (proportional_attention_) s.proportional_attention = true;
}

}  // namespace tessera
