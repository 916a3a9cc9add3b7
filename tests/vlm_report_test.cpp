// `tessera report` with task: caption: caption mention parsing, the report's
// numbers on real scenes against the captions it produced, and the errors for
// malformed request files.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <nlohmann/json.hpp>

#include "pipeline/report.h"
#include "tessera/captioner.h"
#include "tessera/error.h"
#include "test_support.h"

namespace tessera {
namespace {
using namespace test;
using ::testing::HasSubstr;

TEST(CaptionMentions, WholeWordsLongestFirstInOrder) {
    const std::vector<std::string> vocab = {"red circle", "circle", "blue star", "star"};
    EXPECT_EQ(caption_mentions("A small Red Circle at the top, a blue star and a circle.", vocab),
              (std::vector<std::string>{"red circle", "blue star", "circle"}));
    // Not inside other words; repeated mentions counted each time.
    EXPECT_EQ(caption_mentions("starlight circles; a star, a star", vocab), (std::vector<std::string>{"star", "star"}));
    EXPECT_TRUE(caption_mentions("", vocab).empty());
}

std::string report_yaml(const std::string& data, const std::string& extra) {
    return "model: " + source_path("models/shapescenes-llava") +
           "\ntask: caption\ndataset: {requests: " + data + "/requests.jsonl, vocabulary: " + data +
           "/vocabulary.json, images: 2}\nmax_new_tokens: 64\n" + extra;
}

TEST(VlmReport, NumbersFollowFromTheCaptionsOnTwoRealScenes) {
    TESSERA_REQUIRE_PYTHON();
    const std::string data = render_heldout(2);
    const std::string dir = temp_dir();
    const std::string cfg = write_file(dir + "/r.yaml", report_yaml(data, "pipelines:\n  full: []\n  exit2: [{dyvte: {exit_layer: 2}}]\n"));
    const nlohmann::json r = report_run(report_config_read(cfg), dir + "/out", false);
    EXPECT_EQ(r["images"], 2);
    EXPECT_EQ(r["requests_run"], 14);  // per scene: a caption, 4 yes/no, 2 counts
    const auto& full = r["pipelines"][0];
    const auto& exit2 = r["pipelines"][1];
    EXPECT_EQ(full["decoder_visual_tokens"], "196x6");
    EXPECT_EQ(exit2["decoder_visual_tokens"], "196x3 > 0x3");
    EXPECT_EQ(exit2["exit_layer_mean"], 2.0);
    EXPECT_LT(exit2["gmacs"]["prefill"].get<double>(), full["gmacs"]["prefill"].get<double>());
    EXPECT_DOUBLE_EQ(full["gmacs_ratio"].get<double>(), 1.0);

    // The baseline's caption numbers, recomputed from its own captions.
    Captioner cap({.model = source_path("models/shapescenes-llava"), .pipeline = "", .threads = 2});
    const std::vector<std::string> vocab = nlohmann::json::parse(std::ifstream(data + "/vocabulary.json"))["objects"];
    int64_t tp = 0, fp = 0, fn = 0, mentions = 0, bad = 0, bad_captions = 0;
    std::ifstream requests(data + "/requests.jsonl");
    for (std::string line; std::getline(requests, line);) {
        const nlohmann::json q = nlohmann::json::parse(line);
        if (q["task"] != "caption") continue;
        GenerateOptions g;
        g.prompt = q["prompt"], g.max_new_tokens = 64;
        const Caption c = cap.caption_file(data + "/" + q["image"].get<std::string>(), g);
        const std::vector<std::string> said = caption_mentions(c.text, vocab);
        const std::set<std::string> truth = q["objects"].get<std::set<std::string>>();
        const std::set<std::string> mentioned(said.begin(), said.end());
        for (const auto& m : mentioned) (truth.count(m) ? tp : fp) += 1;
        for (const auto& t : truth) fn += !mentioned.count(t);
        int64_t wrong = 0;
        for (const auto& m : said) wrong += !truth.count(m);
        mentions += int64_t(said.size()), bad += wrong, bad_captions += wrong > 0;
    }
    const double p = double(tp) / double(tp + fp), rc = double(tp) / double(tp + fn);
    EXPECT_NEAR(full["caption_f1"].get<double>(), 2 * p * rc / (p + rc), 1e-12);
    EXPECT_NEAR(full["chair_i"].get<double>(), double(bad) / double(mentions), 1e-12);
    EXPECT_NEAR(full["chair_s"].get<double>(), double(bad_captions) / 2.0, 1e-12);
    for (const char* f : {"report.md", "report.csv", "report.json", "quality-vs-gmacs.png", "hallucination-vs-gmacs.png"})
        EXPECT_TRUE(std::filesystem::exists(dir + "/out/" + f)) << f;

    // no_mmap: the weights read into memory give the same numbers.
    EXPECT_EQ(r["weights"], "mapped");
    const std::string in_memory =
        write_file(dir + "/m.yaml", report_yaml(data, "no_mmap: true\npipelines:\n  full: []\n"));
    const ReportSpec spec = report_config_read(in_memory);
    EXPECT_TRUE(spec.no_mmap);
    const nlohmann::json m = report_run(spec, dir + "/out-memory", false);
    EXPECT_EQ(m["weights"], "read into memory");
    for (const char* key : {"caption_f1", "chair_i", "chair_s", "gmacs"}) EXPECT_EQ(m["pipelines"][0][key], full[key]) << key;
}

TEST(VlmReport, MalformedRequestFilesAreRefusedNamingTheLine) {
    const std::string dir = temp_dir();
    write_file(dir + "/vocabulary.json", "{\"objects\": [\"red circle\"]}");
    auto error_for = [&](const std::string& lines) {
        write_file(dir + "/requests.jsonl", lines);
        const std::string cfg = write_file(dir + "/r.yaml", report_yaml(dir, "pipelines:\n  full: []\n"));
        return error_of([&] { report_run(report_config_read(cfg), dir + "/out", false); });
    };
    const std::string img = "\"image\": \"a.png\", \"prompt\": \"Q\"";
    EXPECT_THAT(error_for("{" + img + ", \"task\": \"caption\"}\n"),
                HasSubstr("requests.jsonl:1: a caption request needs 'objects'"));
    EXPECT_THAT(error_for("{" + img + ", \"task\": \"yesno\", \"answer\": \"maybe\"}\n"),
                HasSubstr("requests.jsonl:1: a yesno request's answer must be yes or no"));
    EXPECT_THAT(error_for("\n{" + img + ", \"task\": \"yesno\", \"answer\": \"no\"}\n"),
                HasSubstr("requests.jsonl:2: a 'no' request needs its 'negative' kind"));
    EXPECT_THAT(error_for("{" + img + ", \"task\": \"vqa\"}\n"),
                HasSubstr("key 'task': expected caption, yesno or count, got 'vqa'"));
    EXPECT_THAT(error_for("not json\n"), HasSubstr("requests.jsonl:1: expected a JSON object"));
    EXPECT_THAT(error_for(""), HasSubstr("requests.jsonl: no requests"));
    const std::string bad_task = write_file(dir + "/t.yaml", "model: x\ntask: detect\npipelines:\n  full: []\n");
    EXPECT_THAT(error_of([&] { report_config_read(bad_task); }), HasSubstr("must be classify or caption, got 'detect'"));
}

}  // namespace
}  // namespace tessera
