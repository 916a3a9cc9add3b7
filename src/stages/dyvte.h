// DyVTE (METHODS.md section 3): dynamic visual-token exit in the language
// decoder. After each decoder layer l of prefill, while no exit has
// happened, a router reads
//   f = [mean of the text states after the image (last prompt token
//        excluded), state of the last prompt token]          (2 C)
// and exits iff logits[1] > logits[0], logits = W2 GELU(W1 f) (no biases).
// On exit every visual token leaves the sequence: layers after l run on the
// text alone (which keeps its positions) and cache no visual keys; layers up
// to l keep theirs. Decoding steps do not consult the router.
//
//   - dyvte: {}                              # the model folder's dyvte_router.safetensors
//   - dyvte: {router: other.safetensors}     # relative to the model folder
//   - dyvte: {exit_layer: 2}                 # training-free: always exit after layer 2
//
// The router file holds w1 [2048, 2 C] and w2 [2, 2048] (any float dtype);
// tools/train_dyvte.py trains one with the paper's recipe. The router's
// products go through the ledger (booked to this stage).
#pragma once
#include <vector>

#include "io/yaml_map.h"
#include "tessera/stage.h"

namespace tessera {

// The router's decision for one feature vector f [2 C]: logits [2].
// hidden: [w1 rows] scratch.
void dyvte_router_logits(Ledger* ledger, const float* f, const float* w1, const float* w2, int64_t width,
                         int64_t hidden_width, float* hidden, float* logits);

// f [2 C] from a prefill sequence x [tokens, C] whose image ends at row
// image_end: the mean of rows image_end .. tokens - 2 (zeros when none) and
// row tokens - 1.
void dyvte_features(const float* x, int64_t tokens, int64_t c, int64_t image_end, float* f);

class DyvteStage : public Stage {
public:
    explicit DyvteStage(YamlMap& params);
    const std::string& name() const override { return name_; }
    StageRoles roles() const override {
        StageRoles r;
        r.decoder = r.drops_decoder_tokens = true;
        return r;
    }
    void check_decoder(const DecoderShape& shape) const override;
    void begin_request() override { exit_layer_ = -1; }
    void decoder_after_layer(DecoderLayerView& view) override;

    // Layer after which the visual tokens left in the last request, or -1.
    int exit_layer() const { return exit_layer_; }

private:
    std::string name_ = "dyvte";
    YamlMap params_;
    std::string router_file_;  // "" with a fixed exit
    int fixed_exit_ = -1;
    int exit_layer_ = -1;
    mutable int layers_ = 0;
    mutable int64_t width_ = 0, hidden_width_ = 0;
    mutable std::vector<float> w1_, w2_, f_, hidden_;
};

}  // namespace tessera
