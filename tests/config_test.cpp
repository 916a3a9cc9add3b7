// Configuration readers: pipeline/run YAML and timm config.json. Every bad
// input is an error naming the file, the line where there is one, and the key.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "io/timm_config.h"
#include "models/vit.h"
#include "pipeline/config.h"
#include "tessera/error.h"
#include "test_support.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;

using test::error_of;

std::string yaml_file(const std::string& text) {
    return test::write_file(test::temp_dir() + "/pipeline.yaml", text);
}

TEST(PipelineYaml, ReadsModelStagesAndSettings) {
    std::string dir = test::temp_dir();
    test::write_file(dir + "/p.yaml", "model: models/x\nstages:\n  - noop: {}\n  - noop\nthreads: 2\nbatch: 4\n");
    PipelineSpec p = pipeline_read(dir + "/p.yaml");
    EXPECT_EQ(p.model, dir + "/models/x");  // relative to the YAML file
    ASSERT_EQ(p.stages.size(), 2u);
    EXPECT_EQ(p.stages[0].name, "noop");
    EXPECT_EQ(p.stages[1].where, dir + "/p.yaml:4");
    EXPECT_EQ(p.threads, 2);
    EXPECT_EQ(p.batch, 4);
}

TEST(PipelineYaml, ABareStageNameTakesEveryDefault) {
    // "- evit" and "- vtc_cls:" mean "- evit: {}" and "- vtc_cls: {}".
    std::string f = test::write_file(test::temp_dir() + "/p.yaml", "stages:\n  - evit\n  - vtc_cls:\n");
    PipelineSpec p = pipeline_read(f);
    ASSERT_EQ(p.stages.size(), 2u);
    for (const StageSpec& s : p.stages) {
        EXPECT_TRUE(s.params.IsMap()) << s.name;
        EXPECT_EQ(s.params.size(), 0u) << s.name;
    }
    const EncoderShape shape{12, 3, 192, 1, 14, 14};
    const auto stages = stages_build(p.stages, shape);
    ASSERT_EQ(stages.size(), 2u);
    EXPECT_EQ(stages[0]->name(), "evit");
    EXPECT_EQ(stages[1]->name(), "vtc_cls");
}

TEST(PipelineYaml, EmptyStageListIsThePlainModel) {
    PipelineSpec p = pipeline_read(yaml_file("stages: []\n"));
    EXPECT_TRUE(p.stages.empty());
    EXPECT_TRUE(p.model.empty());
}

TEST(PipelineYaml, UnknownKeyNamesFileLineAndKey) {
    std::string f = yaml_file("stages: []\nthreds: 2\n");
    EXPECT_EQ(error_of([&] { pipeline_read(f); }), f + ":2: unknown key 'threds'");
}

TEST(PipelineYaml, BadValuesNameTheKey) {
    std::string f = yaml_file("stages: []\nbatch: many\n");
    EXPECT_EQ(error_of([&] { pipeline_read(f); }), f + ":2: key 'batch': expected an integer, got 'many'");
    f = yaml_file("threads: -3\n");
    EXPECT_EQ(error_of([&] { pipeline_read(f); }), f + ":1: key 'threads': must be in 0..1024, got -3");
    f = yaml_file("stages: {noop: {}}\n");
    EXPECT_THAT(error_of([&] { pipeline_read(f); }), HasSubstr(":1: key 'stages': expected a list of stages"));
    f = yaml_file("stages:\n  - {noop: {}, other: {}}\n");
    EXPECT_THAT(error_of([&] { pipeline_read(f); }), HasSubstr(":2: key 'stages[0]': expected one stage"));
}

TEST(PipelineYaml, MalformedYamlNamesTheLine) {
    std::string f = yaml_file("stages:\n  - noop: {\nbatch: 1\n");
    EXPECT_THAT(error_of([&] { pipeline_read(f); }), HasSubstr(f + ":"));
    EXPECT_THAT(error_of([&] { pipeline_read(f); }), HasSubstr("invalid YAML"));
    EXPECT_EQ(error_of([] { pipeline_read("/nonexistent/p.yaml"); }), "/nonexistent/p.yaml: cannot open file");
}

TEST(PipelineYaml, StagesAreCheckedWhenBuilt) {
    const EncoderShape shape{12, 3, 192, 1, 14, 14};
    std::string f = yaml_file("stages:\n  - evitt: {}\n");
    PipelineSpec p = pipeline_read(f);
    EXPECT_THAT(error_of([&] { stages_build(p.stages, shape); }), HasSubstr(f + ":2: unknown stage 'evitt' (known: noop"));
    f = yaml_file("stages:\n  - noop: {rate: 3}\n");
    p = pipeline_read(f);
    EXPECT_EQ(error_of([&] { stages_build(p.stages, shape); }), f + ":2: unknown key 'stages[0].noop.rate'");
    f = yaml_file("stages:\n  - noop: [1, 2]\n");
    p = pipeline_read(f);
    EXPECT_THAT(error_of([&] { stages_build(p.stages, shape); }), HasSubstr("key 'stages[0].noop': expected a mapping"));
    p = pipeline_read(yaml_file("stages:\n  - noop: {}\n  - noop\n"));
    EXPECT_EQ(stages_build(p.stages, shape).size(), 2u);
    // Keys that are not names (found by fuzz_pipeline_yaml): a mapping, a tag without a name.
    f = yaml_file("stages:\n  - noop: { {}}\n");
    EXPECT_THAT(error_of([&] { stages_build(pipeline_read(f).stages, shape); }),
                HasSubstr("a key in 'stages[0].noop' is not a plain name"));
    f = yaml_file("stages:\n  - window_attention: {!blocks: [0], window: 7}\n");
    EXPECT_THAT(error_of([&] { stages_build(pipeline_read(f).stages, shape); }), HasSubstr("is not a plain name"));
    f = yaml_file("stages:\n  - {}: {}\n");
    EXPECT_THAT(error_of([&] { pipeline_read(f); }), HasSubstr("a key in 'stages[0]' is not a plain name"));
}

TEST(RunYaml, ReadsDatasetAndExpandsEnvironment) {
    setenv("TESSERA_TEST_ROOT", "/data/root", 1);
    std::string f = yaml_file(
        "model: ${TESSERA_TEST_ROOT}/m\nstages: []\ndataset:\n  images: ${TESSERA_TEST_UNSET:-imgs}\n"
        "  labels: /abs/labels.tsv\n  limit: 10\ntop_k: 3\n");
    RunSpec r = run_config_read(f);
    EXPECT_EQ(r.pipeline.model, "/data/root/m");
    EXPECT_THAT(r.dataset.images, ::testing::EndsWith("/imgs"));
    EXPECT_EQ(r.dataset.labels, "/abs/labels.tsv");
    EXPECT_EQ(r.dataset.limit, 10);
    EXPECT_EQ(r.top_k, 3);
}

TEST(RunYaml, MissingAndUnknownKeysAreErrors) {
    std::string f = yaml_file("model: m\ndataset:\n  images: i\n");
    EXPECT_THAT(error_of([&] { run_config_read(f); }), HasSubstr("key 'dataset.labels': is missing"));
    f = yaml_file("model: m\ndataset:\n  images: i\n  labels: l\n  shuffle: true\n");
    EXPECT_EQ(error_of([&] { run_config_read(f); }), f + ":5: unknown key 'dataset.shuffle'");
    f = yaml_file("stages: []\ndataset: {images: i, labels: l}\n");
    EXPECT_EQ(error_of([&] { run_config_read(f); }), f + ": key 'model' is missing");
}

// ---- timm config.json

std::string config_file(const std::string& json) {
    return test::write_file(test::temp_dir() + "/config.json", json);
}

TEST(TimmConfig, ReadsRealConfigs) {
    TESSERA_REQUIRE_SHARED();
    TimmConfig c = timm_config_read(test::shared_dir() + "/models/vit_tiny_patch16_224.augreg_in21k_ft_in1k/config.json");
    EXPECT_EQ(c.architecture, "vit_tiny_patch16_224");
    EXPECT_DOUBLE_EQ(c.preprocess.crop_pct, 0.9);
    EXPECT_EQ(c.preprocess.mean[0], 0.5f);
    VitHparams hp = vit_hparams_from_timm(c);
    EXPECT_EQ(hp.dim, 192);
    EXPECT_EQ(hp.depth, 12);
    EXPECT_EQ(hp.heads, 3);
    EXPECT_EQ(hp.tokens(), 197);
    c = timm_config_read(test::shared_dir() + "/models/deit_tiny_patch16_224.fb_in1k/config.json");
    EXPECT_DOUBLE_EQ(c.preprocess.crop_pct, 0.875);
    EXPECT_FLOAT_EQ(c.preprocess.std[2], 0.225f);
}

TEST(TimmConfig, HubStyleConfigWithoutModelArgsUsesTheArchitectureRow) {
    // timm's hub files often carry only the architecture name and pretrained_cfg.
    TimmConfig c = timm_config_read(config_file(
        R"({"architecture": "vit_small_patch16_384", "num_classes": 1000, "pretrained_cfg": {"input_size": [3, 384, 384], "crop_pct": 1.0}})"));
    VitHparams hp = vit_hparams_from_timm(c);
    EXPECT_EQ(hp.dim, 384);
    EXPECT_EQ(hp.heads, 6);
    EXPECT_EQ(hp.img_h, 384);
    EXPECT_EQ(hp.tokens(), 1 + 24 * 24);
    EXPECT_EQ(c.preprocess.input_height, 384);
    EXPECT_EQ(c.preprocess.interpolation, Resample::bicubic);  // timm's default
}

TEST(TimmConfig, ErrorsNameFileAndKey) {
    std::string f = config_file("{\"architecture\": \"vit_tiny_patch16_224\", \"pretrained_cfg\": {\"crop_pct\": \"big\"}}");
    EXPECT_EQ(error_of([&] { timm_config_read(f); }), f + ": pretrained_cfg: key 'crop_pct': expected a number, got \"big\"");
    f = config_file("{\"architecture\": \"vit_tiny_patch16_224\", \"pretrained_cfg\": {\"mean\": [0.5, 0.5]}}");
    EXPECT_THAT(error_of([&] { timm_config_read(f); }), HasSubstr("key 'pretrained_cfg.mean': expected 3 numbers"));
    f = config_file("{\"architecture\": \"vit_tiny_patch16_224\", \"pretrained_cfg\": {\"std\": [0.5, 0, 0.5]}}");
    EXPECT_THAT(error_of([&] { timm_config_read(f); }), HasSubstr("values must be positive"));
    f = config_file("{\"num_classes\": 10}");
    EXPECT_EQ(error_of([&] { timm_config_read(f); }), f + ": key 'architecture' is missing (is this a timm config.json?)");
    f = config_file("{\"architecture\": \"vit_tiny_patch16_224\",");
    EXPECT_THAT(error_of([&] { timm_config_read(f); }), HasSubstr(f + ": invalid JSON"));
    f = config_file("{\"architecture\": \"resnet50\"}");
    EXPECT_THAT(error_of([&] { vit_hparams_from_timm(timm_config_read(f)); }), HasSubstr("unknown architecture 'resnet50'"));
    // A number too long for an int in the name (found by fuzz_config) is no timm name.
    f = config_file("{\"architecture\": \"vit_tiny_patch16_2245555555555555555555\"}");
    EXPECT_THAT(error_of([&] { vit_hparams_from_timm(timm_config_read(f)); }),
                HasSubstr("unknown architecture 'vit_tiny_patch16_2245555555555555555555'"));
    f = config_file("{\"architecture\": \"x\", \"model_args\": {\"embed_dim\": 100, \"num_heads\": 3}}");
    EXPECT_THAT(error_of([&] { vit_hparams_from_timm(timm_config_read(f)); }),
                HasSubstr("model_args.num_heads 3 must divide embed_dim 100"));
    f = config_file("{\"architecture\": \"x\", \"model_args\": {\"img_size\": 100, \"patch_size\": 16}}");
    EXPECT_THAT(error_of([&] { vit_hparams_from_timm(timm_config_read(f)); }), HasSubstr("must be a multiple of patch_size 16"));
    f = config_file("{\"architecture\": \"deit_tiny_distilled_patch16_224\"}");
    EXPECT_THAT(error_of([&] { vit_hparams_from_timm(timm_config_read(f)); }), HasSubstr("distillation token"));
}

// ---- weights that disagree with the config

TEST(VitLoad, WeightsThatDisagreeWithTheConfigNameTheTensor) {
    std::string dir = test::temp_dir() + "/m";
    test::TinyVit spec;
    test::write_tiny_vit(dir, spec);
    VitModel ok;
    vit_load(ok, dir);
    EXPECT_EQ(ok.parameters, [&] {
        int64_t n = 0;
        for (const auto& t : test::tiny_vit_tensors(spec)) n += int64_t(t.values.size());
        return n;
    }());

    // config says depth 2, file has 3 blocks
    test::TinyVit shallow = spec;
    shallow.depth = 2;
    test::write_file(dir + "/config.json", test::tiny_vit_config(shallow));
    VitModel m1;
    EXPECT_THAT(error_of([&] { vit_load(m1, dir); }),
                HasSubstr("model.safetensors: tensor 'blocks.2.norm1.weight' is not part of vit_tiny_test"));
    // config says depth 4, file has 3 blocks
    test::TinyVit deep = spec;
    deep.depth = 4;
    test::write_file(dir + "/config.json", test::tiny_vit_config(deep));
    VitModel m2;
    EXPECT_THAT(error_of([&] { vit_load(m2, dir); }), HasSubstr("tensor 'blocks.3.norm1.weight' not found"));
    // config says width 48
    test::TinyVit wide = spec;
    wide.dim = 48;
    test::write_file(dir + "/config.json", test::tiny_vit_config(wide));
    VitModel m3;
    EXPECT_THAT(error_of([&] { vit_load(m3, dir); }),
                HasSubstr("tensor 'patch_embed.proj.weight' has shape [32, 3, 8, 8], expected [48, 3, 8, 8]"));
    // missing weights file
    std::filesystem::remove(dir + "/model.safetensors");
    VitModel m4;
    EXPECT_THAT(error_of([&] { vit_load(m4, dir); }), HasSubstr(dir + "/model.safetensors: cannot open"));
}

TEST(VitLoad, TruncatedWeightsFileIsAClearError) {
    std::string dir = test::temp_dir() + "/m";
    test::write_tiny_vit(dir, {});
    std::string bytes = test::read_file(dir + "/model.safetensors");
    test::write_file(dir + "/model.safetensors", bytes.substr(0, bytes.size() - 100));
    VitModel m;
    EXPECT_THAT(error_of([&] { vit_load(m, dir); }), HasSubstr("run past the end of the data section"));
}

}  // namespace
}  // namespace tessera
