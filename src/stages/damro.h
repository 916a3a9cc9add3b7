// DAMRO (METHODS.md section 6): outlier visual tokens and contrastive
// decoding against them.
//
// Outliers, at the encoder's feature layer (the last block the tower runs):
// from that block's q and k projections (with bias), ONE single-head
// full-width attention row P = softmax(q_CLS K^T C^-1/2) (not the head-mean
// of per-head maps); the k patch tokens with the largest P are the outliers.
//
// Decoding: a second stream whose prompt holds only the outlier tokens
// (contiguous positions, its own cache) runs alongside; each step samples
// from z~ = (1 + alpha) z - alpha z_o, with z~_y = -inf wherever
// z_y < log(beta) + max z (the plausibility cut), greedy or sampled.
//
//   - damro: {k: 10, alpha: 2, beta: 0.1}
//
// Cost: a second prefill of k visual tokens plus the text, and a second
// decoder step per generated token (both in the ledger).
#pragma once
#include <vector>

#include "io/yaml_map.h"
#include "tessera/stage.h"

namespace tessera {

// P [tokens] from qkv [tokens, 3 C] (q | k | v, CLS at row 0), and the k
// non-prefix tokens with the largest P, ascending, in outliers. Adds C x
// tokens MACs.
void damro_outliers(Ledger* ledger, const float* qkv, int64_t tokens, int64_t c, int prefix, int k, float* p,
                    std::vector<int32_t>& outliers);

class DamroStage : public Stage {
public:
    explicit DamroStage(YamlMap& params);
    const std::string& name() const override { return name_; }
    StageRoles roles() const override {
        StageRoles r;
        r.encoder = r.decoder = r.contrastive = true;
        return r;
    }
    void check(const EncoderShape& shape) const override;
    Signals signals(int block) const override {
        Signals s;
        s.after_attention = block == feature_block_;
        return s;
    }
    void encoder_after_attention(BlockView& view) override;
    const ContrastiveDecoding* contrastive_decoding() const override { return found_ ? &contrast_ : nullptr; }

    // The last image's attention row P over its tokens (tests).
    const std::vector<float>& attention() const { return p_; }

private:
    std::string name_ = "damro";
    YamlMap params_;
    int k_ = 10;
    mutable int feature_block_ = -1;
    bool found_ = false;
    std::vector<float> p_;
    std::vector<int32_t> tokens_;
    ContrastiveDecoding contrast_;
};

}  // namespace tessera
