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
//   blocks  which blocks (0-based) use windows; default every other block
//           from block 1 (1, 3, 5, ...). DaViT pairs each spatial (window)
//           block with a channel block that mixes globally; here the dense
//           blocks between play that part. Which half gets the windows was
//           measured, full val1300, window 7 (ViT-Tiny / DeiT-Tiny top-1;
//           baselines 82.62% / 81.62% at 1.254 GMACs):
//             blocks 1, 3, ..., 11   1.187 GMACs   78.31% / 79.00%
//             blocks 0, 2, ..., 10   1.187 GMACs   79.08% / 75.46%
//             all 12                 1.121 GMACs   75.77% / 71.54%
//           Windows from block 1 lose 3.5 points on average, from block 0
//           4.9 (DeiT-Tiny's first block needs its global attention).
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
#include "kernels/grid_attention.h"
#include "tessera/stage.h"

namespace tessera {

class WindowAttentionStage : public Stage {
public:
    explicit WindowAttentionStage(YamlMap& params);
    const std::string& name() const override { return name_; }
    void check(const EncoderShape& shape) const override;
    Signals signals(int block) const override;
    bool encoder_attention(AttentionView& view) override;

private:
    std::string name_ = "window_attention";
    YamlMap params_;
    std::vector<int> blocks_;  // empty: blocks 1, 3, 5, ...
    int window_ = 7;

    // Sized once by check() for the encoder's shape.
    struct Buffers {
        std::vector<bool> windowed;  // [depth]
        WindowedAttention attention;
    };
    mutable Buffers buffers_;
};

}  // namespace tessera
