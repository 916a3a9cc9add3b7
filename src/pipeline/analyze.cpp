#include "tessera/analyze.h"

#include <algorithm>
#include <cmath>

#include "io/image.h"
#include "models/llava.h"
#include "pipeline/config.h"
#include "tessera/captioner.h"
#include "tessera/error.h"
#include "tessera/threads.h"

namespace tessera {

SinkAnalysis analyze_sinks(const SinkAnalysisOptions& o) {
    if (o.images.empty()) fail("analyze sinks", "give at least one image");
    if (!(o.tau > 0.0f)) fail("analyze sinks", "--tau must be positive");
    threads_init(o.threads);
    LlavaModel m;
    llava_load(m, model_resolve(o.model.empty() ? std::string(default_caption_model) : o.model));
    const LlamaConfig& tc = m.cfg.text;
    if (o.first_layer < 0 || o.first_layer >= tc.layers)
        fail("analyze sinks", "--first-layer must be in 0.." + std::to_string(tc.layers - 1));
    LlavaVisionState vision;
    llava_vision_state_init(vision, m);
    const int64_t d = tc.hidden;
    std::vector<float> max_ratio(size_t(d), 0.0f);
    std::vector<int64_t> over(size_t(d), 0);
    SinkAnalysis out;
    out.hidden = int(d), out.layers = tc.layers;
    std::vector<float> pixels(size_t(3) * size_t(m.preprocess.crop_height) * size_t(m.preprocess.crop_width));
    LlamaState state;
    for (const std::string& path : o.images) {
        clip_preprocess_image(image_decode_file(path), m.preprocess, pixels.data());
        const int64_t visual = llava_encode_image(m, vision, pixels.data(), nullptr, 0, nullptr);
        const std::vector<int32_t> ids = llava_prompt_ids(m, llava_prompt_text(o.prompt), visual);
        const int64_t T = int64_t(ids.size());
        if (T > tc.max_positions) fail(path, "the prompt does not fit the model's context");
        if (state.capacity < T) llama_state_init(state, m.text, T, T);
        llama_state_reset(state);
        std::vector<float> embeds(static_cast<size_t>(T * d));
        std::vector<int32_t> positions(static_cast<size_t>(T));
        llava_embed_prompt(m, ids, vision.features, visual, embeds.data());
        llava_prompt_positions(m, ids, nullptr, positions.data());
        state.observe = [&](int layer, const float* x, int64_t tokens) {
            if (layer < o.first_layer || layer >= tc.layers) return;
            for (int64_t t = 0; t < tokens; ++t) {
                const float* row = x + t * d;
                double sq = 0.0;
                for (int64_t i = 0; i < d; ++i) sq += double(row[i]) * row[i];
                const double rms = std::sqrt(sq / double(d) + 1e-6);
                for (int64_t i = 0; i < d; ++i) {
                    const float r = float(std::abs(row[i]) / rms);
                    max_ratio[size_t(i)] = std::max(max_ratio[size_t(i)], r);
                    over[size_t(i)] += r > o.tau;
                }
                ++out.tokens_scanned;
            }
        };
        llama_forward(m.text, state, embeds.data(), positions.data(), T, nullptr);
        state.observe = nullptr;
    }
    std::vector<int> order(static_cast<size_t>(d));
    for (int i = 0; i < int(d); ++i) order[size_t(i)] = i;
    std::sort(order.begin(), order.end(),
              [&](int a, int b) { return max_ratio[size_t(a)] > max_ratio[size_t(b)] || (max_ratio[size_t(a)] == max_ratio[size_t(b)] && a < b); });
    for (int i : order) {
        if (max_ratio[size_t(i)] > o.tau) out.dims.push_back(i);
        if (out.strongest.size() < 10) out.strongest.push_back({i, max_ratio[size_t(i)], over[size_t(i)]});
    }
    std::sort(out.dims.begin(), out.dims.end());
    return out;
}

}  // namespace tessera
