#include "stages/window_attention.h"


#include <algorithm>

#include "tessera/error.h"

namespace tessera {

void window_groups(int prefix, int grid_h, int grid_w, int window, AttentionGroups& groups) {
    std::vector<int32_t> start, tokens;
    grid_cells(prefix, grid_h, grid_w, grid_h / window, grid_w / window, start, tokens);
    groups.query_start.assign(1, 0);
    groups.queries.clear();
    groups.key_start.assign(1, 0);
    groups.keys.clear();
    if (prefix > 0) {  // CLS attends globally
        for (int t = 0; t < prefix; ++t) groups.queries.push_back(t);
        for (int t = 0; t < prefix + grid_h * grid_w; ++t) groups.keys.push_back(t);
        groups.query_start.push_back(int32_t(groups.queries.size()));
        groups.key_start.push_back(int32_t(groups.keys.size()));
    }
    for (size_t w = 0; w + 1 < start.size(); ++w) {
        groups.queries.insert(groups.queries.end(), tokens.begin() + start[w], tokens.begin() + start[w + 1]);
        for (int t = 0; t < prefix; ++t) groups.keys.push_back(t);
        groups.keys.insert(groups.keys.end(), tokens.begin() + start[w], tokens.begin() + start[w + 1]);
        groups.query_start.push_back(int32_t(groups.queries.size()));
        groups.key_start.push_back(int32_t(groups.keys.size()));
    }
}

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
    b.shape = shape;
    b.windowed.assign(size_t(shape.depth), false);
    if (blocks_.empty())  // alternate with dense blocks, the first one dense (see the header)
        for (int block = 1; block < shape.depth; block += 2) b.windowed[size_t(block)] = true;
    for (int block : blocks_) b.windowed[size_t(block)] = true;
    window_groups(shape.prefix, shape.grid_h, shape.grid_w, window_, b.attention.groups);
    b.attention.size_scratch(gathered_attention_slot_floats(b.attention.groups));
}

bool WindowAttentionStage::encoder_attention(AttentionView& view) {
    Buffers& b = buffers_;
    if (b.windowed.empty()) fail(params_.file(), "window_attention: check() was not called before the forward pass");
    if (!b.windowed[size_t(view.block)]) return false;
    stage_require_intact_grid(view, name_, params_.file());

    GatheredAttentionArgs args;
    args.qkv = view.qkv, args.out = view.out;
    args.tokens = view.tokens, args.heads = view.heads, args.head_dim = view.head_dim;
    args.scale = view.scale;
    args.key_bias = view.key_bias, args.cls_probs = view.cls_probs;
    b.attention.bind(args);
    gathered_attention(view.ledger, args);
    return true;
}

}  // namespace tessera
