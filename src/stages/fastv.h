// FastV (a peer, METHODS.md "Peers"): inside the decoder at layer K, rank
// the visual tokens by the last prompt token's head-mean attention in layer
// K - 1 and keep the top (1 - R) share for layers K onwards; the kept tokens
// stay in raster order at their original positions (a gap where the others
// were). Layers before K see every visual token.
//
//   - fastv: {layer: 2, ratio: 0.5}
//
// Kept tokens: floor((1 - R) x visual tokens), as the official code's
// int(image_token_length * (1 - ratio)); ties go to the lower index.
#pragma once
#include <vector>

#include "io/yaml_map.h"
#include "tessera/stage.h"

namespace tessera {

// Visual tokens [0, image_count) with the largest head-mean attention of the
// last query (attention: [heads, keys], image at keys image_start ..),
// `keep` of them in ascending order into out.
void fastv_select(const float* attention, int heads, int64_t keys, int64_t image_start, int64_t image_count,
                  int64_t keep, int32_t* out);

class FastvStage : public Stage {
public:
    explicit FastvStage(YamlMap& params);
    const std::string& name() const override { return name_; }
    StageRoles roles() const override {
        StageRoles r;
        r.decoder = r.drops_decoder_tokens = true;
        return r;
    }
    void check_decoder(const DecoderShape& shape) const override;
    DecoderSignals decoder_signals(int layer) const override;
    void decoder_after_layer(DecoderLayerView& view) override;

private:
    std::string name_ = "fastv";
    YamlMap params_;
    int layer_ = 2;
    double ratio_ = 0.5;
};

}  // namespace tessera
