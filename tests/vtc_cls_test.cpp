// VTC-CLS on a LLaVA tower: scores = sum over layers start..feature of the
// head-mean CLS attention; the kept tokens' features equal the full run's
// features at those positions; the decoder sees exactly `keep` visual tokens.
#include <gtest/gtest.h>

#include <numeric>
#include <yaml-cpp/yaml.h>

#include "io/yaml_map.h"
#include "models/llava.h"
#include "stages/fastervlm.h"
#include "stages/vtc_cls.h"
#include "test_support.h"

namespace tessera {
namespace {
using namespace test;

std::unique_ptr<VtcClsStage> make_stage(const std::string& yaml) {
    YamlMap params(YAML::Load(yaml), "test.yaml", "vtc_cls");
    auto stage = std::make_unique<VtcClsStage>(params);
    params.finish();
    return stage;
}

TEST(VtcCls, SelectKeepsTheBestInRasterOrder) {
    EXPECT_EQ(vtc_cls_select({0.1, 0.9, 0.3, 0.9, 0.5}, 3), (std::vector<int32_t>{1, 3, 4}));
    EXPECT_EQ(vtc_cls_select({0.2, 0.2, 0.2}, 2), (std::vector<int32_t>{0, 1}));  // ties: lower index
}

TEST(VtcCls, KeepsTheTopTokensOfTheSummedClsAttention) {
    LlavaModel m;
    llava_load(m, source_path("models/shapescenes-llava"), {.load_tokenizer = false});
    const int64_t n = m.vision.hp.tokens(), vc = m.cfg.vision.hidden, tc = m.cfg.text.hidden;
    std::vector<float> pixels = random_values(size_t(3 * 224 * 224), 5, 1.5f);

    // Full run: CLS rows of every block and the projected features of all 196 patches.
    LlavaVisionState full;
    llava_vision_state_init(full, m);
    ClsRowRecorder rows;
    Stage* record[] = {&rows};
    ASSERT_EQ(llava_encode_image(m, full, pixels.data(), record, 1, nullptr), n - 1);
    std::vector<float> all_features(full.features, full.features + (n - 1) * tc);

    auto stage = make_stage("{keep: 32, start_layer: 2}");
    stage->check(m.vision.encoder_shape());
    LlavaVisionState pruned;
    llava_vision_state_init(pruned, m);
    Stage* chain[] = {stage.get()};
    Ledger ledger;
    ASSERT_EQ(llava_encode_image(m, pruned, pixels.data(), chain, 1, &ledger), 32);

    // Naive reference: S_j = sum_{l >= 2} mean_h A^l[h, 0, j].
    std::vector<double> score(static_cast<size_t>(n - 1), 0.0);
    for (int l = 2; l < m.vision_blocks; ++l)
        for (int h = 0; h < m.cfg.vision.heads; ++h)
            for (int64_t j = 1; j < n; ++j) score[size_t(j - 1)] += rows.rows[size_t(l)][size_t(h * n + j)] / m.cfg.vision.heads;
    std::vector<int32_t> order(score.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return score[size_t(a)] > score[size_t(b)]; });
    std::vector<int32_t> want(order.begin(), order.begin() + 32);
    std::sort(want.begin(), want.end());
    for (size_t i = 0; i < want.size(); ++i) {
        const float* got = pruned.features + i * tc;
        const float* ref = all_features.data() + want[i] * tc;
        double diff = 0;
        for (int64_t c = 0; c < tc; ++c) diff = std::max(diff, double(std::abs(got[c] - ref[c])));
        EXPECT_LT(diff, 1e-5) << "kept token " << i << " (patch " << want[i] << ")";
    }
    // The projector ran on 32 tokens only.
    EXPECT_EQ(ledger.by_component(Component::projector), uint64_t(32 * (vc * tc + tc * tc)));
    (void)vc;
}

TEST(VtcCls, ImpossibleSettingsAreRejected) {
    LlavaModel m;
    llava_load(m, source_path("models/shapescenes-llava"), {.load_tokenizer = false});
    EXPECT_NE(error_of([&] { make_stage("{keep: 500}")->check(m.vision.encoder_shape()); })
                  .find("500 tokens is more than the tower's 196 patches"),
              std::string::npos);
    EXPECT_NE(error_of([&] { make_stage("{keep: 8, start_layer: 9}")->check(m.vision.encoder_shape()); })
                  .find("past the last block the tower runs (4)"),
              std::string::npos);
    EXPECT_NE(error_of([&] { make_stage("{keep: 0}"); }).find("keep"), std::string::npos);
}

}  // namespace
}  // namespace tessera

namespace tessera {
namespace {
using namespace test;

TEST(FasterVlm, RanksByTheFeatureLayersClsRowAlone) {
    LlavaModel m;
    llava_load(m, source_path("models/shapescenes-llava"), {.load_tokenizer = false});
    std::vector<float> pixels = random_values(size_t(3 * 224 * 224), 9, 1.5f);
    const std::string yaml = "{keep: 20}";
    YamlMap a(YAML::Load(yaml), "t.yaml", "fastervlm");
    FasterVlmStage faster(a);
    YamlMap b(YAML::Load("{keep: 20, start_layer: 4}"), "t.yaml", "vtc_cls");
    VtcClsStage last_only(b);  // the same selection spelled as VTC-CLS from the last block (4 of 0..4)
    faster.check(m.vision.encoder_shape());
    last_only.check(m.vision.encoder_shape());
    LlavaVisionState s1, s2;
    llava_vision_state_init(s1, m);
    llava_vision_state_init(s2, m);
    Stage* c1[] = {&faster};
    Stage* c2[] = {&last_only};
    ASSERT_EQ(llava_encode_image(m, s1, pixels.data(), c1, 1, nullptr), 20);
    ASSERT_EQ(llava_encode_image(m, s2, pixels.data(), c2, 1, nullptr), 20);
    EXPECT_EQ(s1.vit.tokens[0].patch_owner, s2.vit.tokens[0].patch_owner);
    EXPECT_EQ(faster.name(), "fastervlm");
}

}  // namespace
}  // namespace tessera

namespace tessera {
namespace {
using namespace test;

TEST(LlavaPositions, OriginalPositionsLeaveGapsWhereTokensWereDropped) {
    LlavaModel m;
    llava_load(m, source_path("models/shapescenes-llava"), {.load_tokenizer = false});
    const int32_t img = m.cfg.image_token_id;
    const std::vector<int32_t> ids = {0, 5, 6, img, img, img, 7, 8};
    std::vector<int32_t> contiguous(ids.size()), original(ids.size());
    llava_prompt_positions(m, ids, nullptr, contiguous.data());
    EXPECT_EQ(contiguous, (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7}));
    const std::vector<int32_t> slots = {2, 40, 195};  // kept patches of the 196
    llava_prompt_positions(m, ids, &slots, original.data());
    EXPECT_EQ(original, (std::vector<int32_t>{0, 1, 2, 5, 43, 198, 199, 200}));
}

TEST(VtcCls, SlotsAreThePatchesTheKeptTokensCame) {
    LlavaModel m;
    llava_load(m, source_path("models/shapescenes-llava"), {.load_tokenizer = false});
    std::vector<float> pixels = random_values(size_t(3 * 224 * 224), 3, 1.5f);
    YamlMap p(YAML::Load("{keep: 10, positions: original}"), "t.yaml", "vtc_cls");
    VtcClsStage stage(p);
    EXPECT_TRUE(stage.keeps_original_positions());
    stage.check(m.vision.encoder_shape());
    LlavaVisionState s;
    llava_vision_state_init(s, m);
    Stage* chain[] = {&stage};
    ASSERT_EQ(llava_encode_image(m, s, pixels.data(), chain, 1, nullptr), 10);
    ASSERT_EQ(s.slots.size(), 10u);
    EXPECT_TRUE(std::is_sorted(s.slots.begin(), s.slots.end()));
    for (size_t i = 0; i < s.slots.size(); ++i) EXPECT_EQ(s.vit.tokens[0].patch_owner[size_t(s.slots[i])], int(i) + 1);
    YamlMap bad(YAML::Load("{positions: gaps}"), "t.yaml", "vtc_cls");
    EXPECT_NE(error_of([&] { VtcClsStage x(bad); }).find("expected contiguous or original, got 'gaps'"), std::string::npos);
}

}  // namespace
}  // namespace tessera
