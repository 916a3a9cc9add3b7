// Decoder-side stages (DyVTE, FastV, VAR, DAMRO) against naive references:
// their selection rules on small random inputs, the attention kernel's row
// hook, token dropping in the decoder against masking the same keys, exact
// visual-token counts per layer on a real scene, and the composition rules.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "kernels/causal_attention.h"
#include "models/llava.h"
#include "models/sampling.h"
#include "pipeline/config.h"
#include "stages/damro.h"
#include "stages/dyvte.h"
#include "stages/fastv.h"
#include "stages/var.h"
#include "tessera/captioner.h"
#include "tessera/classifier.h"
#include "tessera/error.h"
#include "test_support.h"

namespace tessera {
namespace {
using namespace test;
using ::testing::HasSubstr;

// ---------------------------------------------------------------- VAR's row rule

// Probabilities summing to 1 from random logits.
std::vector<float> random_row(int64_t n, uint64_t seed, float spread) {
    std::vector<float> row = random_values(size_t(n), seed, spread);
    double sum = 0;
    for (float& x : row) sum += x = std::exp(x);
    for (float& x : row) x = float(x / sum);
    return row;
}

TEST(VarRow, RedistributesSinkMassToVisualNonSinksAndKeepsTheSum) {
    const int64_t keys = 40, image_start = 5, image_count = 20;
    std::vector<uint8_t> sink(size_t(keys), 0);
    sink[0] = 1;        // a text sink (BOS)
    sink[9] = 1;        // visual sinks
    sink[17] = 1;
    std::vector<float> row = random_row(keys, 3, 1.0f);
    // Make the image hold most of the attention, little of it on the visual sinks.
    for (int64_t j = image_start; j < image_start + image_count; ++j) row[size_t(j)] *= 4.0f;
    row[9] *= 0.5f, row[17] *= 0.5f;
    const double total = std::accumulate(row.begin(), row.end(), 0.0);
    for (float& x : row) x = float(x / total);
    const std::vector<float> before = row;

    VarRowSettings s;
    ASSERT_TRUE(var_redistribute_row(row.data(), keys, image_start, image_count, sink.data(), keys, s));
    double sinks = 0, visual_rest = 0;
    for (int64_t j = 0; j < keys; ++j) {
        if (sink[size_t(j)]) sinks += before[size_t(j)];
        else if (j >= image_start && j < image_start + image_count) visual_rest += before[size_t(j)];
    }
    const double gain = (1.0 - s.p) * sinks / visual_rest;
    double sum = 0;
    for (int64_t j = 0; j < keys; ++j) {
        const double b = before[size_t(j)];
        double expected = b;
        if (sink[size_t(j)]) expected = s.p * b;
        else if (j >= image_start && j < image_start + image_count) expected = b * (1.0 + gain);
        EXPECT_NEAR(row[size_t(j)], expected, 1e-7) << "key " << j;
        sum += row[size_t(j)];
    }
    EXPECT_NEAR(sum, 1.0, 1e-6);
}

TEST(VarRow, SelectsOnlyImageCentricRows) {
    const int64_t keys = 30, image_start = 2, image_count = 10;
    std::vector<uint8_t> sink(size_t(keys), 0);
    sink[3] = 1;
    VarRowSettings s;
    // Little attention on the image: S_img < 0.2.
    std::vector<float> row(size_t(keys), 0.0f);
    row[0] = 0.9f;
    for (int64_t j = image_start; j < image_start + image_count; ++j) row[size_t(j)] = 0.01f;
    EXPECT_FALSE(var_redistribute_row(row.data(), keys, image_start, image_count, sink.data(), keys, s));
    // The image's attention sits on its sink: portion > rho.
    std::fill(row.begin(), row.end(), 0.0f);
    row[3] = 0.8f;
    for (int64_t j = image_start; j < image_start + image_count; ++j)
        if (j != 3) row[size_t(j)] = 0.2f / 9;
    const std::vector<float> before = row;
    EXPECT_FALSE(var_redistribute_row(row.data(), keys, image_start, image_count, sink.data(), keys, s));
    EXPECT_EQ(row, before);
}

TEST(VarRow, SinkScoreIsTheRmsNormalizedMaximumOverTheDimensions) {
    std::vector<float> x = {1, -2, 30, 0.5f, -40, 2};
    double sq = 0;
    for (float v : x) sq += double(v) * v;
    const double rms = std::sqrt(sq / 6 + 1e-6);
    EXPECT_NEAR(var_sink_score(x.data(), 6, {2}), 30 / rms, 1e-5);
    EXPECT_NEAR(var_sink_score(x.data(), 6, {2, 4}), 40 / rms, 1e-5);
    EXPECT_EQ(var_sink_score(x.data(), 6, {}), 0.0f);
}

// ---------------------------------------------------------------- the kernel's row hook

struct HookState {
    int64_t image_start, image_count, first_row;
    std::vector<uint8_t> sink;
};

void var_hook(void* context, int64_t, int64_t, float* probs, int64_t keys) {
    const HookState& h = *static_cast<const HookState*>(context);
    var_redistribute_row(probs, keys, h.image_start, h.image_count, h.sink.data(), int64_t(h.sink.size()), {});
}

TEST(AttentionRowHook, RewritesRowsBeforeTheValueProductOnEveryKernelPath) {
    // 4-row groups, single rows, a scalar head size, decoding.
    struct Case {
        int64_t tokens, past, head_dim;
    };
    for (const Case& c : {Case{37, 0, 16}, Case{10, 23, 12}, Case{1, 40, 16}}) {
        SCOPED_TRACE("tokens " + std::to_string(c.tokens) + " past " + std::to_string(c.past));
        const int64_t heads = 2, d = c.head_dim, n = c.past + c.tokens, capacity = n;
        auto q = random_values(size_t(c.tokens * heads * d), 1, 2.0f);
        auto k = random_values(size_t(n * heads * d), 2, 2.0f);
        auto v = random_values(size_t(n * heads * d), 3);
        // Rows of queries 26.. (after the image) are rewritten.
        HookState hook{2, 24, std::max<int64_t>(0, 26 - c.past), std::vector<uint8_t>(size_t(n), 0)};
        hook.sink[0] = hook.sink[5] = 1;
        std::vector<float> kc(size_t(heads * capacity * d)), vc(kc.size());
        kv_cache_write(kc.data(), vc.data(), capacity, k.data(), v.data(), heads * d, n, 0, heads, d);
        std::vector<float> out(size_t(c.tokens * heads * d));
        std::vector<float> scratch(size_t(causal_attention_scratch_floats(c.tokens, c.past)));
        CausalAttentionArgs a;
        a.q = q.data(), a.q_stride = heads * d, a.k_cache = kc.data(), a.v_cache = vc.data(), a.capacity = capacity;
        a.out = out.data(), a.tokens = c.tokens, a.past = c.past, a.q_heads = heads, a.kv_heads = heads;
        a.head_dim = d, a.scale = 1.0f / std::sqrt(float(d)), a.scratch = scratch.data();
        a.row_hook.fn = var_hook, a.row_hook.context = &hook, a.row_hook.first_row = hook.first_row;
        causal_attention(nullptr, a);

        // Naive: probabilities, the same rewrite for rows >= first_row, then V.
        float worst = 0;
        int64_t rewritten = 0;
        for (int64_t h = 0; h < heads; ++h)
            for (int64_t t = 0; t < c.tokens; ++t) {
                const int64_t keys = c.past + t + 1;
                std::vector<double> s(static_cast<size_t>(keys));
                double m = -1e300, sum = 0;
                for (int64_t j = 0; j < keys; ++j) {
                    double acc = 0;
                    for (int64_t i = 0; i < d; ++i)
                        acc += double(q[size_t((t * heads + h) * d + i)]) * k[size_t((j * heads + h) * d + i)];
                    m = std::max(m, s[size_t(j)] = acc / std::sqrt(double(d)));
                }
                for (double& x : s) sum += x = std::exp(x - m);
                std::vector<float> p(static_cast<size_t>(keys));
                for (int64_t j = 0; j < keys; ++j) p[size_t(j)] = float(s[size_t(j)] / sum);
                if (t >= hook.first_row)
                    rewritten += var_redistribute_row(p.data(), keys, hook.image_start, hook.image_count,
                                                      hook.sink.data(), n, {});
                for (int64_t i = 0; i < d; ++i) {
                    double acc = 0;
                    for (int64_t j = 0; j < keys; ++j) acc += double(p[size_t(j)]) * v[size_t((j * heads + h) * d + i)];
                    worst = std::max(worst, float(std::abs(acc - out[size_t((t * heads + h) * d + i)])));
                }
            }
        EXPECT_LT(worst, 2e-6f);
        EXPECT_GT(rewritten, 0);  // the case exercises the rewrite
    }
}

// ---------------------------------------------------------------- FastV, DyVTE, DAMRO rules

TEST(FastvSelect, KeepsTheTopHeadMeanAttentionInRasterOrder) {
    const int heads = 3;
    const int64_t keys = 30, image_start = 4, image_count = 20, keep = 7;
    const std::vector<float> att = random_values(size_t(heads * keys), 9);
    std::vector<int32_t> got(static_cast<size_t>(keep));
    fastv_select(att.data(), heads, keys, image_start, image_count, keep, got.data());
    std::vector<std::pair<double, int32_t>> ranked;
    for (int32_t j = 0; j < image_count; ++j) {
        double s = 0;
        for (int h = 0; h < heads; ++h) s += att[size_t(h * keys + image_start + j)] / heads;
        ranked.push_back({-s, j});
    }
    std::sort(ranked.begin(), ranked.end());
    std::vector<int32_t> expected;
    for (int i = 0; i < keep; ++i) expected.push_back(ranked[size_t(i)].second);
    std::sort(expected.begin(), expected.end());
    EXPECT_EQ(got, expected);
}

TEST(DyvteRouter, FeaturesAndLogitsMatchNaive) {
    const int64_t c = 6, tokens = 12, image_end = 7, hidden = 5;
    const std::vector<float> x = random_values(size_t(tokens * c), 4);
    std::vector<float> f(static_cast<size_t>(2 * c));
    dyvte_features(x.data(), tokens, c, image_end, f.data());
    for (int64_t i = 0; i < c; ++i) {
        double mean = 0;
        for (int64_t t = image_end; t < tokens - 1; ++t) mean += x[size_t(t * c + i)];
        EXPECT_NEAR(f[size_t(i)], mean / double(tokens - 1 - image_end), 1e-6);
        EXPECT_EQ(f[size_t(c + i)], x[size_t((tokens - 1) * c + i)]);
    }
    const std::vector<float> w1 = random_values(size_t(hidden * 2 * c), 5), w2 = random_values(size_t(2 * hidden), 6);
    std::vector<float> h(static_cast<size_t>(hidden));
    float logits[2];
    Ledger ledger;
    dyvte_router_logits(&ledger, f.data(), w1.data(), w2.data(), 2 * c, hidden, h.data(), logits);
    for (int o = 0; o < 2; ++o) {
        double z = 0;
        for (int64_t j = 0; j < hidden; ++j) {
            double a = 0;
            for (int64_t i = 0; i < 2 * c; ++i) a += double(w1[size_t(j * 2 * c + i)]) * f[size_t(i)];
            z += double(w2[size_t(o * hidden + j)]) * 0.5 * a * (1.0 + std::erf(a / std::sqrt(2.0)));
        }
        EXPECT_NEAR(logits[o], z, 1e-5);
    }
    EXPECT_EQ(ledger.total(), uint64_t(2 * c * hidden + hidden * 2));
    // No text between the image and the last token: the mean half is zero.
    dyvte_features(x.data(), tokens, c, tokens - 1, f.data());
    for (int64_t i = 0; i < c; ++i) EXPECT_EQ(f[size_t(i)], 0.0f);
}

TEST(DamroOutliers, SingleHeadFullWidthAttentionOfTheClsToken) {
    const int64_t tokens = 17, c = 12;
    const std::vector<float> qkv = random_values(size_t(tokens * 3 * c), 7, 2.0f);
    std::vector<float> p(static_cast<size_t>(tokens));
    std::vector<int32_t> outliers;
    Ledger ledger;
    damro_outliers(&ledger, qkv.data(), tokens, c, 1, 4, p.data(), outliers);
    std::vector<double> ref(static_cast<size_t>(tokens));
    double m = -1e300, sum = 0;
    for (int64_t j = 0; j < tokens; ++j) {
        double acc = 0;
        for (int64_t i = 0; i < c; ++i) acc += double(qkv[size_t(i)]) * qkv[size_t(j * 3 * c + c + i)];
        m = std::max(m, ref[size_t(j)] = acc / std::sqrt(double(c)));
    }
    for (double& x : ref) sum += x = std::exp(x - m);
    for (int64_t j = 0; j < tokens; ++j) EXPECT_NEAR(p[size_t(j)], ref[size_t(j)] / sum, 1e-6);
    std::vector<int32_t> order(static_cast<size_t>(tokens - 1));
    std::iota(order.begin(), order.end(), 1);
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return ref[size_t(a)] > ref[size_t(b)]; });
    std::vector<int32_t> expected(order.begin(), order.begin() + 4);
    std::sort(expected.begin(), expected.end());
    EXPECT_EQ(outliers, expected);
    EXPECT_EQ(ledger.total(), uint64_t(tokens * c));
}

TEST(DamroContrast, ContrastAndPlausibilityCut) {
    const std::vector<float> z = {2.0f, 1.0f, -1.0f, 1.9f}, zo = {3.0f, 0.0f, 5.0f, 0.5f};
    std::vector<float> out(4);
    contrastive_logits(z.data(), zo.data(), 4, 2.0f, 0.1f, out.data());
    const float cut = std::log(0.1f) + 2.0f;  // -0.30: token 2 (z = -1) is cut
    EXPECT_FLOAT_EQ(out[0], 3 * 2.0f - 2 * 3.0f);
    EXPECT_FLOAT_EQ(out[1], 3 * 1.0f - 2 * 0.0f);
    EXPECT_TRUE(std::isinf(out[2]) && out[2] < 0) << cut;
    EXPECT_FLOAT_EQ(out[3], 3 * 1.9f - 2 * 0.5f);
}

// ---------------------------------------------------------------- the demo model

std::string demo() { return source_path("models/shapescenes-llava"); }
std::string sample() { return source_path("models/samples/shapescene-heldout-44.png"); }

std::string pipeline_file(const std::string& yaml) { return write_file(temp_dir() + "/p.yaml", yaml); }

Caption caption_with(const std::string& yaml, int max_new = 24) {
    Captioner cap({.model = demo(), .pipeline = yaml.empty() ? "" : pipeline_file(yaml), .threads = 2});
    GenerateOptions g;
    g.max_new_tokens = max_new;
    return cap.caption_file(sample(), g);
}

TEST(DecoderStages, ExactVisualTokenCountsPerLayerOnARealScene) {
    const Caption full = caption_with("");
    EXPECT_EQ(full.decoder_visual_tokens, std::vector<int64_t>(6, 196));
    EXPECT_EQ(full.decoder_tokens, std::vector<int64_t>(6, 207));

    const Caption exit2 = caption_with("stages:\n  - dyvte: {exit_layer: 2}\n");
    EXPECT_EQ(exit2.decoder_visual_tokens, (std::vector<int64_t>{196, 196, 196, 0, 0, 0}));
    EXPECT_EQ(exit2.decoder_tokens, (std::vector<int64_t>{207, 207, 207, 11, 11, 11}));

    const Caption fastv = caption_with("stages:\n  - fastv: {layer: 2, ratio: 0.75}\n");
    EXPECT_EQ(fastv.decoder_visual_tokens, (std::vector<int64_t>{196, 196, 49, 49, 49, 49}));

    // Composed: VTC-CLS 64 before the projector, FastV halves them at layer 2, DyVTE exits after 3.
    const Caption chain = caption_with(
        "stages:\n  - vtc_cls: {keep: 64, positions: original}\n  - fastv: {layer: 2, ratio: 0.5}\n");
    EXPECT_EQ(chain.visual_tokens, 64);
    EXPECT_EQ(chain.decoder_visual_tokens, (std::vector<int64_t>{64, 64, 32, 32, 32, 32}));

    const Caption damro = caption_with("stages:\n  - damro: {k: 4}\n");
    EXPECT_EQ(damro.contrast_visual_tokens, 4);
    EXPECT_EQ(damro.decoder_visual_tokens, std::vector<int64_t>(6, 196));
    // The second stream costs a second decoder step per token.
    EXPECT_GT(damro.macs_decode, full.macs_decode * 3 / 2);
}

TEST(DecoderStages, ChainsOnOneLoadedModelCaptionAsTheirOwnCaptioners) {
    // One model, five stage chains (none, FastV, VTC-CLS + FastV, DyVTE,
    // DAMRO), used out of order and twice each: every caption must be the one
    // a Captioner built for that pipeline alone gives, so no stage state,
    // decoder cache or encoded image leaks from one chain to the next.
    const std::vector<std::string> yamls = {
        "", "stages:\n  - fastv: {layer: 2, ratio: 0.75}\n",
        "stages:\n  - vtc_cls: {keep: 64, positions: original}\n  - fastv: {layer: 2, ratio: 0.5}\n",
        "stages:\n  - dyvte: {exit_layer: 2}\n", "stages:\n  - damro: {k: 4}\n"};
    Captioner cap({.model = demo(), .pipeline = "", .threads = 2});
    for (size_t i = 1; i < yamls.size(); ++i) {
        PipelineSpec spec;
        spec.stages = pipeline_read(write_file(temp_dir() + "/c.yaml", yamls[i])).stages;
        EXPECT_EQ(cap.add_stages(spec), int(i));
    }
    EXPECT_EQ(cap.stage_chains(), 5);
    std::vector<float> pixels(size_t(cap.input_floats()));
    cap.load_image(sample(), pixels.data());
    GenerateOptions g;
    g.max_new_tokens = 12;
    std::vector<Caption> alone;
    for (const std::string& y : yamls) alone.push_back(caption_with(y, 12));
    for (int chain : {2, 0, 4, 1, 3, 2, 4, 0, 3, 1}) {
        cap.use_stages(chain);
        cap.encode_pixels(pixels.data());
        const Caption c = cap.generate(g);
        const Caption& want = alone[size_t(chain)];
        EXPECT_EQ(c.token_ids, want.token_ids) << chain;
        EXPECT_EQ(c.visual_tokens, want.visual_tokens) << chain;
        EXPECT_EQ(c.decoder_visual_tokens, want.decoder_visual_tokens) << chain;
        EXPECT_EQ(c.contrast_visual_tokens, want.contrast_visual_tokens) << chain;
        EXPECT_EQ(c.macs_vision, want.macs_vision) << chain;
        EXPECT_EQ(c.macs_prefill, want.macs_prefill) << chain;
        EXPECT_EQ(c.macs_decode, want.macs_decode) << chain;
        ASSERT_EQ(c.first_logits_top5.size(), want.first_logits_top5.size());
        for (size_t k = 0; k < c.first_logits_top5.size(); ++k) {
            EXPECT_EQ(c.first_logits_top5[k].first, want.first_logits_top5[k].first) << chain;
            EXPECT_FLOAT_EQ(c.first_logits_top5[k].second, want.first_logits_top5[k].second) << chain;
        }
    }
    // The chains differ where they should (the test would pass vacuously otherwise).
    EXPECT_EQ(alone[2].visual_tokens, 64);
    EXPECT_NE(alone[1].decoder_visual_tokens, alone[0].decoder_visual_tokens);
    EXPECT_EQ(alone[4].contrast_visual_tokens, 4);
}

// Masks visual keys the way dropping them would: from layer `from` on, every
// offered row loses the image keys not in `kept` (renormalized); records the
// prefill's image span.
class MaskingStage : public Stage {
public:
    MaskingStage(int from, std::vector<int32_t> kept) : from_(from), kept_(std::move(kept)) {}
    const std::string& name() const override { return name_; }
    StageRoles roles() const override {
        StageRoles r;
        r.decoder = r.attention_rows = true;
        return r;
    }
    void decoder_layer_input(DecoderLayerView& v) override {
        if (v.prefill && v.layer == 0) start_ = v.image_start, count_ = v.image_count;
    }
    bool wants_attention_rows(int layer, bool) const override { return layer >= from_; }
    bool wants_all_prefill_rows() const override { return true; }
    void decoder_attention_row(const AttentionRowView& v) const override {
        double kept_mass = 0;
        for (int64_t j = 0; j < v.keys; ++j) {
            const bool visual = j >= start_ && j < start_ + count_;
            if (visual && !std::binary_search(kept_.begin(), kept_.end(), int32_t(j - start_))) v.probs[j] = 0.0f;
            kept_mass += v.probs[j];
        }
        for (int64_t j = 0; j < v.keys; ++j) v.probs[j] = float(v.probs[j] / kept_mass);
    }

private:
    std::string name_ = "masking";
    int from_;
    std::vector<int32_t> kept_;
    int64_t start_ = 0, count_ = 0;
};

// Greedy tokens and first logits of the demo model on the sample with the
// given decoder stages, driving the model directly.
struct Greedy {
    std::vector<int32_t> tokens;
    std::vector<float> first_logits;
    std::vector<int64_t> layer_len;
};
Greedy greedy(std::vector<Stage*> stages, int steps) {
    static LlavaModel m;
    if (m.dir.empty()) llava_load(m, demo(), {.dtype = "f32"});
    LlavaVisionState vision;
    llava_vision_state_init(vision, m);
    std::vector<float> pixels(size_t(3 * 224 * 224));
    clip_preprocess_image(image_decode_file(sample()), m.preprocess, pixels.data());
    const int64_t visual = llava_encode_image(m, vision, pixels.data(), nullptr, 0, nullptr);
    const std::vector<int32_t> ids = llava_prompt_ids(m, llava_prompt_text("Describe the image."), visual);
    const int64_t T = int64_t(ids.size()), d = m.cfg.text.hidden;
    std::vector<float> embeds(static_cast<size_t>(T * d));
    std::vector<int32_t> pos(static_cast<size_t>(T));
    llava_embed_prompt(m, ids, vision.features, visual, embeds.data());
    llava_prompt_positions(m, ids, nullptr, pos.data());
    for (Stage* s : stages) {
        s->check_decoder(llama_decoder_shape(m.text));
        s->begin_request();
    }
    LlamaState st;
    llama_state_init(st, m.text, T + steps, T);
    DecoderRun run;
    run.stages = stages.data(), run.stage_count = int(stages.size()), run.prefill = true;
    run.image_start = std::find(ids.begin(), ids.end(), m.cfg.image_token_id) - ids.begin(), run.image_count = visual;
    llama_forward(m.text, st, embeds.data(), pos.data(), T, nullptr, &run);
    run.prefill = false;
    Greedy g;
    g.first_logits.assign(st.logits, st.logits + m.cfg.text.vocab);
    std::vector<float> e(static_cast<size_t>(d));
    for (int s = 0; s < steps; ++s) {
        const int32_t next = int32_t(std::max_element(st.logits, st.logits + m.cfg.text.vocab) - st.logits);
        g.tokens.push_back(next);
        llama_embed(m.text, &next, 1, e.data());
        const int32_t p = int32_t(T + s);
        llama_forward(m.text, st, e.data(), &p, 1, nullptr, &run);
    }
    g.layer_len = st.layer_len;
    return g;
}

TEST(DecoderStages, DroppingVisualTokensEqualsMaskingTheirKeys) {
    // DyVTE's fixed exit after layer 2: layers 3.. see no visual key.
    YAML::Node exit_node = YAML::Load("{exit_layer: 2}");
    YamlMap exit_params(exit_node, "test.yaml", "dyvte");
    DyvteStage exit(exit_params);
    MaskingStage mask_all(3, {});
    const Greedy dropped = greedy({&exit}, 12), masked = greedy({&mask_all}, 12);
    EXPECT_LT(max_abs_diff(dropped.first_logits, masked.first_logits), 1e-4f);
    EXPECT_EQ(dropped.tokens, masked.tokens);
    // Per-layer caches: 207 prompt tokens up to layer 2, 11 after, plus 12 steps each.
    EXPECT_EQ(dropped.layer_len, (std::vector<int64_t>{219, 219, 219, 23, 23, 23}));
}

TEST(DecoderStages, FastvEqualsMaskingTheTokensItDrops) {
    YAML::Node node = YAML::Load("{layer: 2, ratio: 0.5}");
    YamlMap params(node, "test.yaml", "fastv");
    FastvStage fastv(params);
    // Which tokens FastV keeps: the last prompt token's layer-1 attention, read from a first run.
    struct Capture : Stage {
        std::string n = "capture";
        std::vector<float> row;
        int64_t start = 0, count = 0;
        const std::string& name() const override { return n; }
        DecoderSignals decoder_signals(int layer) const override { return {layer == 1}; }
        void decoder_after_layer(DecoderLayerView& v) override {
            if (!v.prefill || v.layer != 1) return;
            row.assign(v.last_query_attention, v.last_query_attention + int64_t(v.heads) * (v.past + v.tokens));
            start = v.image_start, count = v.image_count;
        }
    } capture;
    const Greedy plain = greedy({&capture}, 1);
    ASSERT_FALSE(capture.row.empty());
    std::vector<int32_t> kept(98);
    fastv_select(capture.row.data(), 4, int64_t(capture.row.size()) / 4, capture.start, capture.count, 98, kept.data());
    MaskingStage mask(2, kept);
    const Greedy dropped = greedy({&fastv}, 12), masked = greedy({&mask}, 12);
    EXPECT_LT(max_abs_diff(dropped.first_logits, masked.first_logits), 1e-4f);
    EXPECT_EQ(dropped.tokens, masked.tokens);
    EXPECT_EQ(dropped.layer_len, (std::vector<int64_t>{219, 219, 121, 121, 121, 121}));
    (void)plain;
}

TEST(DecoderStages, DamroWithAlphaZeroIsTheBaseline) {
    const Caption full = caption_with("", 16);
    const Caption zero = caption_with("stages:\n  - damro: {k: 10, alpha: 0}\n", 16);
    EXPECT_EQ(zero.token_ids, full.token_ids);
    EXPECT_EQ(zero.contrast_visual_tokens, 10);
}

TEST(DecoderStages, VarWithoutSinksChangesNothingAndWithSinksRedistributes) {
    const Caption full = caption_with("", 16);
    // The demo's var_sinks.json: no dimension reaches tau 20 in a 256-wide decoder.
    const Caption none = caption_with("stages:\n  - var: {}\n", 16);
    EXPECT_EQ(none.token_ids, full.token_ids);
    YAML::Node node = YAML::Load("{sink_dims: [255], tau: 8}");
    YamlMap params(node, "test.yaml", "var");
    VarStage var(params);
    greedy({&var}, 4);
    const VarStage::Stats s = var.stats();
    int64_t visual = 0;
    for (int64_t v : s.visual_sinks) visual += v;
    EXPECT_GT(visual, 0);
    EXPECT_GT(s.rows_seen, 0);
    std::printf("[ measured ] var tau 8 on dim 255: %lld visual sinks over layers 2-4, %lld of %lld rows redistributed\n",
                static_cast<long long>(visual), static_cast<long long>(s.rows_selected),
                static_cast<long long>(s.rows_seen));
}

// ---------------------------------------------------------------- composition and settings

std::string caption_error(const std::string& yaml) {
    return error_of([&] { Captioner({.model = demo(), .pipeline = pipeline_file(yaml), .threads = 1}); });
}

TEST(DecoderStages, ImpossibleSettingsAndCompositionsAreRefusedWithAReason) {
    EXPECT_THAT(caption_error("stages:\n  - vtc_cls: {keep: 64}\n  - fastervlm: {keep: 32}\n"),
                HasSubstr("both choose the visual tokens passed to the decoder; a chain may hold one of them"));
    EXPECT_THAT(caption_error("stages:\n  - dyvte: {}\n  - fastv: {}\n"),
                HasSubstr("stages 'dyvte' (" ));
    EXPECT_THAT(caption_error("stages:\n  - dyvte: {}\n  - fastv: {}\n"),
                HasSubstr("both remove visual tokens inside the decoder"));
    EXPECT_THAT(caption_error("stages:\n  - damro: {}\n  - damro: {k: 4}\n"),
                HasSubstr("both add a contrastive decoding stream"));
    EXPECT_THAT(caption_error("stages:\n  - dyvte: {exit_layer: 5}\n"),
                HasSubstr("exit_layer': must be at most 4"));
    EXPECT_THAT(caption_error("stages:\n  - dyvte: {router: missing.safetensors}\n"),
                HasSubstr("no router file"));
    EXPECT_THAT(caption_error("stages:\n  - fastv: {layer: 6}\n"), HasSubstr("must be in 1..5"));
    EXPECT_THAT(caption_error("stages:\n  - fastv: {ratio: 1.0}\n"), HasSubstr("must be in [0, 1)"));
    EXPECT_THAT(caption_error("stages:\n  - var: {sink_dims: [256]}\n"),
                HasSubstr("dimension 256 is outside the decoder's hidden size 256"));
    EXPECT_THAT(caption_error("stages:\n  - var: {first_layer: 5}\n"), HasSubstr("must be at most 4"));
    EXPECT_THAT(caption_error("stages:\n  - damro: {k: 197}\n"), HasSubstr("must be at most the 196 patch tokens"));
    EXPECT_THAT(caption_error("stages:\n  - evit: {blocks: [2], order: score}\n"),
                HasSubstr("must be raster in a vision-language model"));
    // An image classifier has no decoder.
    const std::string f = pipeline_file("stages:\n  - fastv: {}\n");
    EXPECT_THAT(error_of([&] {
                    Classifier({.model = source_path("models/shapescenes-towers/vit"), .pipeline = f, .threads = 1});
                }),
                HasSubstr("acts in a language decoder; this model is an image classifier"));
}

TEST(DecoderStages, CompatibleStagesComposeInOneChain) {
    // EViT in the tower (raster order), VTC-CLS before the projector, DyVTE's fixed exit, VAR.
    const Caption c = caption_with(
        "stages:\n  - evit: {blocks: [2], keep_rate: 0.7}\n  - vtc_cls: {keep: 64}\n"
        "  - dyvte: {exit_layer: 3}\n  - var: {sink_dims: [255], tau: 8}\n");
    EXPECT_EQ(c.visual_tokens, 64);
    EXPECT_EQ(c.decoder_visual_tokens, (std::vector<int64_t>{64, 64, 64, 64, 0, 0}));
    EXPECT_FALSE(c.token_ids.empty());
}

}  // namespace
}  // namespace tessera
