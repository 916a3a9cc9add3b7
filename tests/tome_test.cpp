// ToMe: the matching and the weighted merge against a naive reference, the
// stage inside the tiny random ViT (token counts, MACs, proportional
// attention, batches), the real ViT-Tiny on one image, and setting errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <set>

#include "models/vit.h"
#include "pipeline/config.h"
#include "stages/tome.h"
#include "tessera/classifier.h"
#include "tessera/error.h"
#include "test_support.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;
using Groups = std::vector<std::vector<int>>;  // new token -> old tokens it holds, ascending

// Naive bipartite soft matching, written from the paper and the official
// code in float64: A = even tokens, B = odd tokens; each A token's best B
// partner by cosine (CLS excluded); the r best A tokens merge; the result is
// [unmerged A (ascending with a class token, else best first), B in order].
Groups reference_matching(const std::vector<float>& metric, int t, int d, int r, bool cls) {
    r = std::min(r, (t - (cls ? 1 : 0)) / 2);
    Groups groups;
    if (r <= 0) {
        for (int i = 0; i < t; ++i) groups.push_back({i});
        return groups;
    }
    auto unit = [&](int i) {
        auto v = std::vector<double>(size_t(d));
        double norm = 0;
        for (int j = 0; j < d; ++j) norm += double(metric[size_t(i * d + j)]) * metric[size_t(i * d + j)];
        for (int j = 0; j < d; ++j) v[size_t(j)] = metric[size_t(i * d + j)] / std::sqrt(norm);
        return v;
    };
    struct Edge {
        double score;
        int a, b;
    };
    std::vector<Edge> edges;
    for (int a = 0; a < t; a += 2) {
        Edge e{-std::numeric_limits<double>::infinity(), a, -1};
        for (int b = 1; b < t; b += 2) {
            double s = 0;
            const auto ua = unit(a), ub = unit(b);
            for (int j = 0; j < d; ++j) s += ua[size_t(j)] * ub[size_t(j)];
            if (cls && a == 0) s = -std::numeric_limits<double>::infinity();
            if (e.b < 0 || s > e.score) e.score = s, e.b = b;
        }
        edges.push_back(e);
    }
    std::stable_sort(edges.begin(), edges.end(), [](const Edge& x, const Edge& y) { return x.score > y.score; });
    std::vector<Edge> unmerged(edges.begin() + r, edges.end());
    if (cls) std::sort(unmerged.begin(), unmerged.end(), [](const Edge& x, const Edge& y) { return x.a < y.a; });
    for (const Edge& e : unmerged) groups.push_back({e.a});
    for (int b = 1; b < t; b += 2) {
        std::vector<int> g = {b};
        for (int k = 0; k < r; ++k)
            if (edges[size_t(k)].b == b) g.push_back(edges[size_t(k)].a);
        std::sort(g.begin(), g.end());
        groups.push_back(g);
    }
    return groups;
}

Groups groups_of(const TomePlan& plan) {
    Groups groups(size_t(plan.new_count));
    for (int t = 0; t < plan.tokens; ++t) {
        const int n = plan.old_to_new[t];
        EXPECT_GE(n, 0);
        EXPECT_LT(n, plan.new_count);
        if (n >= 0 && n < plan.new_count) groups[size_t(n)].push_back(t);
    }
    return groups;
}

TomePlan match(TomeWork& work, const std::vector<float>& metric, int t, int d, int r, bool cls, Ledger* ledger = nullptr) {
    tome_work_init(work, t, 4, d);
    std::copy(metric.begin(), metric.begin() + t * d, work.metric.begin());  // the first t rows
    return tome_match(work, t, r, cls, ledger);
}

TEST(TomeMatch, HandMadeExampleFollowsTheOfficialConvention) {
    // 7 tokens: A = {0 (CLS), 2, 4, 6}, B = {1, 3, 5}. Token 4 points where
    // token 1 does, token 6 almost where token 5 does; token 2 and CLS point
    // elsewhere (and CLS would match token 3 perfectly, were it not protected).
    const int t = 7, d = 3;
    std::vector<float> metric = {
        0, 0, 1,      // 0 CLS = token 3
        1, 0, 0,      // 1
        -1, -1, 0.1f,  // 2
        0, 0, 2,      // 3
        3, 0, 0,      // 4 = token 1 (cosine 1)
        0, 1, 0,      // 5
        0.1f, 1, 0,   // 6 ~ token 5
    };
    TomeWork work;
    Ledger ledger;
    TomePlan plan = match(work, metric, t, d, 2, true, &ledger);
    EXPECT_EQ(plan.r, 2);
    EXPECT_EQ(plan.new_count, 5);
    // unm = [CLS, 2]; dst = [1 + 4, 3, 5 + 6]
    EXPECT_EQ(std::vector<int32_t>(plan.old_to_new, plan.old_to_new + t), (std::vector<int32_t>{0, 2, 1, 3, 2, 4, 4}));
    EXPECT_EQ(ledger.total(), 4u * 3u * 3u);  // |A| x |B| x head_dim

    // r = 1 merges only the best pair; without a class token CLS is an ordinary
    // A token (it matches token 3 perfectly) and unmerged A tokens stay in
    // descending-similarity order: 6 (0.995), 2 (0.07), then 0 and 4 merged.
    plan = match(work, metric, t, d, 1, true);
    EXPECT_EQ(groups_of(plan), (Groups{{0}, {2}, {6}, {1, 4}, {3}, {5}}));
    plan = match(work, metric, t, d, 2, false);
    EXPECT_EQ(groups_of(plan), (Groups{{6}, {2}, {1, 4}, {0, 3}, {5}}));
}

TEST(TomeMatch, GuardMergesAtMostHalfOfTheUnprotectedTokens) {
    TomeWork work;
    auto metric = test::random_values(9 * 4, 7);
    TomePlan plan = match(work, metric, 9, 4, 100, true);  // (9 - 1) / 2 = 4
    EXPECT_EQ(plan.r, 4);
    EXPECT_EQ(plan.new_count, 5);
    EXPECT_EQ(plan.old_to_new[0], 0);
    plan = match(work, metric, 8, 4, 100, true);  // (8 - 1) / 2 = 3
    EXPECT_EQ(plan.r, 3);
    plan = match(work, metric, 8, 4, 100, false);  // 8 / 2 = 4: every A token merges
    EXPECT_EQ(plan.r, 4);
    EXPECT_EQ(plan.new_count, 4);
    Ledger ledger;
    for (int r : {0, 5}) {
        plan = match(work, metric, r == 0 ? 9 : 1, 4, r, true, &ledger);  // nothing to merge: identity, no product
        EXPECT_EQ(plan.r, 0);
        for (int i = 0; i < plan.tokens; ++i) EXPECT_EQ(plan.old_to_new[i], i);
    }
    EXPECT_EQ(ledger.total(), 0u);
}

TEST(TomeMatch, MatchesTheNaiveReferenceOnRandomInputs) {
    TomeWork work;
    uint32_t seed = 100;
    for (int t : {2, 3, 5, 8, 17, 33, 64, 197})
        for (int d : {3, 8, 16})
            for (bool cls : {true, false})
                for (int r : {1, 2, t / 4, t / 2, t}) {
                    auto metric = test::random_values(size_t(t * d), ++seed);
                    Ledger ledger;
                    TomePlan plan = match(work, metric, t, d, r, cls, &ledger);
                    Groups expected = reference_matching(metric, t, d, r, cls);
                    ASSERT_EQ(groups_of(plan), expected) << "t " << t << " d " << d << " r " << r << " cls " << cls;
                    ASSERT_EQ(plan.new_count, int(expected.size()));
                    const uint64_t products = plan.r > 0 ? uint64_t((t + 1) / 2) * (t / 2) * d : 0;
                    ASSERT_EQ(ledger.total(), products);
                }
}

TEST(TomeMatch, MeanKeysAverageTheKPartOverHeads) {
    const int t = 3, heads = 2, hd = 4, c = heads * hd;
    auto qkv = test::random_values(size_t(t * 3 * c), 11);
    std::vector<float> metric(size_t(t * hd));
    tome_mean_keys(metric.data(), qkv.data(), t, heads, hd);
    for (int i = 0; i < t; ++i)
        for (int j = 0; j < hd; ++j) {
            const float k0 = qkv[size_t(i * 3 * c + c + j)], k1 = qkv[size_t(i * 3 * c + c + hd + j)];
            EXPECT_FLOAT_EQ(metric[size_t(i * hd + j)], 0.5f * (k0 + k1));
        }
}

TEST(TomeMerge, SizeWeightedAveragesSizesAndProvenance) {
    // CLS + a 4x5 grid; two rounds of merging with sizes from the first.
    const int grid_h = 4, grid_w = 5, dim = 6, d = 3;
    TokenState state;
    state.init(1, grid_h, grid_w);
    std::vector<float> x = test::random_values(size_t(state.count * dim), 21);
    TomeWork work;
    tome_work_init(work, state.count, dim, d);
    uint32_t seed = 30;
    for (int round = 0; round < 2; ++round) {
        const int t = state.count;
        auto metric = test::random_values(size_t(t * d), ++seed);
        std::copy(metric.begin(), metric.end(), work.metric.begin());
        const TomePlan plan = tome_match(work, t, 4, true, nullptr);
        ASSERT_EQ(plan.new_count, t - 4);
        const Groups groups = groups_of(plan);

        std::vector<std::vector<int32_t>> patches_before;
        for (int i = 0; i < t; ++i) patches_before.push_back(state.patches_of(i));
        std::vector<float> out(size_t(plan.new_count * dim)), sums(size_t(plan.new_count));
        tome_merge(out.data(), sums.data(), x.data(), state.size.data(), plan.old_to_new, t, plan.new_count, dim);
        for (int n = 0; n < plan.new_count; ++n) {
            double total = 0;
            for (int old : groups[size_t(n)]) total += state.size[size_t(old)];
            EXPECT_EQ(sums[size_t(n)], float(total));
            for (int i = 0; i < dim; ++i) {
                double acc = 0;
                for (int old : groups[size_t(n)]) acc += double(x[size_t(old * dim + i)]) * state.size[size_t(old)];
                EXPECT_NEAR(out[size_t(n * dim + i)], acc / total, 1e-6) << "round " << round << " token " << n;
            }
        }

        state.remap(plan.old_to_new, plan.new_count);
        for (int n = 0; n < plan.new_count; ++n) {
            std::vector<int32_t> expected;
            for (int old : groups[size_t(n)])
                expected.insert(expected.end(), patches_before[size_t(old)].begin(), patches_before[size_t(old)].end());
            std::sort(expected.begin(), expected.end());
            EXPECT_EQ(state.patches_of(n), expected) << "round " << round << " token " << n;
            EXPECT_EQ(state.size[size_t(n)], float(n == 0 ? 1 : expected.size()));
            const TokenKind kind = n == 0 ? TokenKind::prefix : expected.size() > 1 ? TokenKind::merged : TokenKind::patch;
            EXPECT_EQ(state.kind[size_t(n)], kind) << "token " << n;
        }
        x = out;
    }
    EXPECT_EQ(state.count, 21 - 8);
    for (int32_t owner : state.patch_owner) EXPECT_GE(owner, 1);  // nothing is dropped: every patch is covered
}

// ---- the stage in the tiny random ViT (CLS + 4x4 patches, 3 blocks, dim 32, 2 heads)

TomeStage make_stage(const std::string& yaml) {
    YAML::Node node = YAML::Load(yaml);
    YamlMap params(node, "tome.yaml", "stages[0].tome");
    TomeStage stage(params);
    params.finish();
    return stage;
}

struct TinyModel {
    VitModel model;
    VitState state;
    explicit TinyModel(int batch) {
        std::string dir = test::temp_dir() + "/tiny";
        test::write_tiny_vit(dir, {});
        vit_load(model, dir);
        vit_state_init(state, model, batch);
    }
    std::vector<float> forward(Stage* stage, const std::vector<float>& pixels, int batch, Ledger* ledger = nullptr) {
        if (stage) stage->check(model.encoder_shape());
        std::vector<float> logits(size_t(batch * 10));
        Stage* stages[] = {stage};
        vit_forward(model, state, pixels.data(), batch, stages, stage ? 1 : 0, ledger, logits.data());
        return logits;
    }
};

TEST(TomeStage, EachBlockRemovesRAndMacsFollowTheSchedule) {
    TinyModel m(1);
    TomeStage tome = make_stage("{r: 2}");
    auto pixels = test::random_values(3 * 32 * 32, 3);
    Ledger ledger;
    m.forward(&tome, pixels, 1, &ledger);
    EXPECT_EQ(m.state.tokens_entering_block, (std::vector<int>{17, 15, 13}));
    const TokenState& ts = m.state.tokens[0];
    EXPECT_EQ(ts.count, 11);
    EXPECT_TRUE(ts.proportional_attention);
    float covered = 0;
    for (int t = 0; t < ts.count; ++t) covered += ts.size[size_t(t)];
    EXPECT_EQ(covered, 17.0f);  // merging loses no patch
    for (int32_t owner : ts.patch_owner) EXPECT_GE(owner, 1);

    const uint64_t c = 32, hidden = 128, hd = 16;
    auto attn = [&](uint64_t n) { return n * c * 3 * c + 2 * n * n * c + n * c * c; };
    auto mlp = [&](uint64_t n) { return 2 * n * c * hidden; };
    auto matching = [&](uint64_t t) { return (t + 1) / 2 * (t / 2) * hd; };
    const uint64_t tome_macs = matching(17) + matching(15) + matching(13);
    const uint64_t expected =
        16 * 192 * c + attn(17) + mlp(15) + attn(15) + mlp(13) + attn(13) + mlp(11) + c * 10 + tome_macs;
    EXPECT_EQ(ledger.total(), expected);
    EXPECT_EQ(ledger.by_stage().at("tome"), tome_macs);
}

TEST(TomeStage, BlocksAndScheduleChooseWhereToMerge) {
    TinyModel m(1);
    auto pixels = test::random_values(3 * 32 * 32, 4);
    TomeStage only_middle = make_stage("{r: 3, blocks: [1]}");
    m.forward(&only_middle, pixels, 1);
    EXPECT_EQ(m.state.tokens_entering_block, (std::vector<int>{17, 17, 14}));
    EXPECT_EQ(m.state.tokens[0].count, 14);
    TomeStage schedule = make_stage("{schedule: [8, 0, 2]}");
    m.forward(&schedule, pixels, 1);
    EXPECT_EQ(m.state.tokens_entering_block, (std::vector<int>{17, 9, 9}));
    EXPECT_EQ(m.state.tokens[0].count, 7);
    // A fixed r beyond half the tokens at a later block is lowered by the guard.
    TomeStage big = make_stage("{r: 8}");
    m.forward(&big, pixels, 1);
    EXPECT_EQ(m.state.tokens_entering_block, (std::vector<int>{17, 9, 5}));
    EXPECT_EQ(m.state.tokens[0].count, 3);
}

TEST(TomeStage, NothingMergedIsThePlainModel) {
    TinyModel m(1);
    auto pixels = test::random_values(3 * 32 * 32, 5);
    TomeStage none = make_stage("{r: 0}");
    EXPECT_EQ(m.forward(&none, pixels, 1), m.forward(nullptr, pixels, 1));
    EXPECT_FALSE(m.state.tokens[0].proportional_attention);
}

TEST(TomeStage, ProportionalAttentionChangesTheLogits) {
    TinyModel m(1);
    auto pixels = test::random_values(3 * 32 * 32, 6);
    TomeStage with = make_stage("{r: 3}");
    TomeStage without = make_stage("{r: 3, proportional_attention: false}");
    const auto a = m.forward(&with, pixels, 1);
    EXPECT_TRUE(m.state.tokens[0].proportional_attention);
    const auto b = m.forward(&without, pixels, 1);
    EXPECT_FALSE(m.state.tokens[0].proportional_attention);
    EXPECT_EQ(m.state.tokens_entering_block, (std::vector<int>{17, 14, 11}));
    float diff = 0;
    for (size_t k = 0; k < a.size(); ++k) diff = std::max(diff, std::abs(a[k] - b[k]));
    EXPECT_GT(diff, 1e-4f);
    // Merging only in the last block: no later attention, so the flag changes nothing.
    TomeStage last_with = make_stage("{r: 3, blocks: [2]}");
    TomeStage last_without = make_stage("{r: 3, blocks: [2], proportional_attention: false}");
    EXPECT_EQ(m.forward(&last_with, pixels, 1), m.forward(&last_without, pixels, 1));
}

TEST(TomeStage, BatchedForwardEqualsOneImageAtATime) {
    TinyModel batched(3), single(1);
    TomeStage tome = make_stage("{r: 2}");
    auto pixels = test::random_values(3 * 3 * 32 * 32, 7);
    const auto logits3 = batched.forward(&tome, pixels, 3);
    for (int b = 0; b < 3; ++b) {
        std::vector<float> one(pixels.begin() + b * 3 * 32 * 32, pixels.begin() + (b + 1) * 3 * 32 * 32);
        const auto logits1 = single.forward(&tome, one, 1);
        for (int k = 0; k < 10; ++k) EXPECT_NEAR(logits3[size_t(b * 10 + k)], logits1[size_t(k)], 1e-4f) << b << "," << k;
        EXPECT_EQ(batched.state.tokens[size_t(b)].patch_owner, single.state.tokens[0].patch_owner) << b;
    }
}

// ---- the real ViT-Tiny

TEST(TomeReal, ViTTinyR8TokenCountsAndMacs) {
    TESSERA_REQUIRE_SHARED();
    const std::string shared = test::shared_dir();
    Classifier clf({shared + "/models/vit_tiny_patch16_224.augreg_in21k_ft_in1k",
                    test::source_path("pipelines/tome-r8.yaml"), 0, 1});
    Classification c = clf.classify_file(shared + "/data/imagenet-val1300/images/ILSVRC2012_val_00000347.JPEG", 5);
    std::vector<int> expected_tokens;
    for (int l = 0; l < 12; ++l) expected_tokens.push_back(197 - 8 * l);  // 197, 189, ..., 109
    EXPECT_EQ(c.tokens, expected_tokens);

    const uint64_t dim = 192, hidden = 768, hd = 64;
    auto attn = [&](uint64_t n) { return n * dim * 3 * dim + 2 * n * n * dim + n * dim * dim; };
    auto mlp = [&](uint64_t n) { return 2 * n * dim * hidden; };
    uint64_t macs = 196 * 768 * dim + dim * 1000;
    for (uint64_t n = 197; n >= 109; n -= 8) macs += attn(n) + mlp(n - 8) + (n + 1) / 2 * (n / 2) * hd;
    EXPECT_EQ(c.macs, macs);
    EXPECT_NEAR(double(c.macs) * 1e-9, 0.9290, 5e-5);  // against 1.2537 GMACs for the plain model
    EXPECT_EQ(c.top[0].class_index, 472);  // labels.tsv: canoe, as without merging
}

// ---- settings

using test::error_of;

// Reads a one-stage pipeline and builds it for ViT-Tiny (12 blocks, 197 tokens).
std::string build_error(const std::string& stage_yaml, std::string* file = nullptr) {
    const std::string f = test::write_file(test::temp_dir() + "/tome.yaml", "stages:\n  - tome: " + stage_yaml + "\n");
    if (file) *file = f;
    return error_of([&] { stages_build(pipeline_read(f).stages, EncoderShape{12, 3, 192, 1, 14, 14}); });
}

TEST(TomeSettings, BadSettingsNameTheKey) {
    std::string f;
    std::string e = build_error("{r: -1}", &f);
    EXPECT_EQ(e, f + ":2: key 'stages[0].tome.r': must be in 0..1048576, got -1");
    e = build_error("{r: 99}", &f);
    EXPECT_EQ(e, f + ":2: key 'stages[0].tome.r': merges 99 tokens at block 0 but only 98 of its 196 non-protected "
                  "tokens can merge (at most half)");
    EXPECT_EQ(build_error("{r: 60, blocks: [3, 7, 9]}"), "(no error)");  // block 9 lowers it to 38
    e = build_error("{r: 99, blocks: [5]}", &f);
    EXPECT_EQ(e, f + ":2: key 'stages[0].tome.r': merges 99 tokens at block 5 but only 98 of its 196 non-protected "
                  "tokens can merge (at most half)");
    EXPECT_THAT(build_error("{}"), HasSubstr("key 'stages[0].tome.r': is missing: give r (tokens merged per block) or schedule"));
    EXPECT_THAT(build_error("{r: 8, schedule: [8]}"), HasSubstr("key 'stages[0].tome.schedule': give either r or schedule, not both"));
    EXPECT_THAT(build_error("{schedule: [8, 8, 8]}"),
                HasSubstr("key 'stages[0].tome.schedule': has 3 entries but the encoder has 12 blocks"));
    EXPECT_THAT(build_error("{schedule: [90, 54, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]}"),
                HasSubstr("key 'stages[0].tome.schedule': entry 1 merges 54 tokens at block 1 but only 53 of its 106"));
    EXPECT_EQ(build_error("{schedule: [90, 53, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]}"), "(no error)");
    EXPECT_THAT(build_error("{schedule: [8, -2]}"), HasSubstr("key 'stages[0].tome.schedule': values must be in 0..1048576, got -2"));
    EXPECT_THAT(build_error("{schedule: []}"), HasSubstr("key 'stages[0].tome.schedule': must list one r per block"));
    EXPECT_THAT(build_error("{r: 8, blocks: [12]}"), HasSubstr("key 'stages[0].tome.blocks': block 12 is past the last block 11"));
    EXPECT_THAT(build_error("{r: 8, blocks: [1, 1]}"), HasSubstr("key 'stages[0].tome.blocks': block 1 is listed twice"));
    EXPECT_THAT(build_error("{schedule: [8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8], blocks: [1]}"),
                HasSubstr("key 'stages[0].tome.blocks': a schedule already says which blocks merge"));
    EXPECT_THAT(build_error("{r: 8, proportional_attention: maybe}"),
                HasSubstr("key 'stages[0].tome.proportional_attention': expected true or false, got 'maybe'"));
    e = build_error("{r: 8, ratio: 2}", &f);
    EXPECT_EQ(e, f + ":2: unknown key 'stages[0].tome.ratio'");
}

TEST(TomeSettings, ShippedPipelinesBuildForViTTiny) {
    for (const char* name : {"pipelines/tome-r8.yaml", "pipelines/tome-r13.yaml"}) {
        PipelineSpec p = pipeline_read(test::source_path(name));
        auto stages = stages_build(p.stages, EncoderShape{12, 3, 192, 1, 14, 14});
        ASSERT_EQ(stages.size(), 1u) << name;
        EXPECT_EQ(stages[0]->name(), "tome");
    }
}

}  // namespace
}  // namespace tessera
