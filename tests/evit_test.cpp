// EViT: the pure selection / fusion / token-map functions against naive
// references, the stage on a hand-built block, the schedule and MACs through
// the tiny random ViT, the real ViT-Tiny's token counts and GMACs, and the
// errors for impossible settings.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <random>

#include "models/vit.h"
#include "pipeline/config.h"
#include "stages/evit.h"
#include "tessera/classifier.h"
#include "tessera/error.h"
#include "test_support.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;

using test::error_of;

std::unique_ptr<EvitStage> make_stage(const std::string& settings) {
    YamlMap params(YAML::Load(settings), "test.yaml", "stages[0].evit");
    auto stage = std::make_unique<EvitStage>(params);
    params.finish();
    return stage;
}

// ---- naive references

// Full stable sort by (score descending, index ascending); the first k are kept.
struct NaiveSplit {
    std::vector<int32_t> kept, dropped;
};
NaiveSplit naive_select(const std::vector<float>& scores, int k, EvitOrder order) {
    const int n = int(scores.size());
    std::vector<int32_t> idx(static_cast<size_t>(n));
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return scores[size_t(a)] > scores[size_t(b)]; });
    NaiveSplit s;
    s.kept.assign(idx.begin(), idx.begin() + k);
    s.dropped.assign(idx.begin() + k, idx.end());
    if (order == EvitOrder::raster) std::sort(s.kept.begin(), s.kept.end());
    std::sort(s.dropped.begin(), s.dropped.end());
    return s;
}

// Scores with many ties: multiples of 1/8.
std::vector<float> tied_scores(int n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<float> s(static_cast<size_t>(n));
    for (float& v : s) v = float(rng() % 5) / 8.0f;
    return s;
}

// ---- pure functions

TEST(EvitMath, KeepCountIsPythonsCeilInDouble) {
    // {rate, N - 1, math.ceil(rate * (N - 1)) as Python computes it}
    struct Row {
        double rate;
        int candidates, kept;
    } rows[] = {
        {0.7, 196, 138}, {0.7, 139, 98}, {0.7, 99, 70},    // ViT-Tiny / DeiT-S at the defaults
        {0.5, 196, 98},  {0.5, 99, 50},  {0.5, 51, 26},   //
        {0.9, 196, 177}, {0.9, 178, 161}, {0.9, 162, 146},  //
        {1.0, 196, 196}, {0.07, 100, 8},                    // 0.07 * 100 = 7.000000000000001 in double
        {0.7, 3, 3},     {1e-9, 5, 1},                      // at least one token is always kept
    };
    for (const Row& r : rows) EXPECT_EQ(evit_keep_count(r.rate, r.candidates), r.kept) << r.rate << " * " << r.candidates;
}

TEST(EvitMath, ScoresAreTheHeadMeanOfTheClsRowWithoutTheClsColumn) {
    const int heads = 3, count = 7;
    auto attn = test::random_values(size_t(heads * count), 11, 1.0f);
    std::vector<float> scores(size_t(count - 1));
    evit_scores(scores.data(), attn.data(), heads, count);
    for (int j = 0; j < count - 1; ++j) {
        double mean = 0;
        for (int h = 0; h < heads; ++h) mean += attn[size_t(h * count + 1 + j)];
        EXPECT_NEAR(scores[size_t(j)], mean / heads, 1e-6) << j;
    }
}

TEST(EvitMath, SelectionMatchesAFullSortWithTiesToTheLowerIndex) {
    for (uint32_t seed = 1; seed <= 40; ++seed) {
        const int n = 1 + int(seed * 7 % 37);
        const std::vector<float> scores = tied_scores(n, seed);
        for (int k = 1; k <= n; ++k)
            for (EvitOrder order : {EvitOrder::score, EvitOrder::raster}) {
                std::vector<int32_t> kept(static_cast<size_t>(n), -7), dropped(static_cast<size_t>(n), -7), work(static_cast<size_t>(n));
                std::vector<uint8_t> mask(static_cast<size_t>(n));
                evit_select(kept.data(), dropped.data(), scores.data(), n, k, order, work.data(), mask.data());
                NaiveSplit ref = naive_select(scores, k, order);
                const std::string what = "seed " + std::to_string(seed) + " n " + std::to_string(n) + " k " +
                                          std::to_string(k) + (order == EvitOrder::score ? " score" : " raster");
                EXPECT_EQ(std::vector<int32_t>(kept.begin(), kept.begin() + k), ref.kept) << what;
                EXPECT_EQ(std::vector<int32_t>(dropped.begin(), dropped.begin() + (n - k)), ref.dropped) << what;
            }
    }
}

TEST(EvitMath, FusionIsTheRawAttentionWeightedSumOfTheDroppedRows) {
    const int n = 23, dim = 9;
    auto y = test::random_values(size_t(n * dim), 5, 2.0f);
    auto scores = test::random_values(size_t(n), 6, 0.1f);
    for (float& s : scores) s = std::abs(s);
    const std::vector<int32_t> dropped = {0, 3, 4, 10, 17, 22};
    std::vector<float> f(size_t(dim), -1.0f);
    evit_fuse(f.data(), y.data(), dim, scores.data(), dropped.data(), int(dropped.size()));
    for (int c = 0; c < dim; ++c) {
        float ref = 0.0f;  // same order, not renormalized
        for (int32_t j : dropped) ref += scores[size_t(j)] * y[size_t(j * dim + c)];
        EXPECT_NEAR(f[size_t(c)], ref, 1e-6f * (1.0f + std::abs(ref))) << c;
    }
    // Nothing dropped: a zero token.
    evit_fuse(f.data(), y.data(), dim, scores.data(), dropped.data(), 0);
    for (float v : f) EXPECT_EQ(v, 0.0f);
}

TEST(EvitMath, TokenMapKeepsProvenanceSizesAndKinds) {
    // CLS + a 3x4 grid; two rounds, the second one over a sequence that holds
    // the first round's fused token.
    TokenState ts;
    ts.init(1, 3, 4);
    std::vector<float> scores = tied_scores(12, 3);
    std::vector<int32_t> kept(12), dropped(12), work(12), map(13);
    std::vector<uint8_t> mask(12);
    const int k = evit_keep_count(0.5, 12);  // 6
    evit_select(kept.data(), dropped.data(), scores.data(), 12, k, EvitOrder::score, work.data(), mask.data());
    int new_count = evit_token_map(map.data(), 12, kept.data(), k, dropped.data(), 12 - k, true);
    ASSERT_EQ(new_count, 1 + 6 + 1);
    ts.remap(map.data(), new_count);
    ts.kind[size_t(1 + k)] = TokenKind::fused;
    for (int i = 0; i < k; ++i) EXPECT_EQ(ts.patch_owner[size_t(kept[size_t(i)])], 1 + i);
    for (int i = 0; i < 12 - k; ++i) EXPECT_EQ(ts.patch_owner[size_t(dropped[size_t(i)])], 1 + k);
    EXPECT_EQ(ts.size[7], 6.0f);
    EXPECT_EQ(ts.kind[0], TokenKind::prefix);
    for (int t = 1; t <= k; ++t) EXPECT_EQ(ts.kind[size_t(t)], TokenKind::patch) << t;
    EXPECT_EQ(ts.kind[7], TokenKind::fused);

    // Round 2 over 7 candidates (the fused token is candidate 6), raster
    // order, no fusion: drop the fused token and two patches.
    std::vector<float> s2 = {0.9f, 0.1f, 0.8f, 0.7f, 0.05f, 0.6f, 0.01f};
    const int k2 = evit_keep_count(0.6, 7);  // ceil(4.2) = 5
    ASSERT_EQ(k2, 5);
    evit_select(kept.data(), dropped.data(), s2.data(), 7, k2, EvitOrder::raster, work.data(), mask.data());
    EXPECT_EQ(std::vector<int32_t>(kept.begin(), kept.begin() + 5), (std::vector<int32_t>{0, 1, 2, 3, 5}));
    EXPECT_EQ(std::vector<int32_t>(dropped.begin(), dropped.begin() + 2), (std::vector<int32_t>{4, 6}));
    const std::vector<int32_t> owner_before = ts.patch_owner;
    new_count = evit_token_map(map.data(), 7, kept.data(), k2, dropped.data(), 2, false);
    ASSERT_EQ(new_count, 6);
    EXPECT_EQ(std::vector<int32_t>(map.begin(), map.begin() + 8), (std::vector<int32_t>{0, 1, 2, 3, 4, -1, 5, -1}));
    ts.remap(map.data(), new_count);
    for (int p = 0; p < 12; ++p) {
        const int32_t before = owner_before[size_t(p)];
        EXPECT_EQ(ts.patch_owner[size_t(p)], map[size_t(before)]) << "patch " << p;
    }
    float total = 0;
    for (int t = 1; t < ts.count; ++t) total += ts.size[size_t(t)];
    EXPECT_EQ(total, 12.0f - 6.0f - 1.0f);  // the fused token's 6 patches and one patch are gone
}

// ---- the stage on one hand-built block

TEST(EvitStage, RewritesTheBlockAsClsKeptAndFused) {
    for (EvitOrder order : {EvitOrder::score, EvitOrder::raster}) {
        auto stage = make_stage(std::string("{blocks: [0], keep_rate: 0.5, order: ") +
                                (order == EvitOrder::score ? "score" : "raster") + "}");
        const int heads = 2, dim = 5, gh = 3, gw = 3, count = 10;
        stage->check({1, heads, dim, 1, gh, gw});
        auto x = test::random_values(size_t(count * dim), 21);
        auto attn = test::random_values(size_t(heads * count), 22);
        for (float& a : attn) a = std::abs(a) / count;
        const std::vector<float> x0 = x;
        TokenState ts;
        ts.init(1, gh, gw);
        std::vector<float> scratch(size_t(count * (dim + count)));
        Ledger ledger;
        BlockView v;
        v.block = 0, v.ledger = &ledger, v.x = x.data(), v.dim = dim, v.heads = heads;
        v.cls_attention = attn.data(), v.state = &ts, v.scratch = scratch.data(), v.scratch_floats = long(scratch.size());
        ASSERT_TRUE(stage->signals(0).cls_attention);
        AttentionView av;
        av.block = 0, av.tokens = count;
        EXPECT_FALSE(stage->encoder_attention(av));
        stage->encoder_after_attention(v);

        std::vector<float> scores(9);
        for (int j = 0; j < 9; ++j) scores[size_t(j)] = (attn[size_t(1 + j)] + attn[size_t(count + 1 + j)]) / 2.0f;
        NaiveSplit ref = naive_select(scores, 5, order);
        ASSERT_EQ(ts.count, 1 + 5 + 1);
        for (int c = 0; c < dim; ++c) EXPECT_EQ(x[size_t(c)], x0[size_t(c)]);  // CLS untouched
        for (int i = 0; i < 5; ++i)
            for (int c = 0; c < dim; ++c)
                EXPECT_EQ(x[size_t((1 + i) * dim + c)], x0[size_t((1 + ref.kept[size_t(i)]) * dim + c)]) << i;
        for (int c = 0; c < dim; ++c) {
            float f = 0;
            for (int32_t j : ref.dropped) f += scores[size_t(j)] * x0[size_t((1 + j) * dim + c)];
            EXPECT_NEAR(x[size_t(6 * dim + c)], f, 1e-6f) << c;
        }
        EXPECT_EQ(ledger.total(), uint64_t(4 * dim));  // Ndrop x C
        EXPECT_EQ(ledger.by_component(Component::other), uint64_t(4 * dim));
        EXPECT_EQ(ts.kind[6], TokenKind::fused);
        EXPECT_EQ(ts.size[6], 4.0f);
        for (int i = 0; i < 5; ++i) EXPECT_EQ(ts.patch_owner[size_t(ref.kept[size_t(i)])], 1 + i);
        for (int32_t j : ref.dropped) EXPECT_EQ(ts.patch_owner[size_t(j)], 6);

        // Not a chosen block: nothing happens.
        const std::vector<float> x1 = x;
        v.block = 1;
        EXPECT_FALSE(stage->signals(1).cls_attention);
        stage->encoder_after_attention(v);
        EXPECT_EQ(x, x1);
        EXPECT_EQ(ts.count, 7);
    }
}

// ---- through the tiny random ViT

struct TinyModel {
    test::TinyVit spec;
    VitModel model;
    VitState state;
    TinyModel(int batch, test::TinyVit s) : spec(s) {
        std::string dir = test::temp_dir() + "/tiny";
        test::write_tiny_vit(dir, spec);
        vit_load(model, dir);
        vit_state_init(state, model, batch);
    }
};

// Tokens entering each block and MACs for an EViT schedule, from the formulas.
struct Schedule {
    std::vector<int> entering;
    uint64_t macs = 0;
};
Schedule analytic_schedule(const test::TinyVit& v, const std::vector<int>& blocks, double rate, bool fuse) {
    const uint64_t c = uint64_t(v.dim), hidden = 4 * c, grid = uint64_t((v.img / v.patch) * (v.img / v.patch));
    Schedule s;
    s.macs = grid * uint64_t(3 * v.patch * v.patch) * c + c * uint64_t(v.classes);
    uint64_t n = grid + 1;
    for (int l = 0; l < v.depth; ++l) {
        s.entering.push_back(int(n));
        s.macs += n * c * 3 * c + 2 * n * n * c + n * c * c;  // qkv, scores + values, proj
        if (std::find(blocks.begin(), blocks.end(), l) != blocks.end()) {
            const uint64_t k = uint64_t(std::ceil(rate * double(n - 1)));
            if (k < n - 1) {
                if (fuse) s.macs += (n - 1 - k) * c;  // the fusion product
                n = 1 + k + (fuse ? 1 : 0);
            }
        }
        s.macs += 2 * n * c * hidden;  // fc1, fc2
    }
    return s;
}

TEST(EvitTinyVit, TokenCountsAndMacsFollowTheSchedule) {
    const test::TinyVit spec{64, 8, 32, 5, 2, 10, 7};  // 64 patches, 5 blocks
    TinyModel m(1, spec);
    auto pixels = test::random_values(3 * 64 * 64, 8);
    std::vector<float> logits(10);
    struct Case {
        std::string settings;
        std::vector<int> blocks;
        double rate;
        bool fuse;
    } cases[] = {
        {"{blocks: [1, 2, 4]}", {1, 2, 4}, 0.7, true},
        {"{blocks: [0, 3], keep_rate: 0.5, fuse: false}", {0, 3}, 0.5, false},
        {"{blocks: [0, 1, 2, 3, 4], keep_rate: 0.3, order: raster}", {0, 1, 2, 3, 4}, 0.3, true},
        {"{blocks: [2], keep_rate: 0.01}", {2}, 0.01, true},
    };
    for (const Case& c : cases) {
        auto stage = make_stage(c.settings);
        stage->check(m.model.encoder_shape());
        Stage* stages[] = {stage.get()};
        Ledger ledger;
        vit_forward(m.model, m.state, pixels.data(), 1, stages, 1, &ledger, logits.data());
        const Schedule want = analytic_schedule(spec, c.blocks, c.rate, c.fuse);
        EXPECT_EQ(m.state.tokens_entering_block, want.entering) << c.settings;
        EXPECT_EQ(ledger.total(), want.macs) << c.settings;
        // Provenance: every patch is owned by a live token (fusion) or dropped.
        const TokenState& ts = m.state.tokens[0];
        float covered = 0;
        for (int t = 1; t < ts.count; ++t) covered += ts.size[size_t(t)];
        if (c.fuse) {
            EXPECT_EQ(covered, 64.0f) << c.settings;
            EXPECT_EQ(ts.kind[size_t(ts.count - 1)], TokenKind::fused) << c.settings;
        }
        for (int p = 0; p < 64; ++p) {
            const int32_t owner = ts.patch_owner[size_t(p)];
            EXPECT_TRUE(owner == -1 ? !c.fuse : owner >= 1 && owner < ts.count) << c.settings << " patch " << p;
        }
        for (float v : logits) EXPECT_TRUE(std::isfinite(v));
    }
}

TEST(EvitTinyVit, OrderDoesNotChangeAClsClassifierAndKeepRateOneChangesNothing) {
    const test::TinyVit spec{64, 8, 32, 4, 2, 10, 9};
    TinyModel m(1, spec);
    auto pixels = test::random_values(3 * 64 * 64, 10);
    auto run = [&](const std::string& settings) {
        std::vector<float> logits(10);
        if (settings.empty()) {
            vit_forward(m.model, m.state, pixels.data(), 1, nullptr, 0, nullptr, logits.data());
            return logits;
        }
        auto stage = make_stage(settings);
        stage->check(m.model.encoder_shape());
        Stage* stages[] = {stage.get()};
        vit_forward(m.model, m.state, pixels.data(), 1, stages, 1, nullptr, logits.data());
        return logits;
    };
    const auto plain = run("");
    EXPECT_EQ(run("{blocks: [0, 1, 2, 3], keep_rate: 1}"), plain);  // k == N - 1: no fused token, no change
    const auto by_score = run("{blocks: [1, 2], keep_rate: 0.5, order: score}");
    const auto by_raster = run("{blocks: [1, 2], keep_rate: 0.5, order: raster}");
    EXPECT_NE(by_score, plain);
    for (int i = 0; i < 10; ++i) EXPECT_NEAR(by_score[size_t(i)], by_raster[size_t(i)], 1e-4f) << i;
}

TEST(EvitTinyVit, BatchedForwardEqualsOneImageAtATime) {
    const test::TinyVit spec{64, 8, 32, 4, 2, 10, 12};
    TinyModel batched(3, spec), single(1, spec);
    auto stage = make_stage("{blocks: [0, 2], keep_rate: 0.6}");
    stage->check(batched.model.encoder_shape());
    Stage* stages[] = {stage.get()};
    auto pixels = test::random_values(3 * 3 * 64 * 64, 13);
    std::vector<float> logits3(30), logits1(10);
    vit_forward(batched.model, batched.state, pixels.data(), 3, stages, 1, nullptr, logits3.data());
    for (int b = 0; b < 3; ++b) {
        vit_forward(single.model, single.state, pixels.data() + b * 3 * 64 * 64, 1, stages, 1, nullptr, logits1.data());
        for (int k = 0; k < 10; ++k) EXPECT_NEAR(logits3[size_t(b * 10 + k)], logits1[size_t(k)], 1e-4f) << b << "," << k;
    }
}

// ---- the real ViT-Tiny

TEST(EvitReal, VitTinyTokenCountsAndGmacsAtTheDefaults) {
    TESSERA_REQUIRE_SHARED();
    Classifier clf({test::shared_dir() + "/models/vit_tiny_patch16_224.augreg_in21k_ft_in1k",
                    test::source_path("pipelines/evit-0.7.yaml"), 0, 1});
    Classification c =
        clf.classify_file(test::shared_dir() + "/data/imagenet-val1300/images/ILSVRC2012_val_00000347.JPEG", 5);
    // 196 patches -> ceil(0.7 * 196) = 138 + 1 fused at block 3, ceil(0.7 * 139) = 98 + 1
    // at block 6, ceil(0.7 * 99) = 70 + 1 at block 9.
    EXPECT_EQ(c.tokens, (std::vector<int>{197, 197, 197, 197, 140, 140, 140, 100, 100, 100, 72, 72}));

    // Analytic count, C = 192, hidden 4C, per block with n tokens into the
    // attention and m into the MLP:
    //   attention(n) = 3nC^2 (qkv) + 2n^2C (scores, values) + nC^2 (proj),  mlp(m) = 2m * 4C^2
    // plus patch embedding 196 * 768 * C, head C * 1000, and the fusion
    // products (196-138 + 139-98 + 99-70) * C.
    const uint64_t C = 192;
    auto attention = [&](uint64_t n) { return 4 * n * C * C + 2 * n * n * C; };
    auto mlp = [&](uint64_t m) { return 8 * m * C * C; };
    const uint64_t in[12] = {197, 197, 197, 197, 140, 140, 140, 100, 100, 100, 72, 72};
    const uint64_t out[12] = {197, 197, 197, 140, 140, 140, 100, 100, 100, 72, 72, 72};
    uint64_t analytic = 196 * 768 * C + C * 1000 + (58 + 41 + 29) * C;
    for (int l = 0; l < 12; ++l) analytic += attention(in[l]) + mlp(out[l]);
    EXPECT_NEAR(double(analytic) * 1e-9, 0.8207, 0.8207 * 0.005);
    EXPECT_EQ(c.macs, analytic);
    EXPECT_NEAR(double(c.macs) * 1e-9, 0.8207, 0.8207 * 0.005);
}

// ---- errors

TEST(EvitConfig, ImpossibleSettingsNameTheKey) {
    const EncoderShape shape{12, 3, 192, 1, 14, 14};
    const std::string f = test::temp_dir() + "/p.yaml";
    auto build = [&](const std::string& stage_line, const EncoderShape& s) {
        test::write_file(f, "stages:\n  - evit: " + stage_line + "\n");
        return error_of([&] { stages_build(pipeline_read(f).stages, s); });
    };
    auto expect = [&](const std::string& stage_line, const std::string& message) {
        EXPECT_EQ(build(stage_line, shape), f + ":2: " + message) << stage_line;
    };
    expect("{keep_rate: 0}", "key 'stages[0].evit.keep_rate': must be in (0, 1], got 0");
    expect("{keep_rate: 1.5}", "key 'stages[0].evit.keep_rate': must be in (0, 1], got 1.5");
    expect("{keep_rate: -0.2}", "key 'stages[0].evit.keep_rate': must be in (0, 1], got -0.2");
    expect("{keep_rate: x}", "key 'stages[0].evit.keep_rate': expected a number, got 'x'");
    expect("{blocks: [12]}", "key 'stages[0].evit.blocks': block 12 is past the encoder's last block 11 (depth 12)");
    expect("{blocks: [3, 9, 6]}", "key 'stages[0].evit.blocks': must be strictly increasing, got 6 after 9");
    expect("{blocks: [3, 3]}", "key 'stages[0].evit.blocks': must be strictly increasing, got 3 after 3");
    expect("{blocks: []}", "key 'stages[0].evit.blocks': must list at least one block");
    expect("{blocks: [-1]}", "key 'stages[0].evit.blocks': values must be in 0..255, got -1");
    expect("{blocks: 3}", "key 'stages[0].evit.blocks': expected a list of integers");
    expect("{fuse: maybe}", "key 'stages[0].evit.fuse': expected true or false, got 'maybe'");
    expect("{order: zigzag}", "key 'stages[0].evit.order': expected score or raster, got 'zigzag'");
    expect("{keep_rate: 0.7, keep: 3}", "unknown key 'stages[0].evit.keep'");
    // The defaults (blocks 3, 6, 9) do not fit a 6-block encoder.
    EXPECT_THAT(build("{}", {6, 3, 192, 1, 14, 14}), HasSubstr("key 'stages[0].evit.blocks': block 6 is past"));
    EXPECT_THAT(build("{}", {12, 3, 192, 0, 14, 14}), HasSubstr("needs exactly one prefix token (a CLS token)"));
    EXPECT_EQ(build("{}", shape), "(no error)");
}

TEST(EvitConfig, DefaultsAreMethodsSectionOne) {
    auto stage = make_stage("{}");
    EXPECT_EQ(stage->blocks(), (std::vector<int>{3, 6, 9}));
    EXPECT_EQ(stage->keep_rate(), 0.7);
    EXPECT_TRUE(stage->fuse());
    EXPECT_EQ(stage->order(), EvitOrder::score);
    for (int b = 0; b < 12; ++b) EXPECT_EQ(stage->signals(b).cls_attention, b == 3 || b == 6 || b == 9) << b;
}

}  // namespace
}  // namespace tessera
