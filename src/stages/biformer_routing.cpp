#include "stages/biformer_routing.h"


#include <algorithm>
#include <cassert>
#include <cmath>

#include "kernels/gemm.h"
#include "tessera/error.h"

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

void routing_groups_init(int prefix, int tokens, const std::vector<int32_t>& region_start,
                         const std::vector<int32_t>& region_tokens, int topk, AttentionGroups& groups) {
    const int regions = int(region_start.size()) - 1;
    int largest = 0;
    for (int r = 0; r < regions; ++r)
        largest = std::max(largest, region_start[size_t(r + 1)] - region_start[size_t(r)]);
    groups.query_start.assign(1, 0);
    groups.queries.clear();
    groups.key_start.assign(1, 0);
    groups.keys.clear();
    if (prefix > 0) {  // CLS attends globally
        for (int t = 0; t < prefix; ++t) groups.queries.push_back(t);
        for (int t = 0; t < tokens; ++t) groups.keys.push_back(t);
        groups.query_start.push_back(int32_t(groups.queries.size()));
        groups.key_start.push_back(int32_t(groups.keys.size()));
    }
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

BiformerRoutingStage::BiformerRoutingStage(YamlMap& params) : params_(params) {
    blocks_ = params.integers("blocks", {}, 0, 1 << 20);
    for (size_t i = 0; i < blocks_.size(); ++i)
        for (size_t j = 0; j < i; ++j)
            if (blocks_[i] == blocks_[j])
                params.error("blocks", "block " + std::to_string(blocks_[i]) + " is listed twice");
    if (params.has("blocks") && blocks_.empty())
        params.error("blocks", "must list at least one block (leave it out for the second half)");
    regions_ = params.integer("regions", regions_, 1, 1 << 12);
    topk_ = params.integer("topk", topk_, 1, 1 << 24);
    if (topk_ > regions_ * regions_)
        params.error("topk", "must be at most regions^2 = " + std::to_string(regions_ * regions_) + ", got " +
                                 std::to_string(topk_));
    const std::string scale = params.string("scale", "head");
    if (scale != "head" && scale != "channel")
        params.error("scale", "must be 'head' or 'channel', got '" + scale + "'");
    channel_scale_ = scale == "channel";
}

void BiformerRoutingStage::check(const EncoderShape& shape) const {
    for (int b : blocks_)
        if (b >= shape.depth)
            params_.error("blocks", "block " + std::to_string(b) + " is past the encoder's depth " +
                                        std::to_string(shape.depth) + " (blocks 0.." +
                                        std::to_string(shape.depth - 1) + ")");
    const int side = std::min(shape.grid_h, shape.grid_w);
    if (regions_ > side)
        params_.error("regions", "must be at most the patch grid's shorter side " + std::to_string(side) + " (grid " +
                                     std::to_string(shape.grid_h) + "x" + std::to_string(shape.grid_w) + "), got " +
                                     std::to_string(regions_));

    Buffers& b = buffers_;
    b.shape = shape;
    b.routed.assign(size_t(shape.depth), false);
    if (blocks_.empty())  // the second half of the encoder: the measured trade-off (see the header)
        for (int block = shape.depth / 2; block < shape.depth; ++block) b.routed[size_t(block)] = true;
    for (int block : blocks_) b.routed[size_t(block)] = true;
    grid_cells(shape.prefix, shape.grid_h, shape.grid_w, regions_, regions_, b.region_start, b.region_tokens);
    const int64_t r = int64_t(regions_) * regions_, c = shape.dim;
    b.q_r.assign(size_t(r * c), 0.0f);
    b.k_r.assign(size_t(r * c), 0.0f);
    b.a_r.assign(size_t(r * r), 0.0f);
    b.plan.assign(size_t(r * topk_), 0);
    b.order.assign(size_t(r), 0);
    routing_groups_init(shape.prefix, shape.tokens(), b.region_start, b.region_tokens, topk_, b.attention.groups);
    // The largest score tile: the CLS row over every token, or a region's
    // queries over CLS and topk regions.
    int64_t largest = 0;
    for (int64_t i = 0; i < r; ++i)
        largest = std::max<int64_t>(largest, b.region_start[size_t(i + 1)] - b.region_start[size_t(i)]);
    b.attention.size_scratch(std::max<int64_t>(int64_t(shape.prefix) * shape.tokens(),
                                               largest * (shape.prefix + topk_ * largest)));
}

bool BiformerRoutingStage::encoder_attention(AttentionView& view) {
    Buffers& b = buffers_;
    if (b.routed.empty()) fail(params_.file(), "biformer_routing: check() was not called before the forward pass");
    if (!b.routed[size_t(view.block)]) return false;
    stage_require_intact_grid(view, name_, params_.file());

    // Region level: which key regions each query region reads.
    const int64_t regions = int64_t(regions_) * regions_, c = int64_t(view.heads) * view.head_dim;
    routing_region_means(view.qkv, c, b.region_start.data(), b.region_tokens.data(), regions, b.q_r.data(),
                         b.k_r.data());
    routing_affinity(view.ledger, b.q_r.data(), b.k_r.data(), regions, c, b.a_r.data());
    routing_topk(b.a_r.data(), int(regions), topk_, b.plan.data(), b.order.data());
    routing_key_lists(b.plan.data(), topk_, view.state->prefix, b.region_start, b.region_tokens, b.attention.groups);

    // Token level: attention over the routed keys, read in place.
    GatheredAttentionArgs args;
    args.qkv = view.qkv, args.out = view.out;
    args.tokens = view.tokens, args.heads = view.heads, args.head_dim = view.head_dim;
    args.scale = channel_scale_ ? 1.0f / std::sqrt(float(c)) : view.scale;
    args.key_bias = view.key_bias, args.cls_probs = view.cls_probs;
    b.attention.bind(args);
    gathered_attention(view.ledger, args);
    return true;
}

}  // namespace tessera
