// The three ShapeScenes vision towers (models/shapescenes-towers: plain ViT,
// BiFormer routing + LCE, DaViT window / channel-group) against the PyTorch
// code that trained them (tools/train_towers.py, logits recorded on the CPU
// in f32), their exact MAC counts, and the errors for towers whose
// config.json or weights do not describe a valid block plan.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "models/vit.h"
#include "tessera/classifier.h"
#include "tessera/error.h"
#include "test_support.h"

namespace tessera {
namespace {
using namespace test;
namespace fs = std::filesystem;

std::string tower_dir(const std::string& kind) { return source_path("models/shapescenes-towers/" + kind); }

class Towers : public ::testing::TestWithParam<std::string> {};

TEST_P(Towers, LogitsMatchTheTrainingCodeOnHeldOutScenes) {
    TESSERA_REQUIRE_PYTHON();
    const nlohmann::json ref =
        nlohmann::json::parse(std::ifstream(source_path("tests/fixtures/shapescenes/towers-reference.json")));
    const auto& rows = ref["towers"][GetParam()]["logits_heldout_0_3"];
    ASSERT_EQ(rows.size(), 4u);
    const std::string dir = render_heldout(4);
    Classifier clf({.model = tower_dir(GetParam()), .pipeline = "", .threads = 2, .max_batch = 1});
    float worst = 0.0f;
    for (int i = 0; i < 4; ++i) {
        const Classification c = clf.classify_file(dir + "/images/heldout-00000" + std::to_string(i) + ".png", 1);
        const std::vector<float> expected = rows[size_t(i)];
        ASSERT_EQ(c.logits.size(), expected.size());
        worst = std::max(worst, max_abs_diff(c.logits, expected));
    }
    std::printf("[ measured ] %s tower: logits max |diff| %.2e vs PyTorch (f32, CPU)\n", GetParam().c_str(), worst);
    EXPECT_LT(worst, 1e-4f);
}

// MACs of one 224x224 image, from the architecture: patch embedding, per
// block qkv / proj / MLP and its attention kind, the head.
uint64_t expected_macs(const std::string& kind) {
    const uint64_t c = 192, n = 197, grid = 196, classes = 94, heads_total = c;  // heads x head_dim = c
    uint64_t macs = grid * 768 * c + classes * c;
    for (int l = 0; l < 6; ++l) {
        macs += n * c * 3 * c + n * c * c + 2 * n * c * 768;
        const uint64_t global = 2 * heads_total * n * n;
        if (kind == "vit" || (kind == "biformer" && l >= 4)) {
            macs += global;
        } else if (kind == "biformer") {  // affinity of 49 regions, CLS row + 196 queries x (CLS + 16 regions x 4), LCE
            macs += 49 * 49 * c + 2 * heads_total * (n + grid * (1 + 16 * 4)) + grid * c * 25;
        } else if (l % 2 == 0) {  // davit window: CLS row + 196 queries x (CLS + 49)
            macs += 2 * heads_total * (n + grid * (1 + 49));
        } else {  // davit channel groups: 6 maps of 32 x 32 over 197 tokens, and the products with them
            macs += 2 * n * c * 32;
        }
    }
    return macs;
}

TEST_P(Towers, MacCountIsTheArchitecturesExactly) {
    Classifier clf({.model = tower_dir(GetParam()), .pipeline = "", .threads = 1, .max_batch = 1});
    std::vector<float> pixels(size_t(clf.input_floats()), 0.25f);
    const Classification c = clf.classify(pixels.data(), 1, 1)[0];
    EXPECT_EQ(c.macs, expected_macs(GetParam()));
    std::printf("[ measured ] %s tower: %.4f GMACs\n", GetParam().c_str(), double(c.macs) * 1e-9);
}

INSTANTIATE_TEST_SUITE_P(ShapeScenes, Towers, ::testing::Values("vit", "biformer", "davit"));

TEST(TowerPlan, PlainTowerIsGlobalEverywhereAndTheOthersFollowTheirConfig) {
    VitModel m;
    vit_load(m, tower_dir("biformer"));
    ASSERT_EQ(m.hp.block_attention.size(), 6u);
    EXPECT_EQ(m.hp.block_attention[0].kind, BlockAttention::Kind::routing);
    EXPECT_EQ(m.hp.block_attention[0].lce_kernel, 5);
    EXPECT_TRUE(m.hp.block_attention[0].channel_scale);
    EXPECT_EQ(m.hp.block_attention[5].kind, BlockAttention::Kind::global);
    EXPECT_NE(m.blocks[0].lce_w, nullptr);
    EXPECT_EQ(m.blocks[5].lce_w, nullptr);
    EXPECT_EQ(m.hp.act, "quick_gelu");
    EXPECT_EQ(m.patch_b, nullptr);  // pre-norm: bias-free patch convolution
}

// A copy of a tower whose config.json's model_args.block_attention is replaced.
std::string tower_with_plan(const std::string& kind, const nlohmann::json& plan) {
    const std::string dir = temp_dir();
    fs::copy(tower_dir(kind), dir, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
    nlohmann::json cfg = nlohmann::json::parse(std::ifstream(dir + "/config.json"));
    cfg["model_args"]["block_attention"] = plan;
    std::ofstream(dir + "/config.json") << cfg.dump(1);
    return dir;
}

void expect_load_error(const std::string& dir, const std::string& message) {
    VitModel m;
    try {
        vit_load(m, dir);
        ADD_FAILURE() << "expected an error containing: " << message;
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
    }
}

TEST(TowerPlan, MalformedPlansAreRefusedNamingTheEntry) {
    const nlohmann::json global = {{"kind", "global"}};
    auto plan = [&](const nlohmann::json& first) {
        nlohmann::json p = nlohmann::json::array({first});
        for (int i = 1; i < 6; ++i) p.push_back(global);
        return p;
    };
    expect_load_error(tower_with_plan("vit", nlohmann::json::array({global, global})),
                      "block_attention must be a list with one entry per block (6)");
    expect_load_error(tower_with_plan("vit", plan({{"kind", "sparse"}})),
                      "block_attention[0]: kind 'sparse' is not one of global, routing, window, channel");
    expect_load_error(tower_with_plan("vit", plan({{"kind", "window"}, {"window", 5}})),
                      "window must divide both sides of the 14x14 patch grid, got 5");
    expect_load_error(tower_with_plan("vit", plan({{"kind", "channel"}, {"groups", 5}})),
                      "groups must divide embed_dim 192, got 5");
    expect_load_error(tower_with_plan("vit", plan({{"kind", "routing"}, {"regions", 15}})),
                      "regions must be in 1..14");
    expect_load_error(tower_with_plan("vit", plan({{"kind", "routing"}, {"topk", 50}})),
                      "topk must be in 1..regions^2 = 49, got 50");
    expect_load_error(tower_with_plan("vit", plan({{"kind", "window"}, {"topk", 4}})),
                      "key 'topk' does not apply to window attention");
    expect_load_error(tower_with_plan("vit", plan({{"kind", "routing"}, {"lce_kernel", 4}})),
                      "lce_kernel must be 0 (none) or odd in 1..15, got 4");
    // The plan asks for LCE weights the file does not have, and the reverse.
    expect_load_error(tower_with_plan("vit", plan({{"kind", "routing"}, {"lce_kernel", 5}})),
                      "blocks.0.attn.lepe.weight");
    expect_load_error(tower_with_plan("biformer", plan(global)), "tensor 'blocks.0.attn.lepe.bias' is not part of");
}

TEST(TowerPlan, StagesCannotReplaceOrReshapeTrainedGridAttention) {
    const std::string dir = temp_dir();
    {
        std::ofstream(dir + "/route.yaml") << "model: " << tower_dir("biformer")
                                           << "\nstages:\n  - biformer_routing: {blocks: [0], topk: 4}\n";
        std::ofstream(dir + "/evit-cls.yaml") << "model: " << tower_dir("davit")
                                              << "\nstages:\n  - evit: {blocks: [1], keep_rate: 0.5}\n";
        std::ofstream(dir + "/evit.yaml") << "model: " << tower_dir("davit")
                                          << "\nstages:\n  - evit: {blocks: [0], keep_rate: 0.5}\n";
    }
    std::vector<float> pixels;
    try {
        Classifier clf({.model = "", .pipeline = dir + "/route.yaml", .threads = 1, .max_batch = 1});
        pixels.assign(size_t(clf.input_floats()), 0.1f);
        clf.classify(pixels.data(), 1, 1);
        ADD_FAILURE() << "a stage replaced trained routing attention";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("block 0 was trained with routing attention; a stage cannot replace it"),
                  std::string::npos)
            << e.what();
    }
    try {
        Classifier clf({.model = "", .pipeline = dir + "/evit.yaml", .threads = 1, .max_batch = 1});
        pixels.assign(size_t(clf.input_floats()), 0.1f);
        clf.classify(pixels.data(), 1, 1);
        ADD_FAILURE() << "EViT reshaped the tokens before a window block";
    } catch (const Error& e) {
        // Channel attention (block 1) takes any token set; the window block after it cannot.
        EXPECT_NE(std::string(e.what()).find("block 2 was trained with window attention over the patch grid, but "
                                             "an earlier stage changed the tokens (100 left)"),
                  std::string::npos)
            << e.what();
    }
    try {
        Classifier clf({.model = "", .pipeline = dir + "/evit-cls.yaml", .threads = 1, .max_batch = 1});
        clf.classify(pixels.data(), 1, 1);
        ADD_FAILURE() << "EViT read a CLS row from channel attention";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("block 1 has channel-group attention, which has no CLS attention row"),
                  std::string::npos)
            << e.what();
    }
}

}  // namespace
}  // namespace tessera
