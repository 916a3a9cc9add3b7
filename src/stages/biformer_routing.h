// BiFormer's bi-level routing attention (BRA) applied without training to
// chosen blocks of a plain ViT (METHODS.md section 4, "Training-free use").
// The stage replaces the attention kernel of those blocks:
//
//   1. split the patch grid into S x S regions;
//   2. Q_r, K_r = means of the block's own q and k over each region's tokens,
//      full width C (all heads together, not per head);
//   3. A_r = Q_r K_r^T (S^2 x S^2); each query region keeps the top-k key
//      regions (its own region is not forced in; ties go to the lower index);
//   4. per head, every patch query of a region attends to the tokens of its
//      routed regions plus the prefix (CLS) tokens, which are always keys;
//      the CLS query attends globally, so its row is the plain softmax row.
//
// BRA's local context enhancement (a trained depthwise 5x5 convolution of V)
// has no counterpart in a pretrained ViT and is left out.
//
//   stages:
//     - biformer_routing: {blocks: [6, 7, 8, 9, 10, 11], regions: 7, topk: 16, scale: head}
//
// Settings and defaults:
//   blocks   which blocks (0-based) route; default the second half of the
//            encoder (blocks depth/2 .. depth-1; 6-11 for a 12-block ViT),
//            the best measured trade-off. Full val1300, topk 16, points of
//            top-1 lost per GMAC saved (ViT-Tiny / DeiT-Tiny; baselines
//            82.62% / 81.62% at 1.254 GMACs):
//              blocks 6-11   -0.057 GMACs   -0.62 / -1.85 pts   11 / 32 per GMAC
//              blocks 4-11   -0.076 GMACs   -2.47 / -3.31 pts   33 / 44
//              blocks 0-7    -0.076 GMACs   -2.93 / -4.39 pts   39 / 58
//              all 12        -0.114 GMACs   -3.47 / -6.54 pts   30 / 57
//            Early blocks cost more accuracy than late ones for the same saving.
//   regions  S, regions per grid side; default 7 (METHODS.md: S = 7 at 224).
//            On a 14x14 grid a region is 2x2 patches. When S does not divide
//            a grid side, regions split it as evenly as possible (sides differ
//            by one; region means are over the real tokens). The official code
//            zero-pads the map to a multiple of S instead, which on a
//            pretrained ViT would invent tokens the model never saw. More
//            regions than patches per side is an error.
//   topk     key regions per query region; default 16. BiFormer's top-k is
//            (1, 4, 16) for stages 1-3 so that every query sees 64 keys at
//            224; a /16 ViT's 14x14 map is BiFormer's stage-3 map, where
//            top-k is 16 (16 regions x 4 patches = 64 keys, plus CLS).
//            Measured (ViT-Tiny, all blocks): topk 4 gives 51.23% top-1,
//            topk 16 gives 79.15%.
//   scale    `head`: head_dim^-1/2, what a pretrained ViT was trained with
//            (default); `channel`: C^-1/2, the released BiFormer models'
//            quirk (METHODS.md pitfall 3), which on a pretrained ViT flattens
//            every softmax (ViT-Tiny, all blocks, topk 16: 58.46% top-1).
//
// MACs: the region affinity (S^4 C) and the scores and value products over
// the routed keys only; region means and top-k are elementwise work.
#pragma once
#include <vector>

#include "io/yaml_map.h"
#include "kernels/grid_attention.h"
#include "tessera/stage.h"

namespace tessera {

class BiformerRoutingStage : public Stage {
public:
    explicit BiformerRoutingStage(YamlMap& params);
    const std::string& name() const override { return name_; }
    void check(const EncoderShape& shape) const override;
    Signals signals(int block) const override;
    bool encoder_attention(AttentionView& view) override;

    // The routing plan of the last block this stage ran, [regions^2, topk].
    const std::vector<int32_t>& last_plan() const { return buffers_.attention.plan(); }

private:
    std::string name_ = "biformer_routing";
    YamlMap params_;
    std::vector<int> blocks_;  // empty: the second half of the encoder
    int regions_ = 7, topk_ = 16;
    bool channel_scale_ = false;

    // Sized once by check() for the encoder's shape.
    struct Buffers {
        std::vector<bool> routed;  // [depth]
        RoutedAttention attention;
    };
    mutable Buffers buffers_;
};

}  // namespace tessera
