// VTC-CLS (METHODS.md section 2): CLS-guided pruning of the visual tokens
// between a LLaVA vision tower and its projector. Score each token by the
// head-mean CLS attention summed over the tower's layers start_layer .. the
// feature layer; keep the `keep` best, in raster order; the decoder then sees
// only those (with contiguous positions). Only CLS rows are computed.
//
//   - vtc_cls: {keep: 64, start_layer: 16, positions: contiguous}
// positions: original is a variant that keeps each token's position from the
// full layout (as FastV does), for decoders that read layout from positions.
#pragma once
#include <vector>

#include "io/yaml_map.h"
#include "tessera/stage.h"

namespace tessera {

// The `keep` best scores (higher first, then the lower index), returned in
// ascending index order.
std::vector<int32_t> vtc_cls_select(const std::vector<double>& scores, int keep);

class VtcClsStage : public Stage {
public:
    explicit VtcClsStage(YamlMap& params);
    // A variant scoring with the feature layer's CLS row alone (FasterVLM).
    struct LastLayerOnly {};
    VtcClsStage(YamlMap& params, LastLayerOnly, std::string name);
    const std::string& name() const override { return name_; }
    void check(const EncoderShape& shape) const override;
    Signals signals(int block) const override;
    void encoder_after_attention(BlockView& view) override;
    void encoder_after_encoder(EncoderView& view) override;
    bool keeps_original_positions() const override { return original_positions_; }
    StageRoles roles() const override {
        StageRoles r;
        r.encoder = r.prunes_after_encoder = true;
        return r;
    }

    // The last image's ensembled scores over its non-prefix tokens (tests).
    const std::vector<double>& scores() const { return scores_; }

private:
    std::string name_ = "vtc_cls";
    YamlMap params_;
    int keep_ = 64;
    int start_layer_ = -1;  // -1: two thirds of the tower's depth
    bool last_layer_only_ = false;
    bool original_positions_ = false;  // positions: original (a variant; METHODS.md: contiguous)
    mutable int start_ = 0;
    std::vector<double> scores_;  // per current non-prefix token
    int scored_count_ = 0;        // token count the scores refer to
};

}  // namespace tessera
