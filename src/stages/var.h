// VAR (METHODS.md section 7): visual attention redistribution in the
// language decoder, training-free.
//
// Sinks, once in prefill: on the input hidden state x of each decoder layer
// l in first_layer .. L-1, phi(x_t) = max over d in D_sink of
// |x_t,d / sqrt(mean(x_t^2) + 1e-6)| (RMS-normalized, no learned weight);
// token t is a sink at layer l when phi > tau. D_sink, the model's
// massive-activation dimensions, comes from `tessera analyze sinks` (written
// to the model folder as var_sinks.json) or from the YAML.
//
// Redistribution in layers first_layer .. L-2 (the last is skipped), for
// every head and every query after the image in prefill, and the new query
// of each decoding step, on the post-softmax row A:
//   S_img   = sum of A over image keys
//   portion = (A on visual sinks) / (S_img + 1e-6)
//   selected iff portion <= rho and S_img >= min_image_attention
//   every sink key j (visual and text) keeps p * A_j; the freed
//   (1 - p) * (sum of sink attention) goes to the visual non-sink keys in
//   proportion to their attention. The row still sums to 1.
// Layers without visual sinks select nothing.
//
//   - var: {}                                   # var_sinks.json beside the model
//   - var: {sink_dims: [2533, 1415], tau: 20, rho: 0.5, p: 0.6, min_image_attention: 0.2, first_layer: 2}
#pragma once
#include <atomic>
#include <vector>

#include "io/yaml_map.h"
#include "tessera/stage.h"

namespace tessera {

// phi of one hidden state x [c] over the sink dimensions.
float var_sink_score(const float* x, int64_t c, const std::vector<int>& dims);

struct VarRowSettings {
    float rho = 0.5f, p = 0.6f, min_image_attention = 0.2f;
};

// Applies VAR's rule to one row probs [keys]: image keys are
// [image_start, image_start + image_count) ∩ [0, keys), sink[j] for j <
// sink_count marks sinks (keys past sink_count are not). Returns true when the
// row was selected (and rewritten).
bool var_redistribute_row(float* probs, int64_t keys, int64_t image_start, int64_t image_count, const uint8_t* sink,
                          int64_t sink_count, const VarRowSettings& settings);

class VarStage : public Stage {
public:
    explicit VarStage(YamlMap& params);
    const std::string& name() const override { return name_; }
    StageRoles roles() const override {
        StageRoles r;
        r.decoder = r.attention_rows = true;
        return r;
    }
    void check_decoder(const DecoderShape& shape) const override;
    void begin_request() override;
    void decoder_layer_input(DecoderLayerView& view) override;
    bool wants_attention_rows(int layer, bool prefill) const override;
    void decoder_attention_row(const AttentionRowView& view) const override;

    const std::vector<int>& sink_dims() const { return dims_; }
    // Last request: sinks found per layer (visual, text), rows offered and rows redistributed.
    struct Stats {
        std::vector<int64_t> visual_sinks, text_sinks;
        int64_t rows_seen = 0, rows_selected = 0;
    };
    Stats stats() const;

private:
    std::string name_ = "var";
    YamlMap params_;
    mutable std::vector<int> dims_;
    bool dims_given_ = false;
    float tau_ = 20.0f;
    VarRowSettings row_;
    int first_layer_ = 2;
    mutable int layers_ = 0;
    // Per layer, from prefill: sink flags over the layer's cache, image span, any visual sink.
    std::vector<std::vector<uint8_t>> sink_;
    std::vector<int64_t> image_start_, image_count_, visual_sinks_, text_sinks_;
    mutable std::atomic<int64_t> rows_seen_{0}, rows_selected_{0};
};

}  // namespace tessera
