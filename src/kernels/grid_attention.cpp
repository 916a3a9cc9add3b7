#include "kernels/grid_attention.h"

#include <algorithm>
#include <cassert>
#include <cmath>

#include "kernels/gemm.h"

namespace tessera {

void routing_region_means(const float* qkv, int64_t dim, const int32_t* region_start, const int32_t* region_tokens,
                          int64_t regions, float* q_r, float* k_r) {
    const int64_t row = 3 * dim;
    for (int64_t r = 0; r < regions; ++r) {
        float* qm = q_r + r * dim;
        float* km = k_r + r * dim;
        std::fill(qm, qm + dim, 0.0f);
        std::fill(km, km + dim, 0.0f);
        for (int32_t i = region_start[r]; i < region_start[r + 1]; ++i) {
            const float* t = qkv + int64_t(region_tokens[i]) * row;
            for (int64_t c = 0; c < dim; ++c) qm[c] += t[c];
            for (int64_t c = 0; c < dim; ++c) km[c] += t[dim + c];
        }
        const float inv = 1.0f / float(region_start[r + 1] - region_start[r]);
        for (int64_t c = 0; c < dim; ++c) qm[c] *= inv, km[c] *= inv;
    }
}

void routing_affinity(Ledger* ledger, const float* q_r, const float* k_r, int64_t regions, int64_t dim, float* a_r) {
    GemmDesc d;
    d.m = regions, d.k = dim, d.n = regions;
    d.a_stride[0] = regions * dim, d.a_stride[1] = dim, d.a_stride[2] = 1;
    d.b_stride[0] = regions * dim, d.b_stride[1] = 1, d.b_stride[2] = dim;  // K_r^T read in place
    d.c_stride[0] = regions * regions, d.c_stride[1] = regions, d.c_stride[2] = 1;
    gemm(ledger, d, q_r, k_r, nullptr, a_r);
}

void routing_topk(const float* a_r, int regions, int topk, int32_t* plan, int32_t* order) {
    assert(topk >= 1 && topk <= regions);
    for (int r = 0; r < regions; ++r) {
        const float* row = a_r + int64_t(r) * regions;
        for (int j = 0; j < regions; ++j) order[j] = j;
        std::partial_sort(order, order + topk, order + regions,
                          [row](int32_t a, int32_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
        std::copy(order, order + topk, plan + int64_t(r) * topk);
    }
}

namespace {

// Empties groups and, when there is a prefix, adds its group: the prefix
// (CLS) queries attend globally, to all `tokens` keys.
void groups_start_with_prefix(int prefix, int tokens, AttentionGroups& groups) {
    groups.query_start.assign(1, 0);
    groups.queries.clear();
    groups.key_start.assign(1, 0);
    groups.keys.clear();
    if (prefix == 0) return;
    for (int t = 0; t < prefix; ++t) groups.queries.push_back(t);
    for (int t = 0; t < tokens; ++t) groups.keys.push_back(t);
    groups.query_start.push_back(int32_t(groups.queries.size()));
    groups.key_start.push_back(int32_t(groups.keys.size()));
}

}  // namespace

void routing_groups_init(int prefix, int tokens, const std::vector<int32_t>& region_start,
                         const std::vector<int32_t>& region_tokens, int topk, AttentionGroups& groups) {
    const int regions = int(region_start.size()) - 1;
    int largest = 0;
    for (int r = 0; r < regions; ++r)
        largest = std::max(largest, region_start[size_t(r + 1)] - region_start[size_t(r)]);
    groups_start_with_prefix(prefix, tokens, groups);
    for (int r = 0; r < regions; ++r) {
        groups.queries.insert(groups.queries.end(), region_tokens.begin() + region_start[size_t(r)],
                              region_tokens.begin() + region_start[size_t(r + 1)]);
        groups.query_start.push_back(int32_t(groups.queries.size()));
        groups.key_start.push_back(groups.key_start.back());  // filled by routing_key_lists
    }
    // Room for the longest possible key lists, so routing never allocates.
    groups.keys.resize(groups.keys.size() + size_t(regions) * size_t(prefix + topk * largest));
}

void routing_key_lists(const int32_t* plan, int topk, int prefix, const std::vector<int32_t>& region_start,
                       const std::vector<int32_t>& region_tokens, AttentionGroups& groups) {
    const int regions = int(region_start.size()) - 1;
    const int first = int(groups.groups()) - regions;  // the prefix group, if any, comes first
    int32_t* keys = groups.keys.data();
    int32_t at = groups.key_start[size_t(first)];
    for (int r = 0; r < regions; ++r) {
        for (int t = 0; t < prefix; ++t) keys[at++] = t;
        for (int i = 0; i < topk; ++i) {
            const int kr = plan[int64_t(r) * topk + i];
            for (int32_t j = region_start[size_t(kr)]; j < region_start[size_t(kr + 1)]; ++j)
                keys[at++] = region_tokens[size_t(j)];
        }
        assert(size_t(at) <= groups.keys.size());
        groups.key_start[size_t(first + r + 1)] = at;
    }
}

void window_groups(int prefix, int grid_h, int grid_w, int window, AttentionGroups& groups) {
    std::vector<int32_t> start, tokens;
    grid_cells(prefix, grid_h, grid_w, grid_h / window, grid_w / window, start, tokens);
    groups_start_with_prefix(prefix, prefix + grid_h * grid_w, groups);
    for (size_t w = 0; w + 1 < start.size(); ++w) {
        groups.queries.insert(groups.queries.end(), tokens.begin() + start[w], tokens.begin() + start[w + 1]);
        for (int t = 0; t < prefix; ++t) groups.keys.push_back(t);
        groups.keys.insert(groups.keys.end(), tokens.begin() + start[w], tokens.begin() + start[w + 1]);
        groups.query_start.push_back(int32_t(groups.queries.size()));
        groups.key_start.push_back(int32_t(groups.keys.size()));
    }
}

namespace {

void run_groups(Ledger* ledger, const GridAttentionCall& call, GatheredAttentionPlan& plan) {
    GatheredAttentionArgs args;
    args.qkv = call.qkv, args.out = call.out;
    args.tokens = call.tokens, args.heads = call.heads, args.head_dim = call.head_dim;
    args.scale = call.scale, args.key_bias = call.key_bias, args.cls_probs = call.cls_probs;
    plan.bind(args);
    gathered_attention(ledger, args);
}

}  // namespace

void RoutedAttention::init(int prefix, int grid_h, int grid_w, int dim, int regions, int topk) {
    prefix_ = prefix, topk_ = topk, dim_ = dim;
    grid_cells(prefix, grid_h, grid_w, regions, regions, region_start_, region_tokens_);
    const int64_t r = int64_t(regions) * regions;
    q_r_.assign(size_t(r * dim), 0.0f);
    k_r_.assign(size_t(r * dim), 0.0f);
    a_r_.assign(size_t(r * r), 0.0f);
    plan_.assign(size_t(r * topk), 0);
    order_.assign(size_t(r), 0);
    routing_groups_init(prefix, prefix + grid_h * grid_w, region_start_, region_tokens_, topk, attention_.groups);
    // The largest score tile: the CLS row over every token, or a region's
    // queries over CLS and topk regions.
    int64_t largest = 0;
    for (int64_t i = 0; i < r; ++i)
        largest = std::max<int64_t>(largest, region_start_[size_t(i + 1)] - region_start_[size_t(i)]);
    attention_.size_scratch(std::max<int64_t>(int64_t(prefix) * (prefix + grid_h * grid_w),
                                              largest * (prefix + topk * largest)));
}

void RoutedAttention::run(Ledger* ledger, const GridAttentionCall& call) {
    assert(call.heads * call.head_dim == dim_);
    // Region level: which key regions each query region reads.
    const int64_t regions = int64_t(region_start_.size()) - 1;
    routing_region_means(call.qkv, dim_, region_start_.data(), region_tokens_.data(), regions, q_r_.data(),
                         k_r_.data());
    routing_affinity(ledger, q_r_.data(), k_r_.data(), regions, dim_, a_r_.data());
    routing_topk(a_r_.data(), int(regions), topk_, plan_.data(), order_.data());
    routing_key_lists(plan_.data(), topk_, prefix_, region_start_, region_tokens_, attention_.groups);

    run_groups(ledger, call, attention_);  // token level: attention over the routed keys, read in place
}

void WindowedAttention::init(int prefix, int grid_h, int grid_w, int window) {
    window_groups(prefix, grid_h, grid_w, window, attention_.groups);
    attention_.size_scratch(gathered_attention_slot_floats(attention_.groups));
}

void WindowedAttention::run(Ledger* ledger, const GridAttentionCall& call) { run_groups(ledger, call, attention_); }

void grid_depthwise_conv_add(Ledger* ledger, const float* src, int64_t src_stride, float* dst, int64_t dst_stride,
                             int prefix, int grid_h, int grid_w, int64_t channels, const float* weight,
                             const float* bias, int kernel) {
    const int pad = kernel / 2;
#pragma omp parallel for schedule(static)
    for (int y = 0; y < grid_h; ++y)
        for (int x = 0; x < grid_w; ++x) {
            float* o = dst + (prefix + int64_t(y) * grid_w + x) * dst_stride;
            for (int64_t c = 0; c < channels; ++c) o[c] += bias ? bias[c] : 0.0f;
            for (int dy = 0; dy < kernel; ++dy) {
                const int sy = y + dy - pad;
                if (sy < 0 || sy >= grid_h) continue;
                for (int dx = 0; dx < kernel; ++dx) {
                    const int sx = x + dx - pad;
                    if (sx < 0 || sx >= grid_w) continue;
                    const float* s = src + (prefix + int64_t(sy) * grid_w + sx) * src_stride;
                    const int tap = dy * kernel + dx;
                    for (int64_t c = 0; c < channels; ++c) o[c] += weight[c * kernel * kernel + tap] * s[c];
                }
            }
        }
    if (ledger) ledger->add(uint64_t(grid_h) * grid_w * uint64_t(channels) * uint64_t(kernel) * kernel);
}

}  // namespace tessera
