// Attention restricted by the patch grid, shared by the trained towers that
// have it in their architecture (models/vit.cpp) and by the training-free
// stages that graft it onto a plain ViT (stages/biformer_routing,
// stages/window_attention):
//
//   RoutedAttention    BiFormer's bi-level routing attention (METHODS.md 4):
//                      region means of q and k at full width, A_r = Q_r K_r^T,
//                      each query region reads its top-k key regions;
//   WindowedAttention  DaViT's non-overlapping w x w windows (METHODS.md 5);
//   grid_depthwise_conv_add  BiFormer's local context enhancement (LCE): a
//                      depthwise k x k convolution of V over the grid.
//
// In both attentions the prefix (CLS) queries attend globally and the prefix
// tokens are keys of every group. Keys and values are read in place through
// index lists (gathered_attention.h).
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/gathered_attention.h"

namespace tessera {

// Q_r, K_r [regions, dim]: means of q (columns 0..dim) and k (columns
// dim..2 dim) of qkv [tokens, 3 dim] over each region's tokens
// (region_tokens[region_start[r] .. region_start[r + 1])).
void routing_region_means(const float* qkv, int64_t dim, const int32_t* region_start, const int32_t* region_tokens,
                          int64_t regions, float* q_r, float* k_r);

// A_r [regions, regions] = Q_r K_r^T; adds regions^2 * dim MACs.
void routing_affinity(Ledger* ledger, const float* q_r, const float* k_r, int64_t regions, int64_t dim, float* a_r);

// plan [regions, topk]: for each query region, the topk key regions with the
// largest affinity, largest first, ties to the lower index. order: [regions].
void routing_topk(const float* a_r, int regions, int topk, int32_t* plan, int32_t* order);

// The attention groups BRA runs over. Group 0 is the prefix (CLS) queries
// with every token as a key (absent when prefix is 0); then one group per
// region whose queries are the region's tokens and whose keys are the prefix
// tokens followed by the tokens of its routed regions in plan order. The
// key lists of the region groups are left empty: routing_key_lists fills
// them, without allocating, once a plan exists.
void routing_groups_init(int prefix, int tokens, const std::vector<int32_t>& region_start,
                         const std::vector<int32_t>& region_tokens, int topk, AttentionGroups& groups);
void routing_key_lists(const int32_t* plan, int topk, int prefix, const std::vector<int32_t>& region_start,
                       const std::vector<int32_t>& region_tokens, AttentionGroups& groups);

// The attention groups of window attention: group 0 is the prefix (CLS)
// queries with every token as a key (absent when prefix is 0); then one group
// per window, in raster order, whose queries are the window's tokens and
// whose keys are the prefix tokens followed by the window's tokens.
// window must divide both grid sides.
void window_groups(int prefix, int grid_h, int grid_w, int window, AttentionGroups& groups);

// One grid-attention call: the fields of GatheredAttentionArgs that do not
// describe the groups.
struct GridAttentionCall {
    const float* qkv = nullptr;  // [tokens, 3 * heads * head_dim]
    float* out = nullptr;        // [tokens, heads * head_dim]
    int64_t tokens = 0, heads = 0, head_dim = 0;
    float scale = 0.0f;
    const float* key_bias = nullptr;  // [tokens] or null
    float* cls_probs = nullptr;       // [heads, tokens] or null
};

// BRA with its buffers sized once by init(); run() allocates nothing.
class RoutedAttention {
public:
    // regions: S, regions per grid side (at most the shorter side; uneven
    // splits follow grid_cells); topk in 1..S^2.
    void init(int prefix, int grid_h, int grid_w, int dim, int regions, int topk);
    void run(Ledger* ledger, const GridAttentionCall& call);
    // The routing plan of the last run, [regions^2, topk].
    const std::vector<int32_t>& plan() const { return plan_; }

private:
    int prefix_ = 0, topk_ = 0;
    int64_t dim_ = 0;
    std::vector<int32_t> region_start_, region_tokens_;
    std::vector<float> q_r_, k_r_, a_r_;  // [R, C], [R, C], [R, R]
    std::vector<int32_t> plan_, order_;   // [R, topk], [R]
    GatheredAttentionPlan attention_;
};

// Window attention with its groups built once by init().
class WindowedAttention {
public:
    void init(int prefix, int grid_h, int grid_w, int window);  // window divides both sides
    void run(Ledger* ledger, const GridAttentionCall& call);

private:
    GatheredAttentionPlan attention_;
};

// dst[prefix + p, c] += bias[c] + sum over the kernel x kernel neighbourhood
// of patch p of weight[c, dy, dx] * src[prefix + q, c], zero outside the
// grid (padding kernel / 2). src rows have stride src_stride floats, dst rows
// dst_stride; prefix rows are not touched. Adds grid * channels * kernel^2 MACs.
void grid_depthwise_conv_add(Ledger* ledger, const float* src, int64_t src_stride, float* dst, int64_t dst_stride,
                             int prefix, int grid_h, int grid_w, int64_t channels, const float* weight,
                             const float* bias, int kernel);

}  // namespace tessera
