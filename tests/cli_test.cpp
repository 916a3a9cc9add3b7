// The tessera binary end to end: outputs, exit codes and one-line errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/image.h"
#include "kernels/onednn_linear.h"
#include "test_support.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;
using nlohmann::json;

std::string bin() { return std::string("'") + TESSERA_BINARY + "'"; }

// `tessera ARGS`, with ENV assignments (e.g. "TESSERA_LINEAR=onednn") before it.
test::CommandResult tessera(const std::string& args, const std::string& env = "") {
    return test::run_command((env.empty() ? "" : env + " ") + bin() + " " + args);
}

// One error line on stderr, non-zero exit.
void expect_error(const test::CommandResult& r, const std::string& fragment, int code = 1) {
    EXPECT_EQ(r.exit_code, code) << r.err;
    EXPECT_THAT(r.err, HasSubstr(fragment));
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(r.err.rfind("tessera: error: ", 0), 0u) << r.err;
}

std::string write_png(const std::string& path, int w, int h, uint32_t seed) {
    Image img;
    img.width = w, img.height = h;
    for (float v : test::random_values(size_t(w * h * 3), seed)) img.rgb.push_back(uint8_t((v + 1.0f) * 127.5f));
    image_write_png(path, img);
    return path;
}

struct CliFixture : ::testing::Test {
    std::string dir, model;
    void SetUp() override {
        dir = test::temp_dir();
        model = dir + "/tiny";
        test::write_tiny_vit(model, {});
    }
};

TEST(Cli, HelpListsSubcommandsAndExitsZero) {
    auto r = tessera("--help");
    EXPECT_EQ(r.exit_code, 0);
    for (const char* cmd : {"classify", "bench", "run", "inspect"}) EXPECT_THAT(r.out, HasSubstr(cmd));
    for (const char* cmd : {"classify", "bench", "run", "inspect"}) {
        auto sub = tessera(std::string(cmd) + " --help");
        EXPECT_EQ(sub.exit_code, 0) << cmd;
        EXPECT_THAT(sub.out, HasSubstr("--")) << cmd;
    }
}

TEST(Cli, UsageErrorsExitTwo) {
    expect_error(tessera(""), "A subcommand is required", 2);
    expect_error(tessera("classify --modle x a.png"), "--modle", 2);
    expect_error(tessera("classify --model x"), "images is required", 2);
    expect_error(tessera("classify --top 0 --model x a.png"), "--top", 2);
}

TEST_F(CliFixture, ClassifyJsonlHasEveryField) {
    std::string img = write_png(dir + "/a.png", 40, 50, 1);
    auto r = tessera("classify --model " + model + " --format jsonl --top 3 --labels /dev/null " + img + " " + img);
    // an empty label file is an error naming it
    expect_error(r, "/dev/null: no class names found");
    test::write_file(dir + "/labels.tsv", "index\tname\n0\tzero\n1\tone\n2\ttwo\n3\tthree\n4\tfour\n5\tfive\n6\tsix\n7\tseven\n8\teight\n9\tnine\n");
    r = tessera("classify --model " + model + " --format jsonl --top 3 --labels " + dir + "/labels.tsv " + img + " " + img);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::istringstream lines(r.out);
    std::string line;
    int count = 0;
    while (std::getline(lines, line)) {
        json j = json::parse(line);
        EXPECT_EQ(j["image"], img);
        ASSERT_EQ(j["top"].size(), 3u);
        double prev = 1.0;
        for (const json& t : j["top"]) {
            EXPECT_LE(t["prob"].get<double>(), prev);
            prev = t["prob"].get<double>();
            const std::vector<std::string> names = {"zero", "one", "two", "three", "four",
                                                    "five", "six", "seven", "eight", "nine"};
            EXPECT_EQ(t["label"], names[t["class"].get<size_t>()]);
        }
        EXPECT_EQ(j["tokens"], (std::vector<int>{17, 17, 17}));
        // patch embed + 3 blocks + head, counted by the kernels (see StageHooks for the formula)
        EXPECT_NEAR(j["gmacs"].get<double>(), 1e-9 * (16 * 192 * 32 + 3 * (17 * 32 * 96 + 2 * 17 * 17 * 32 + 17 * 32 * 32 + 2 * 17 * 32 * 128) + 320), 1e-12);
        EXPECT_GT(j["ms"].get<double>(), 0.0);
        ++count;
    }
    EXPECT_EQ(count, 2);
}

TEST_F(CliFixture, ClassifyErrorsNameTheFile) {
    std::string img = write_png(dir + "/a.png", 40, 50, 1);
    expect_error(tessera("classify --model " + model + " " + dir + "/missing.png"), dir + "/missing.png: cannot open");
    test::write_file(dir + "/bad.jpg", "definitely not a jpeg");
    expect_error(tessera("classify --model " + model + " " + dir + "/bad.jpg"), dir + "/bad.jpg: not a JPEG, PNG or BMP image");
    expect_error(tessera("classify --model " + dir + "/nope " + img), dir + "/nope: model folder not found");
    expect_error(tessera("classify " + img), "give --model");
    expect_error(tessera("classify --format xml --model " + model + " " + img), "--format: expected one of text, jsonl, got 'xml'");
    test::write_file(dir + "/p.yaml", "stages:\n  - noop: {keep: 1}\n");
    expect_error(tessera("classify --model " + model + " --pipeline " + dir + "/p.yaml " + img),
                 dir + "/p.yaml:2: unknown key 'stages[0].noop.keep'");
}

TEST_F(CliFixture, BenchAndInspectReportJson) {
    auto r = tessera("bench --model " + model + " --iters 3 --warmup 1 --threads 1 --format json");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    json j = json::parse(r.out);
    for (const char* key : {"ms_p50", "ms_p90", "gmacs", "batch", "threads"}) EXPECT_TRUE(j.contains(key)) << key;
    EXPECT_EQ(j["threads"], 1);
    EXPECT_LE(j["ms_p50"].get<double>(), j["ms_p90"].get<double>());
    // Which path the linear layers took: oneDNN on AVX-512/AMX hosts, else panels; forced either way.
    EXPECT_EQ(j["linear"], onednn_linear_chosen(DType::f32) ? "onednn" : "packed");
    for (const char* path : {"packed", "onednn"}) {
        r = tessera("bench --model " + model + " --iters 1 --warmup 0 --threads 1 --format json",
                    std::string("TESSERA_LINEAR=") + path);
        ASSERT_EQ(r.exit_code, 0) << r.err;
        EXPECT_EQ(json::parse(r.out)["linear"], path);
    }

    // --serve (bench/paired.py's protocol): the facts, then one reply a request.
    r = test::run_command("printf '0 2\\n1 3\\n' | " + bin() + " bench --model " + model +
                          " --threads 1 --warmup 0 --serve");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::istringstream lines(r.out);
    std::string line;
    std::vector<json> replies;
    while (std::getline(lines, line)) replies.push_back(json::parse(line));
    ASSERT_EQ(replies.size(), 3u) << r.out;
    EXPECT_GT(replies[0]["gmacs"].get<double>(), 0.0);
    EXPECT_FALSE(replies[0].contains("ms_p50"));
    EXPECT_EQ(replies[1]["ms"].size(), 2u);
    EXPECT_EQ(replies[2]["ms"].size(), 3u);
    for (const json& ms : {replies[1]["ms"], replies[2]["ms"]})
        for (const json& t : ms) EXPECT_GT(t.get<double>(), 0.0);
    expect_error(test::run_command("echo 'two runs' | " + bin() + " bench --model " + model +
                                   " --threads 1 --warmup 0 --serve"),
                 "--serve: expected \"W N\" (untimed and timed runs), got 'two runs'");

    r = tessera("inspect --model " + model + " --format json");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    j = json::parse(r.out);
    EXPECT_EQ(j["depth"], 3);
    EXPECT_EQ(j["tensors"], 4 + 12 * 3 + 4);
    EXPECT_EQ(j["gmacs_by_component"]["patch_embed"].get<double>(), 16 * 192 * 32 * 1e-9);
    EXPECT_EQ(j["gmacs_by_component"]["head"].get<double>(), 320 * 1e-9);
}

TEST_F(CliFixture, RunIsResumableAndNeverDuplicates) {
    std::filesystem::create_directories(dir + "/images");
    std::string labels = "image\tclass_index\n";
    for (int i = 0; i < 6; ++i) {
        write_png(dir + "/images/img" + std::to_string(i) + ".png", 32 + i, 40, uint32_t(i + 10));
        labels += "img" + std::to_string(i) + ".png\t" + std::to_string(i % 10) + "\n";
    }
    test::write_file(dir + "/labels.tsv", labels);
    auto config = [&](int limit) {
        return test::write_file(dir + "/run.yaml", "model: tiny\nstages: []\ndataset:\n  images: images\n  labels: labels.tsv\n  limit: " +
                                                       std::to_string(limit) + "\n");
    };
    auto r = tessera("run " + config(3) + " --out " + dir + "/out");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(json::parse(r.out)["images"], 3);
    std::string first = test::read_file(dir + "/out/results.jsonl");

    // a run killed mid-line leaves a partial line: it is dropped, then redone
    test::write_file(dir + "/out/results.jsonl", first + "{\"image\": \"img3.p");
    r = tessera("run " + config(6) + " --out " + dir + "/out");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::string all = test::read_file(dir + "/out/results.jsonl");
    EXPECT_EQ(all.substr(0, first.size()), first);  // finished lines untouched
    std::istringstream lines(all);
    std::string line;
    std::set<std::string> images;
    int count = 0;
    while (std::getline(lines, line)) {
        images.insert(json::parse(line)["image"].get<std::string>());
        ++count;
    }
    EXPECT_EQ(count, 6);
    EXPECT_EQ(images.size(), 6u);
    json summary = json::parse(test::read_file(dir + "/out/summary.json"));
    for (const char* key : {"images", "top1", "top5", "gmacs_per_image", "ms_p50", "ms_p90", "images_per_s"})
        EXPECT_TRUE(summary.contains(key)) << key;
    EXPECT_EQ(summary["images"], 6);

    // the same folder with another chain is refused, and nothing is lost
    test::write_file(dir + "/run2.yaml", "model: tiny\nstages: [noop]\ndataset: {images: images, labels: labels.tsv}\n");
    expect_error(tessera("run " + dir + "/run2.yaml --out " + dir + "/out"), "holds results of a different run");
    EXPECT_EQ(test::read_file(dir + "/out/results.jsonl"), all);
    // so is the same chain in bf16 (its results differ from f32 ones)
    test::write_file(dir + "/run3.yaml", "model: tiny\nstages: []\ndtype: bf16\ndataset: {images: images, labels: labels.tsv}\n");
    expect_error(tessera("run " + dir + "/run3.yaml --out " + dir + "/out"), "(model, stages, labels or dtype differ)");
    EXPECT_EQ(test::read_file(dir + "/out/results.jsonl"), all);
    EXPECT_EQ(summary["dtype"], "f32");
}

// --dtype bf16 (or a pipeline's dtype: bf16) packs the matrices in bf16: the
// same predictions as f32 up to bf16 rounding of the weights, and the bench
// and summary say which dtype ran.
TEST_F(CliFixture, Bf16RunsTheSameModelWithRoundedWeights) {
    std::string img = write_png(dir + "/a.png", 40, 50, 1);
    auto logits_of = [&](const std::string& extra) {
        auto r = tessera("classify --model " + model + " --format jsonl --logits " + extra + " " + img);
        EXPECT_EQ(r.exit_code, 0) << r.err;
        return json::parse(r.out)["logits"].get<std::vector<float>>();
    };
    const std::vector<float> f32 = logits_of(""), bf16 = logits_of("--dtype bf16");
    ASSERT_EQ(f32.size(), 10u);
    ASSERT_EQ(bf16.size(), 10u);
    double worst = 0.0, scale = 0.0;
    for (size_t i = 0; i < f32.size(); ++i) {
        worst = std::max(worst, double(std::abs(f32[i] - bf16[i])));
        scale = std::max(scale, double(std::abs(f32[i])));
    }
    EXPECT_GT(worst, 0.0);              // the weights really were rounded
    EXPECT_LT(worst, 0.02 * scale + 1e-3);  // bf16 keeps 8 bits of mantissa

    // The oneDNN path that AVX-512 hosts take (forced): the same logits as
    // the packed kernel, in f32 to rounding error.
    const std::vector<float> onednn = [&] {
        auto r = tessera("classify --model " + model + " --format jsonl --logits " + img, "TESSERA_LINEAR=onednn");
        EXPECT_EQ(r.exit_code, 0) << r.err;
        return json::parse(r.out)["logits"].get<std::vector<float>>();
    }();
    ASSERT_EQ(onednn.size(), f32.size());
    for (size_t i = 0; i < f32.size(); ++i) EXPECT_NEAR(onednn[i], f32[i], 1e-4 * (1.0 + std::abs(f32[i]))) << i;
    expect_error(tessera("classify --model " + model + " " + img, "TESSERA_LINEAR=fast"),
                 "TESSERA_LINEAR: expected packed, onednn or onednn-f32, got 'fast'");

    test::write_file(dir + "/p.yaml", "model: tiny\ndtype: bf16\n");
    auto r = tessera("bench --pipeline " + dir + "/p.yaml --iters 2 --warmup 0 --threads 1 --format json");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    json j = json::parse(r.out);
    EXPECT_EQ(j["dtype"], "bf16");
    EXPECT_GT(j["peak_rss_mib"].get<double>(), 1.0);
    r = tessera("bench --pipeline " + dir + "/p.yaml --dtype f32 --iters 2 --warmup 0 --threads 1 --format json");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(json::parse(r.out)["dtype"], "f32");  // --dtype overrides the pipeline
}

TEST(CliReal, ClassifiesARealImageWithViTTiny) {
    TESSERA_REQUIRE_SHARED();
    const std::string shared = test::shared_dir();
    auto r = tessera("classify --model " + shared + "/models/vit_tiny_patch16_224.augreg_in21k_ft_in1k --top 2 " + shared +
                     "/data/imagenet-val1300/images/ILSVRC2012_val_00000347.JPEG");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("1. canoe"));  // labels.tsv: class 472
    EXPECT_THAT(r.out, HasSubstr("(class 472)"));
    EXPECT_THAT(r.out, HasSubstr("1.2537 GMACs"));
}

}  // namespace
}  // namespace tessera

namespace tessera {
namespace {

std::string fixture(const std::string& rel) {
    std::string quoted = "'";  // (operator+ on a literal trips a GCC 12 -Wrestrict false positive)
    quoted += test::source_path("tests/fixtures/llava/" + rel);
    return quoted + "'";
}

TEST(CliCaption, JsonMatchesTheTransformersReference) {
    const json ref =
        json::parse(std::ifstream(test::source_path("tests/fixtures/llava/tiny-llava-gqa/reference/reference.json")));
    const test::CommandResult r = tessera("caption --model " + fixture("tiny-llava-gqa") + " --max-new-tokens 20 " +
                                          "--ignore-eos --format json --threads 2 " + fixture("scene-143x97.jpg"));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const json out = json::parse(r.out);
    EXPECT_EQ(out["token_ids"], ref["greedy_tokens"]);
    EXPECT_EQ(out["text"], ref["greedy_text"]);
    EXPECT_EQ(out["prompt_tokens"], ref["input_ids"].size());
    EXPECT_EQ(out["visual_tokens"], 16);
    EXPECT_EQ(out["stop_reason"], "max_new_tokens");
    ASSERT_EQ(out["first_logits_top5"].size(), 5u);
    EXPECT_EQ(out["first_logits_top5"][0][0], ref["greedy_tokens"][0]);
    for (const char* part : {"vision", "projector", "prefill", "decode"}) EXPECT_GT(out["gmacs"][part], 0.0) << part;
    for (const char* part : {"preprocess", "vision", "prefill", "first_token", "decode", "total"})
        EXPECT_GE(out["ms"][part], 0.0) << part;
    // Projector: 16 tokens x (64x64 + 64x64) MACs.
    EXPECT_NEAR(out["gmacs"]["projector"].get<double>(), 16.0 * 2 * 64 * 64 * 1e-9, 1e-12);
}

TEST(CliCaption, TextStreamsTheSameCaption) {
    const json ref =
        json::parse(std::ifstream(test::source_path("tests/fixtures/llava/tiny-llava-gqa/reference/reference.json")));
    const test::CommandResult r = tessera("caption --model " + fixture("tiny-llava-gqa") +
                                          " --max-new-tokens 20 --ignore-eos " + fixture("scene-143x97.jpg"));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, ref["greedy_text"].get<std::string>() + "\n");
}

TEST(CliCaption, WithoutAModelUsesTheBundledDemoModel) {
    // The README's first command: the demo LLaVA trained on ShapeScenes
    // captions the bundled held-out scene 44 (its ground-truth caption).
    const test::CommandResult r = tessera("caption '" + test::source_path("models/samples/shapescene-heldout-44.png") + "'");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out,
              "There are four objects: a small blue triangle at the top right, a small orange circle at the left, a "
              "large red circle at the bottom and a small blue square at the bottom right.\n");
}

// The tiny GQA LLaVA, 6 greedy tokens, JSON lines: the arguments both
// request tests give `caption`, alone or with --requests.
std::string caption_json_args() {
    return "caption --model " + fixture("tiny-llava-gqa") + " --max-new-tokens 6 --ignore-eos --format json --threads 2 ";
}

// `tessera ARGS --requests FILE`: the JSON lines it printed.
std::vector<json> answer_requests(const std::string& args, const std::string& file) {
    const test::CommandResult r = tessera(args + "--requests '" + file + "'");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::vector<json> lines;
    std::istringstream out(r.out);
    for (std::string line; std::getline(out, line);) lines.push_back(json::parse(line));
    return lines;
}

TEST(CliCaption, RequestsAnswerEachLineAsASingleRunWould) {
    // Three requests in one process: the same image twice (encoded once, the
    // decoder state reused), then another prompt. Each line must equal what a
    // process of its own prints for that request.
    const std::string dir = test::temp_dir();
    const std::string image = test::source_path("tests/fixtures/llava/scene-143x97.jpg");
    test::write_file(dir + "/requests.jsonl", "{\"image\": \"" + image + "\", \"id\": \"a\"}\n\n{\"image\": \"" + image +
                                                  "\", \"id\": 2}\n{\"image\": \"" + image +
                                                  "\", \"prompt\": \"Which shapes are red, and where are they?\"}\n");
    const std::string args = caption_json_args();
    const std::vector<json> lines = answer_requests(args, dir + "/requests.jsonl");
    ASSERT_EQ(lines.size(), 3u);
    EXPECT_EQ(lines[0]["id"], "a");
    EXPECT_EQ(lines[1]["id"], 2);
    EXPECT_FALSE(lines[2].contains("id"));
    EXPECT_EQ(lines[2]["prompt"], "Which shapes are red, and where are they?");
    const json single = json::parse(tessera(args + "'" + image + "'").out);
    const json asked = json::parse(tessera(args + "--prompt 'Which shapes are red, and where are they?' '" + image + "'").out);
    const json* want[] = {&single, &single, &asked};
    for (size_t i = 0; i < 3; ++i) {
        EXPECT_EQ(lines[i]["token_ids"], (*want[i])["token_ids"]) << i;
        EXPECT_EQ(lines[i]["first_logits_top5"], (*want[i])["first_logits_top5"]) << i;
        EXPECT_EQ(lines[i]["prompt_tokens"], (*want[i])["prompt_tokens"]) << i;
    }
    EXPECT_NE(lines[2]["prompt_tokens"], lines[0]["prompt_tokens"]);
    for (const json& line : lines) EXPECT_GT(line["peak_rss_mib"].get<double>(), 1.0);
}

TEST(CliCaption, RequestsNamingPipelinesMatchSingleRuns) {
    // Full and pruned requests alternating in one process, the pipelines
    // named relative to the requests file: each line must equal a process of
    // its own with that --pipeline (or none), and say which pipeline ran.
    const std::string dir = test::temp_dir();
    const std::string image = test::source_path("tests/fixtures/llava/scene-143x97.jpg");
    std::filesystem::create_directories(dir + "/pipes");
    test::write_file(dir + "/pipes/vtc.yaml", "stages:\n  - vtc_cls: {keep: 8}\n");
    test::write_file(dir + "/fastv.yaml", "stages:\n  - fastv: {layer: 1, ratio: 0.5}\n");
    const std::string full = "{\"image\": \"" + image + "\"}\n";
    const std::string vtc = "{\"image\": \"" + image + "\", \"pipeline\": \"pipes/vtc.yaml\"}\n";
    const std::string fastv = "{\"image\": \"" + image + "\", \"pipeline\": \"fastv.yaml\"}\n";
    test::write_file(dir + "/requests.jsonl", vtc + full + fastv + vtc + vtc + full);
    const std::string args = caption_json_args();
    const std::vector<json> lines = answer_requests(args, dir + "/requests.jsonl");
    ASSERT_EQ(lines.size(), 6u);
    const json alone_full = json::parse(tessera(args + "'" + image + "'").out);
    const json alone_vtc = json::parse(tessera(args + "--pipeline '" + dir + "/pipes/vtc.yaml' '" + image + "'").out);
    const json alone_fastv = json::parse(tessera(args + "--pipeline '" + dir + "/fastv.yaml' '" + image + "'").out);
    const json* want[] = {&alone_vtc, &alone_full, &alone_fastv, &alone_vtc, &alone_vtc, &alone_full};
    for (size_t i = 0; i < lines.size(); ++i) {
        for (const char* key : {"token_ids", "first_logits_top5", "visual_tokens", "decoder_visual_tokens", "gmacs"})
            EXPECT_EQ(lines[i][key], (*want[i])[key]) << i << " " << key;
    }
    EXPECT_EQ(lines[0]["pipeline"], "pipes/vtc.yaml");
    EXPECT_FALSE(lines[1].contains("pipeline"));
    EXPECT_EQ(alone_vtc["visual_tokens"], 8);
    EXPECT_NE(alone_fastv["decoder_visual_tokens"], alone_full["decoder_visual_tokens"]);
}

TEST(CliCaption, SeededSamplingIsReproducible) {
    const std::string args = "caption --model " + fixture("tiny-llava-mha") +
                             " --max-new-tokens 12 --ignore-eos --temperature 1.5 --top-k 50 --top-p 0.95 --format json ";
    const test::CommandResult a = tessera(args + "--seed 7 " + fixture("scene-80x64.png"));
    const test::CommandResult b = tessera(args + "--seed 7 " + fixture("scene-80x64.png"));
    const test::CommandResult c = tessera(args + "--seed 8 " + fixture("scene-80x64.png"));
    ASSERT_EQ(a.exit_code, 0) << a.err;
    EXPECT_EQ(json::parse(a.out)["token_ids"], json::parse(b.out)["token_ids"]);
    EXPECT_NE(json::parse(a.out)["token_ids"], json::parse(c.out)["token_ids"]);
}

TEST(CliCaption, BadInputsFailWithOneLine) {
    expect_error(tessera("caption --model " + fixture("tiny-llava-gqa") + " /nonexistent.png"), "/nonexistent.png");
    expect_error(tessera("caption --model " + fixture("") + " " + fixture("scene-80x64.png")),
                 "not a model folder: config.json is missing");
    expect_error(tessera("caption --model " + fixture("tiny-llava-gqa") + " --prompt 'two <image> tokens' " +
                         fixture("scene-80x64.png")),
                 "exactly one <image> token, found 2");
    expect_error(tessera("caption --model " + fixture("tiny-llava-gqa") + " --dtype f64 " + fixture("scene-80x64.png")),
                 "expected auto, f32, bf16 or f16, got 'f64'");
}

}  // namespace
}  // namespace tessera

namespace tessera {
namespace {

TEST(CliTokenize, PrintsTheIdsTransformersRecorded) {
    const json ref =
        json::parse(std::ifstream(test::source_path("tests/fixtures/llava/tiny-llava-gqa/reference/reference.json")));
    const json& c = ref["tokenizer_cases"][16];  // the LLaVA prompt with <image>
    const test::CommandResult r =
        tessera("tokenize --model '" + test::source_path("tests/fixtures/llava/tiny-llava-gqa") +
                "' \"$(printf 'USER: <image>\\nDescribe the image. ASSISTANT:')\"");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ASSERT_EQ(c["text"], "USER: <image>\nDescribe the image. ASSISTANT:");
    EXPECT_EQ(json::parse(r.out)["ids"], c["ids"]);
    expect_error(tessera("tokenize --model /nonexistent x"), "/nonexistent");
}

}  // namespace
}  // namespace tessera
