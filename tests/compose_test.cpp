// Stages compose: ToMe then EViT in one chain, with provenance exact and the
// CLS attention row following the tokens through each reorganization.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "models/vit.h"
#include "pipeline/config.h"
#include "tessera/error.h"
#include "test_support.h"

namespace tessera {
namespace {

std::vector<std::unique_ptr<Stage>> build(const std::string& yaml, const EncoderShape& shape) {
    return stages_build(pipeline_read(test::write_file(test::temp_dir() + "/p.yaml", yaml)).stages, shape);
}

// Sits between two stages and checks what the second one will see.
class CheckingStage : public Stage {
public:
    const std::string& name() const override { return name_; }
    Signals signals(int) const override { return {true, true}; }
    void encoder_after_attention(BlockView& v) override {
        const TokenState& ts = *v.state;
        for (int h = 0; h < v.heads; ++h) {
            double sum = 0;
            for (int j = 0; j < ts.count; ++j) sum += v.cls_attention[h * ts.count + j];
            worst_sum_error = std::max(worst_sum_error, std::abs(sum - 1.0));
        }
        ++calls;
    }
    double worst_sum_error = 0;
    int calls = 0;

private:
    std::string name_ = "checker";
};

void expect_exact_provenance(const TokenState& ts) {
    std::vector<int> covered(size_t(ts.count), 0);
    for (int32_t owner : ts.patch_owner) {
        ASSERT_GE(owner, ts.prefix);  // with fusion nothing is dropped
        ASSERT_LT(owner, ts.count);
        ++covered[size_t(owner)];
    }
    for (int t = ts.prefix; t < ts.count; ++t) {
        EXPECT_EQ(float(covered[size_t(t)]), ts.size[size_t(t)]) << "token " << t;
        EXPECT_EQ(ts.kind[size_t(t)] == TokenKind::patch, covered[size_t(t)] == 1) << "token " << t;
    }
}

TEST(Compose, TomeThenEvitKeepsProvenanceAndTheClsRowExact) {
    const std::string dir = test::temp_dir() + "/tiny";
    test::write_tiny_vit(dir, {});
    VitModel model;
    vit_load(model, dir);
    VitState state;
    vit_state_init(state, model, 2);
    auto stages = build("stages:\n  - tome: {r: 2}\n  - evit: {blocks: [1], keep_rate: 0.5}\n", model.encoder_shape());
    CheckingStage checker;
    Stage* chain[] = {stages[0].get(), &checker, stages[1].get()};
    auto pixels = test::random_values(2 * 3 * 32 * 32, 9);
    std::vector<float> logits(20);
    vit_forward(model, state, pixels.data(), 2, chain, 3, nullptr, logits.data());
    // 17 -> tome 15 | 15 -> tome 13 -> evit CLS + ceil(0.5 * 12) + fused = 8 | 8
    EXPECT_EQ(state.tokens_entering_block, (std::vector<int>{17, 15, 8}));
    EXPECT_EQ(checker.calls, 6);
    EXPECT_LT(checker.worst_sum_error, 1e-5);  // the carried CLS row is still a distribution
    for (int b = 0; b < 2; ++b) {
        const TokenState& ts = state.tokens[size_t(b)];
        EXPECT_EQ(ts.count, 6);
        expect_exact_provenance(ts);
        EXPECT_EQ(std::count(ts.kind.begin(), ts.kind.begin() + ts.count, TokenKind::fused), 1);
    }
}

TEST(Compose, TomeAfterAReorganizationInTheSameBlockIsRefused) {
    const std::string dir = test::temp_dir() + "/tiny";
    test::write_tiny_vit(dir, {});
    VitModel model;
    vit_load(model, dir);
    VitState state;
    vit_state_init(state, model, 1);
    auto stages = build("stages:\n  - evit: {blocks: [0], keep_rate: 0.5}\n  - tome: {r: 1}\n", model.encoder_shape());
    Stage* chain[] = {stages[0].get(), stages[1].get()};
    auto pixels = test::random_values(3 * 32 * 32, 10);
    std::vector<float> logits(10);
    try {
        vit_forward(model, state, pixels.data(), 1, chain, 2, nullptr, logits.data());
        FAIL() << "expected an error";
    } catch (const Error& e) {
        EXPECT_THAT(e.what(), ::testing::HasSubstr("list tome before it"));
    }
}

TEST(Compose, TomeAndEvitOnTheRealViTTinyFollowTheAnalyticSchedule) {
    TESSERA_REQUIRE_SHARED();
    VitModel model;
    vit_load(model, test::shared_dir() + "/models/vit_tiny_patch16_224.augreg_in21k_ft_in1k");
    VitState state;
    vit_state_init(state, model, 1);
    auto stages = build("stages:\n  - tome: {r: 8}\n  - evit: {keep_rate: 0.7}\n", model.encoder_shape());
    Stage* chain[] = {stages[0].get(), stages[1].get()};
    auto pixels = test::random_values(3 * 224 * 224, 11);
    std::vector<float> logits(1000);
    vit_forward(model, state, pixels.data(), 1, chain, 2, nullptr, logits.data());
    std::vector<int> expected;
    int n = 197;
    for (int block = 0; block < 12; ++block) {
        expected.push_back(n);
        n -= std::min(8, (n - 1) / 2);  // ToMe's guard
        if (block == 3 || block == 6 || block == 9) n = 1 + int(std::ceil(0.7 * (n - 1))) + 1;
    }
    EXPECT_EQ(state.tokens_entering_block, expected);
    expect_exact_provenance(state.tokens[0]);
}

}  // namespace
}  // namespace tessera
