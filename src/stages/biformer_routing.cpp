#include "stages/biformer_routing.h"


#include <algorithm>
#include <cmath>

#include "tessera/error.h"

namespace tessera {

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

    buffers_.routed.assign(size_t(shape.depth), false);
    if (blocks_.empty())  // the second half of the encoder: the measured trade-off (see the header)
        for (int block = shape.depth / 2; block < shape.depth; ++block) buffers_.routed[size_t(block)] = true;
    for (int block : blocks_) buffers_.routed[size_t(block)] = true;
    buffers_.attention.init(shape.prefix, shape.grid_h, shape.grid_w, shape.dim, regions_, topk_);
}

Signals BiformerRoutingStage::signals(int block) const {
    Signals s;
    // Before check() sized the plan: called anyway, to fail saying so.
    const std::vector<bool>& acts = buffers_.routed;
    s.attention = acts.empty() || (block >= 0 && block < int(acts.size()) && acts[size_t(block)]);
    return s;
}

bool BiformerRoutingStage::encoder_attention(AttentionView& view) {
    Buffers& b = buffers_;
    if (b.routed.empty()) fail(params_.file(), "biformer_routing: check() was not called before the forward pass");
    if (!b.routed[size_t(view.block)]) return false;
    stage_require_intact_grid(view, name_, params_.file());

    GridAttentionCall call{view.qkv, view.out, view.tokens, view.heads, view.head_dim, view.scale, view.key_bias,
                           view.cls_probs};
    if (channel_scale_) call.scale = 1.0f / std::sqrt(float(view.heads * view.head_dim));
    b.attention.run(view.ledger, call);
    return true;
}

}  // namespace tessera
