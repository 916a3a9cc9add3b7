// The stage interface: hooks arrive in order, requested signals are
// delivered, reorganizations keep provenance exact and batches consistent.
#include <gtest/gtest.h>

#include <cmath>

#include "io/yaml_map.h"
#include "models/vit.h"
#include "stages/biformer_routing.h"
#include "stages/window_attention.h"
#include "test_support.h"

namespace tessera {
namespace {

class RecordingStage : public Stage {
public:
    explicit RecordingStage(std::vector<std::string>* log, int cls_block = -1) : log_(log), cls_block_(cls_block) {}
    const std::string& name() const override { return name_; }
    // Asks for the attention and after-attention hooks at every block: it logs each call.
    Signals signals(int block) const override { return {block == cls_block_, true, true}; }
    bool encoder_attention(AttentionView& v) override {
        log_->push_back("attention " + std::to_string(v.block) + " tokens " + std::to_string(v.tokens) +
                        (v.cls_probs ? " cls" : ""));
        return false;
    }
    void encoder_after_attention(BlockView& v) override {
        std::string entry = "after_attention " + std::to_string(v.block);
        if (v.cls_attention) {  // the CLS row is a probability distribution per head
            for (int h = 0; h < v.heads; ++h) {
                double sum = 0;
                for (int j = 0; j < v.state->count; ++j) sum += v.cls_attention[h * v.state->count + j];
                if (std::abs(sum - 1.0) > 1e-5) entry += " bad-cls-sum";
            }
            entry += " cls";
        }
        log_->push_back(entry);
    }
    void encoder_after_encoder(EncoderView& v) override { log_->push_back("after_encoder tokens " + std::to_string(v.state->count)); }

private:
    std::string name_ = "recorder";
    std::vector<std::string>* log_;
    int cls_block_;
};

// Keeps the prefix and the first `keep` patch tokens at one block; the
// dropped tokens' provenance becomes -1.
class TruncateStage : public Stage {
public:
    TruncateStage(int block, int keep) : block_(block), keep_(keep) {}
    const std::string& name() const override { return name_; }
    Signals signals(int block) const override { return {false, block == block_}; }
    void encoder_after_attention(BlockView& v) override {
        if (v.block != block_) return;
        std::vector<int32_t> map(size_t(v.state->count), -1);
        int new_count = v.state->prefix + keep_;
        for (int t = 0; t < new_count; ++t) map[size_t(t)] = t;
        v.state->remap(map.data(), new_count);  // rows 0..new_count stay in place
    }

private:
    std::string name_ = "truncate";
    int block_, keep_;
};

struct TinyModel {
    VitModel model;
    VitState state;
    explicit TinyModel(int batch, test::TinyVit spec = {}) {
        std::string dir = test::temp_dir() + "/tiny";
        test::write_tiny_vit(dir, spec);
        vit_load(model, dir);
        vit_state_init(state, model, batch);
    }
};

TEST(StageHooks, SeenInOrderWithRequestedSignals) {
    TinyModel m(1);
    std::vector<std::string> log;
    RecordingStage recorder(&log, /*cls_block=*/1);
    Stage* stages[] = {&recorder};
    auto pixels = test::random_values(3 * 32 * 32, 3);
    std::vector<float> logits(10);
    vit_forward(m.model, m.state, pixels.data(), 1, stages, 1, nullptr, logits.data());
    std::vector<std::string> expected = {
        "attention 0 tokens 17",     "after_attention 0", "attention 1 tokens 17 cls", "after_attention 1 cls",
        "attention 2 tokens 17",     "after_attention 2", "after_encoder tokens 17"};
    EXPECT_EQ(log, expected);
}

// The after-attention hook runs only at blocks where a stage asks for it
// (Signals::after_attention); the other blocks run projection and MLP as one
// region, and the logits do not depend on which.
TEST(StageHooks, AttentionHooksRunOnlyWhereSignalled) {
    TinyModel m(1);
    struct OnlyAt : RecordingStage {
        using RecordingStage::RecordingStage;
        Signals signals(int block) const override { return {false, block == 1, block != 1}; }
    };
    std::vector<std::string> log;
    OnlyAt recorder(&log);
    Stage* stages[] = {&recorder};
    auto pixels = test::random_values(3 * 32 * 32, 3);
    std::vector<float> logits(10), plain(10);
    vit_forward(m.model, m.state, pixels.data(), 1, stages, 1, nullptr, logits.data());
    std::vector<std::string> expected = {"attention 0 tokens 17", "after_attention 1", "attention 2 tokens 17",
                                         "after_encoder tokens 17"};
    EXPECT_EQ(log, expected);
    vit_forward(m.model, m.state, pixels.data(), 1, nullptr, 0, nullptr, plain.data());
    EXPECT_LT(test::max_abs_diff(logits, plain), 1e-6f);
}

TEST(StageHooks, GridAttentionStagesWithoutCheckFailTheForwardPass) {
    // A routing or window stage knows its blocks only once check() has seen
    // the encoder: until then it asks for every block's attention hook,
    // which fails naming its file instead of leaving the blocks dense.
    TinyModel m(1);
    auto pixels = test::random_values(3 * 32 * 32, 8);
    std::vector<float> logits(10);
    auto forward_error = [&](Stage& stage) {
        Stage* chain[] = {&stage};
        return test::error_of([&] { vit_forward(m.model, m.state, pixels.data(), 1, chain, 1, nullptr, logits.data()); });
    };
    YamlMap routing_params(YAML::Load("{regions: 2, topk: 1}"), "p.yaml", "stages[0].biformer_routing");
    BiformerRoutingStage routing(routing_params);
    routing_params.finish();
    EXPECT_EQ(forward_error(routing), "p.yaml: biformer_routing: check() was not called before the forward pass");
    YamlMap window_params(YAML::Load("{window: 2}"), "p.yaml", "stages[0].window_attention");
    WindowAttentionStage window(window_params);
    window_params.finish();
    EXPECT_EQ(forward_error(window), "p.yaml: window_attention: check() was not called before the forward pass");
}

TEST(StageHooks, TwoStagesRunInListOrderAtEachHook) {
    TinyModel m(1);
    std::vector<std::string> a, b;
    RecordingStage first(&a), second(&b);
    std::vector<std::string> merged;
    struct Tagged : RecordingStage {
        Tagged(std::vector<std::string>* log, std::string tag, std::vector<std::string>* merged)
            : RecordingStage(log), tag_(std::move(tag)), merged_(merged) {}
        void encoder_after_attention(BlockView& v) override { merged_->push_back(tag_ + std::to_string(v.block)); }
        std::string tag_;
        std::vector<std::string>* merged_;
    } s1(&a, "first", &merged), s2(&b, "second", &merged);
    Stage* stages[] = {&s1, &s2};
    auto pixels = test::random_values(3 * 32 * 32, 3);
    std::vector<float> logits(10);
    vit_forward(m.model, m.state, pixels.data(), 1, stages, 2, nullptr, logits.data());
    EXPECT_EQ(merged, (std::vector<std::string>{"first0", "second0", "first1", "second1", "first2", "second2"}));
}

TEST(StageHooks, NoStageChangesNothing) {
    TinyModel m(1);
    std::vector<std::string> log;
    RecordingStage recorder(&log, 0);
    Stage* stages[] = {&recorder};
    auto pixels = test::random_values(3 * 32 * 32, 4);
    std::vector<float> plain(10), with_stage(10);
    vit_forward(m.model, m.state, pixels.data(), 1, nullptr, 0, nullptr, plain.data());
    vit_forward(m.model, m.state, pixels.data(), 1, stages, 1, nullptr, with_stage.data());
    EXPECT_EQ(plain, with_stage);
}

TEST(StageHooks, ReorganizationShortensLaterBlocksAndKeepsProvenance) {
    TinyModel m(1);
    TruncateStage truncate(/*block=*/1, /*keep=*/5);
    Stage* stages[] = {&truncate};
    auto pixels = test::random_values(3 * 32 * 32, 5);
    std::vector<float> logits(10);
    Ledger ledger;
    vit_forward(m.model, m.state, pixels.data(), 1, stages, 1, &ledger, logits.data());
    EXPECT_EQ(m.state.tokens_entering_block, (std::vector<int>{17, 17, 6}));
    const TokenState& ts = m.state.tokens[0];
    EXPECT_EQ(ts.count, 6);
    for (int p = 0; p < 16; ++p) EXPECT_EQ(ts.patch_owner[size_t(p)], p < 5 ? p + 1 : -1) << "patch " << p;
    EXPECT_EQ(ts.patches_of(3), std::vector<int32_t>{2});

    // MACs follow the schedule: block 1's MLP and block 2 see 6 tokens.
    const uint64_t c = 32, hidden = 128;
    auto attn = [&](uint64_t n) { return n * c * 3 * c + 2 * n * n * c + n * c * c; };
    auto mlp = [&](uint64_t n) { return 2 * n * c * hidden; };
    uint64_t expected = 16 * 192 * c + attn(17) + mlp(17) + attn(17) + mlp(6) + attn(6) + mlp(6) + c * 10;
    EXPECT_EQ(ledger.total(), expected);
}

TEST(StageHooks, BatchedForwardEqualsOneImageAtATime) {
    TinyModel batched(3);
    TinyModel single(1);
    TruncateStage truncate(0, 7);
    Stage* stages[] = {&truncate};
    auto pixels = test::random_values(3 * 3 * 32 * 32, 6);
    std::vector<float> logits3(30), logits1(10);
    vit_forward(batched.model, batched.state, pixels.data(), 3, stages, 1, nullptr, logits3.data());
    for (int b = 0; b < 3; ++b) {
        vit_forward(single.model, single.state, pixels.data() + b * 3 * 32 * 32, 1, stages, 1, nullptr, logits1.data());
        for (int k = 0; k < 10; ++k) EXPECT_NEAR(logits3[size_t(b * 10 + k)], logits1[size_t(k)], 1e-4f) << b << "," << k;
    }
}

TEST(TokenState, RemapMergesSizesAndProvenance) {
    TokenState s;
    s.init(1, 2, 3);  // CLS + 6 patches
    ASSERT_EQ(s.count, 7);
    // Merge tokens 2 and 5 into new token 2, drop token 6, keep the others in order.
    std::vector<int32_t> map = {0, 1, 2, 3, 4, 2, -1};
    s.remap(map.data(), 5);
    EXPECT_EQ(s.count, 5);
    EXPECT_EQ(s.size[2], 2.0f);
    EXPECT_EQ(s.patches_of(2), (std::vector<int32_t>{1, 4}));
    EXPECT_EQ(s.patch_owner[5], -1);
    // Fuse everything but CLS into token 1.
    std::vector<int32_t> fuse = {0, 1, 1, 1, 1};
    s.remap(fuse.data(), 2);
    EXPECT_EQ(s.size[1], 5.0f);
    EXPECT_EQ(s.patches_of(1), (std::vector<int32_t>{0, 1, 2, 3, 4}));
}

}  // namespace
}  // namespace tessera
