// DaViT's spatial half applied without training to chosen blocks of a plain
// ViT (METHODS.md section 5): non-overlapping w x w window attention. Patch
// queries attend to the tokens of their own window plus the prefix (CLS)
// tokens, which are always keys; the CLS query attends globally, so its row
// is the plain softmax row. No relative position bias (DaViT has none).
// DaViT's channel-group blocks and depthwise convolutions are trained parts
// with no counterpart in a pretrained ViT; the channel-group kernel lives in
// kernels/channel_attention.h.
//
//   stages:
//     - window_attention: {blocks: [1, 3, 5, 7, 9, 11], window: 7}
//
// Settings and defaults:
//   blocks  which blocks (0-based) use windows; default all of them, the
//           method as written. Measured on val1300 with ViT-Tiny (see
//           pipelines/window-*.yaml), windows in every block cost far more
//           accuracy than in alternate blocks, the training-free analogue of
//           DaViT's alternation (there a channel block restores global
//           mixing between spatial blocks).
//   window  w, patches per window side; default 7 (DaViT's 7x7 windows; a
//           14x14 grid at 224 gives 2x2 windows of 49 patches). w must
//           divide both grid sides. DaViT zero-pads the map to a multiple of
//           w after LN and does not mask the padding; in this hook the pad
//           tokens would be the projection of zeros (the qkv bias), which the
//           hook does not see, and they would be keys the pretrained model
//           never attended to, so an uneven grid is an error instead.
//
// MACs: the scores and value products over each window's keys (w^2 + CLS)
// and the CLS row's global ones.
#pragma once
#include <vector>

#include "io/yaml_map.h"
#include "kernels/gathered_attention.h"
#include "tessera/stage.h"

namespace tessera {

// The attention groups of window attention: group 0 is the prefix (CLS)
// queries with every token as a key (absent when prefix is 0); then one group
// per window, in raster order, whose queries are the window's tokens and
// whose keys are the prefix tokens followed by the window's tokens.
// window must divide both grid sides.
void window_groups(int prefix, int grid_h, int grid_w, int window, AttentionGroups& groups);

class WindowAttentionStage : public Stage {
public:
    explicit WindowAttentionStage(YamlMap& params);
    const std::string& name() const override { return name_; }
    void check(const EncoderShape& shape) const override;
    bool encoder_attention(AttentionView& view) override;

private:
    std::string name_ = "window_attention";
    YamlMap params_;
    std::vector<int> blocks_;  // empty: blocks 0, 2, 4, ...
    int window_ = 7;

    // Sized once by check() for the encoder's shape.
    struct Buffers {
        EncoderShape shape;
        std::vector<bool> windowed;  // [depth]
        AttentionGroups groups;
        std::vector<float> scratch;
        int slots = 0;
        int64_t slot_floats = 0;
    };
    mutable Buffers buffers_;
};

}  // namespace tessera
