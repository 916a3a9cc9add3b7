#include "stages/window_attention.h"


#include <algorithm>

#include "tessera/error.h"

namespace tessera {

WindowAttentionStage::WindowAttentionStage(YamlMap& params) : params_(params) {
    blocks_ = params.integers("blocks", {}, 0, 1 << 20);
    for (size_t i = 0; i < blocks_.size(); ++i)
        for (size_t j = 0; j < i; ++j)
            if (blocks_[i] == blocks_[j])
                params.error("blocks", "block " + std::to_string(blocks_[i]) + " is listed twice");
    if (params.has("blocks") && blocks_.empty())
        params.error("blocks", "must list at least one block (leave it out for blocks 1, 3, 5, ...)");
    window_ = params.integer("window", window_, 1, 1 << 12);
}

void WindowAttentionStage::check(const EncoderShape& shape) const {
    for (int b : blocks_)
        if (b >= shape.depth)
            params_.error("blocks", "block " + std::to_string(b) + " is past the encoder's depth " +
                                        std::to_string(shape.depth) + " (blocks 0.." +
                                        std::to_string(shape.depth - 1) + ")");
    if (shape.grid_h % window_ || shape.grid_w % window_)
        params_.error("window", "must divide both sides of the " + std::to_string(shape.grid_h) + "x" +
                                    std::to_string(shape.grid_w) + " patch grid, got " + std::to_string(window_));

    Buffers& b = buffers_;
    b.windowed.assign(size_t(shape.depth), false);
    if (blocks_.empty())  // alternate with dense blocks, the first one dense (see the header)
        for (int block = 1; block < shape.depth; block += 2) b.windowed[size_t(block)] = true;
    for (int block : blocks_) b.windowed[size_t(block)] = true;
    b.attention.init(shape.prefix, shape.grid_h, shape.grid_w, window_);
}

Signals WindowAttentionStage::signals(int block) const {
    Signals s;
    // Before check() sized the plan: called anyway, to fail saying so.
    const std::vector<bool>& acts = buffers_.windowed;
    s.attention = acts.empty() || (block >= 0 && block < int(acts.size()) && acts[size_t(block)]);
    return s;
}

bool WindowAttentionStage::encoder_attention(AttentionView& view) {
    Buffers& b = buffers_;
    if (b.windowed.empty()) fail(params_.file(), "window_attention: check() was not called before the forward pass");
    if (!b.windowed[size_t(view.block)]) return false;
    stage_require_intact_grid(view, name_, params_.file());

    b.attention.run(view.ledger, {view.qkv, view.out, view.tokens, view.heads, view.head_dim, view.scale,
                                  view.key_bias, view.cls_probs});
    return true;
}

}  // namespace tessera
