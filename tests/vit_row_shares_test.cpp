// A ViT block's row-wise sub-layers run on per-thread row shares
// (kernels/row_shares.h): the logits must not depend on how many threads
// share the rows, in f32 and bf16 (where bf16 runs on oneDNN, the layer norms
// and fc1 write bf16 rows into buffers the threads share; forced with
// TESSERA_LINEAR=onednn where this CPU's bf16 products would not pay), with layer scale,
// whose products write f32 rows next to them, with quick_gelu (its MLP in
// f32 after a bf16 attention), and with a stage between attention and MLP.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "models/vit.h"
#include "io/yaml_map.h"
#include "stages/evit.h"
#include "tessera/threads.h"
#include "test_support.h"

namespace tessera {
namespace {

// skew: thread 0's share weight against 1 for the others at the start
// (ThreadPace; the forward pass then learns the threads' real speeds).
std::vector<float> logits_on(int threads, const std::string& dir, DType dtype, int batch, const std::vector<float>& pixels,
                             Stage* stage, double skew = 1.0) {
    const int saved = threads_count();
    threads_init(threads);
    VitModel model;
    vit_load(model, dir, dtype);
    VitState state;
    vit_state_init(state, model, batch);
    state.paced_shares = skew != 1.0;
    for (ThreadPace* pace : {&state.paces.qkv, &state.paces.attention, &state.paces.project_mlp, &state.paces.project,
                             &state.paces.mlp})
        pace->set_weight(0, skew);
    if (stage) stage->check(model.encoder_shape());
    std::vector<float> logits(size_t(batch) * 10);
    Stage* stages[] = {stage};
    Ledger ledger;
    vit_forward(model, state, pixels.data(), batch, stage ? stages : nullptr, stage ? 1 : 0, &ledger, logits.data());
    threads_init(saved);
    logits.push_back(float(ledger.total()));  // the MACs too: shares must book each once
    return logits;
}

TEST(VitRowShares, LogitsDoNotDependOnTheThreadCount) {
    const test::ScopedEnv bf16_products("TESSERA_LINEAR", "onednn");  // bf16 below on oneDNN's bf16 form
    for (int variant = 0; variant < 3; ++variant) {
        test::TinyVit spec{64, 8, 32, 3, 2, 10, 21};
        const bool layer_scale = variant == 1;
        spec.layer_scale = layer_scale;
        if (variant == 2) spec.act = "quick_gelu";
        const std::string dir = test::temp_dir() + "/tiny" + std::to_string(variant);
        test::write_tiny_vit(dir, spec);
        const int batch = 3;  // 3 x 65 rows: shares of 97 and 98 rows on 2 threads, 65 on 3
        const std::vector<float> pixels = test::random_values(size_t(batch) * 3 * 64 * 64, 22);
        YamlMap params(YAML::Load("{blocks: [1], keep_rate: 0.6}"), "test.yaml", "stages[0].evit");
        EvitStage evit_stage(params);
        params.finish();
        Stage* evit = &evit_stage;
        for (DType dtype : {DType::f32, DType::bf16})
            for (Stage* stage : {static_cast<Stage*>(nullptr), evit}) {
                const std::vector<float> one = logits_on(1, dir, dtype, batch, pixels, stage);
                for (int threads : {2, 3}) {
                    const std::vector<float> many = logits_on(threads, dir, dtype, batch, pixels, stage);
                    ASSERT_EQ(many.size(), one.size());
                    EXPECT_EQ(many.back(), one.back()) << "MACs";
                    for (size_t i = 0; i + 1 < one.size(); ++i)
                        EXPECT_NEAR(many[i], one[i], dtype == DType::bf16 ? 2e-2f : 1e-4f)
                            << dtype_name(dtype) << (layer_scale ? ", layer scale" : "") << ", " << spec.act
                            << (stage ? ", EViT" : "")
                            << ", " << threads << " threads, logit " << i;
                }
            }
    }
}

TEST(VitRowShares, LogitsDoNotDependOnHowTheRowsAreSplit) {
    const test::ScopedEnv bf16_products("TESSERA_LINEAR", "onednn");  // bf16 below on oneDNN's bf16 form
    // Shares that follow the threads' speeds (ThreadPace) put rows on other
    // threads, in other product sizes: 1 : 3 and 3 : 1 against equal shares.
    test::TinyVit spec{64, 8, 32, 3, 2, 10, 21};
    const std::string dir = test::temp_dir() + "/skewed";
    test::write_tiny_vit(dir, spec);
    const int batch = 3;
    const std::vector<float> pixels = test::random_values(size_t(batch) * 3 * 64 * 64, 24);
    YamlMap params(YAML::Load("{blocks: [1], keep_rate: 0.6}"), "test.yaml", "stages[0].evit");
    EvitStage evit_stage(params);
    params.finish();
    for (DType dtype : {DType::f32, DType::bf16})
        for (Stage* stage : {static_cast<Stage*>(nullptr), static_cast<Stage*>(&evit_stage)}) {
            const std::vector<float> equal = logits_on(2, dir, dtype, batch, pixels, stage);
            for (double skew : {1.0 / 3.0, 3.0}) {
                const std::vector<float> skewed = logits_on(2, dir, dtype, batch, pixels, stage, skew);
                ASSERT_EQ(skewed.size(), equal.size());
                EXPECT_EQ(skewed.back(), equal.back()) << "MACs";
                for (size_t i = 0; i + 1 < equal.size(); ++i)
                    EXPECT_NEAR(skewed[i], equal[i], dtype == DType::bf16 ? 2e-2f : 1e-4f)
                        << dtype_name(dtype) << (stage ? ", EViT" : "") << ", skew " << skew << ", logit " << i;
            }
        }
}

// Asks for the attention hook at every block and computes nothing there:
// every block then runs as separate regions, the hooks between them.
class HookEveryBlock : public Stage {
public:
    const std::string& name() const override { return name_; }
    Signals signals(int) const override {
        Signals s;
        s.attention = true;
        return s;
    }

private:
    std::string name_ = "hook";
};

TEST(VitRowShares, WholeBlockRegionsGiveWhatSeparateRegionsGive) {
    const test::ScopedEnv bf16_products("TESSERA_LINEAR", "onednn");  // bf16 below on oneDNN's bf16 form
    // Blocks run as regions of whole blocks, the threads meeting once a
    // block and qkv alternating between two buffers, a region ending after
    // the projection of a block with after-attention hooks (EViT's) and the
    // next one starting with its MLP. Logits and MACs must be exactly those
    // of one region per sub-layer.
    test::TinyVit spec{64, 8, 32, 3, 2, 10, 21};  // 65 tokens, head size 16 (the fused attention's)
    const std::string dir = test::temp_dir() + "/regions";
    test::write_tiny_vit(dir, spec);
    YamlMap params(YAML::Load("{blocks: [1], keep_rate: 0.75}"), "test.yaml", "stages[0].evit");
    EvitStage evit(params);
    params.finish();
    HookEveryBlock hook;
    const int saved = threads_count();
    for (DType dtype : {DType::f32, DType::bf16})
        for (int threads : {2, 3})
            for (int batch : {1, 3}) {
                // EViT leaves 49 tokens after block 1: 24 rows a thread at batch 1 on 2 threads
                if (49 * batch / threads < row_share_min_rows) continue;
                threads_init(threads);
                VitModel model;
                vit_load(model, dir, dtype);
                VitState state;
                vit_state_init(state, model, batch);
                evit.check(model.encoder_shape());
                const std::vector<float> pixels = test::random_values(size_t(batch) * 3 * 64 * 64, 25);
                auto run = [&](std::vector<Stage*> stages) {
                    std::vector<float> logits(size_t(batch) * 10);
                    Ledger ledger;
                    vit_forward(model, state, pixels.data(), batch, stages.data(), int(stages.size()), &ledger,
                                logits.data());
                    logits.push_back(float(ledger.total()));
                    return logits;
                };
                const std::string where = std::string(dtype_name(dtype)) + ", " + std::to_string(threads) +
                                          " threads, batch " + std::to_string(batch);
                for (bool pruned : {false, true}) {
                    std::vector<Stage*> chain;
                    if (pruned) chain.push_back(&evit);
                    // One thread held back before each step: the others run ahead
                    // into the next block as far as the region lets them.
                    state.region_lag_us = 2000;
                    const std::vector<float> regions = run(chain);
                    state.region_lag_us = 0;
                    EXPECT_EQ(state.blocks_in_one_region, spec.depth) << where;
                    chain.push_back(&hook);
                    const std::vector<float> separate = run(chain);
                    EXPECT_EQ(state.blocks_in_one_region, 0) << where;
                    ASSERT_EQ(regions.size(), separate.size());
                    EXPECT_EQ(0, std::memcmp(regions.data(), separate.data(), separate.size() * sizeof(float)))
                        << where << (pruned ? ", EViT" : "") << ": differ by up to "
                        << test::max_abs_diff(regions, separate);
                }
                // Paced shares keep separate regions.
                state.paced_shares = true;
                run({});
                EXPECT_EQ(state.blocks_in_one_region, 0) << where;
            }
    threads_init(saved);
}

TEST(VitRowShares, LayerScaleIsApplied) {
    test::TinyVit plain{64, 8, 32, 3, 2, 10, 21}, scaled = plain;
    scaled.layer_scale = true;
    const std::string a = test::temp_dir() + "/plain", b = test::temp_dir() + "/scaled";
    test::write_tiny_vit(a, plain);
    test::write_tiny_vit(b, scaled);
    const std::vector<float> pixels = test::random_values(3 * 64 * 64, 23);
    EXPECT_GT(test::max_abs_diff(logits_on(2, a, DType::f32, 1, pixels, nullptr),
                                 logits_on(2, b, DType::f32, 1, pixels, nullptr)),
              1e-3f);
}

}  // namespace
}  // namespace tessera
