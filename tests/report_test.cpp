// `tessera report` and `classify --visualize`: configs, tables, the Pareto
// front and the pictures.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

#include "io/image.h"
#include "pipeline/report.h"
#include "pipeline/visualize.h"
#include "tessera/error.h"
#include "test_support.h"

namespace tessera {
namespace {

using ::testing::HasSubstr;
using nlohmann::json;

using test::error_of;

TEST(Pareto, FrontKeepsOnlyUndominatedPointsSortedByCost) {
    std::vector<ParetoPoint> p = {{"a", 1.0, 80}, {"b", 0.8, 79}, {"c", 0.9, 78}, {"d", 0.5, 70}, {"e", 1.0, 79}};
    EXPECT_EQ(pareto_front(p), (std::vector<size_t>{3, 1, 0}));  // c is beaten by b, e by a
    std::vector<ParetoPoint> same = {{"x", 1.0, 80}, {"y", 1.0, 80}};
    EXPECT_EQ(pareto_front(same).size(), 2u);  // equal points dominate neither
}

struct ReportFixture : ::testing::Test {
    std::string dir;
    void SetUp() override {
        dir = test::temp_dir();
        test::write_tiny_vit(dir + "/tiny", {});
        std::filesystem::create_directories(dir + "/images");
        std::string labels = "image\tclass_index\n";
        for (int i = 0; i < 4; ++i) {
            Image img{32, 32, {}};
            for (float v : test::random_values(32 * 32 * 3, uint32_t(i + 1))) img.rgb.push_back(uint8_t((v + 1) * 127));
            image_write_png(dir + "/images/" + std::to_string(i) + ".png", img);
            labels += std::to_string(i) + ".png\t" + std::to_string(i) + "\n";
        }
        test::write_file(dir + "/labels.tsv", labels);
        test::write_file(dir + "/noop.yaml", "stages: [noop]\n");
    }
    std::string config(const std::string& pipelines) {
        return test::write_file(dir + "/report.yaml", "model: tiny\ndataset: {images: images, labels: labels.tsv}\n" + pipelines);
    }
};

TEST_F(ReportFixture, WritesEveryOutputWithOneRowPerPipeline) {
    ReportSpec spec = report_config_read(config("pipelines:\n  full: []\n  chained: noop.yaml\n  inline: [noop, noop]\n"));
    ASSERT_EQ(spec.pipelines.size(), 3u);
    EXPECT_EQ(spec.baseline, "full");
    EXPECT_EQ(spec.pipelines[1].source, dir + "/noop.yaml");
    json r = report_run(spec, dir + "/out", false);
    for (const char* f : {"report.md", "report.csv", "report.json", "pareto.png"})
        EXPECT_TRUE(std::filesystem::exists(dir + "/out/" + f)) << f;
    ASSERT_EQ(r["pipelines"].size(), 3u);
    EXPECT_EQ(r["images"], 4);
    for (const json& row : r["pipelines"]) {
        // noop stages change nothing: same predictions, same MACs
        EXPECT_EQ(row["top1"], r["pipelines"][0]["top1"]);
        EXPECT_DOUBLE_EQ(row["gmacs_ratio"].get<double>(), 1.0);
        EXPECT_DOUBLE_EQ(row["delta_top1"].get<double>(), 0.0);
        EXPECT_EQ(row["tokens"], "17x3");
    }
    const std::string md = test::read_file(dir + "/out/report.md");
    EXPECT_THAT(md, HasSubstr("| full (baseline) |"));
    EXPECT_THAT(md, HasSubstr("| chained |"));
    EXPECT_THAT(md, HasSubstr("`[{noop: {}}, {noop: {}}]`"));
    const std::string csv = test::read_file(dir + "/out/report.csv");
    EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 4);
    cv::Mat plot = cv::imread(dir + "/out/pareto.png");
    EXPECT_EQ(plot.cols, 1000);
}

TEST_F(ReportFixture, ConfigErrorsNameTheKey) {
    std::string f = config("pipelines: []\n");
    EXPECT_THAT(error_of([&] { report_config_read(f); }), HasSubstr("key 'pipelines': expected a mapping"));
    f = config("pipelines:\n  full: []\nbaseline: other\n");
    EXPECT_EQ(error_of([&] { report_config_read(f); }), f + ":5: key 'baseline': names no pipeline ('other')");
    f = config("pipelines:\n  full: 3\n");
    EXPECT_THAT(error_of([&] { report_config_read(f); }), HasSubstr("cannot open file"));
    f = config("pipelines:\n  bad: [{noop: {x: 1}}]\n");
    ReportSpec spec = report_config_read(f);
    EXPECT_EQ(error_of([&] { report_run(spec, dir + "/out2", false); }), f + ":4: unknown key 'pipelines.bad[0].noop.x'");
    f = config("pipelines:\n  full: []\ncolour: red\n");
    EXPECT_EQ(error_of([&] { report_config_read(f); }), f + ":5: unknown key 'colour'");
}

TEST(Visualize, ShadesEachPatchByItsFate) {
    Image crop{32, 32, std::vector<uint8_t>(32 * 32 * 3, 200)};
    TokenTrace t;
    t.block = 1, t.stage = "test", t.count = 4;
    // 2x2 grid of 16-px patches: patch 0 kept, 1 and 2 merged into token 2, 3 dropped
    t.patch_owner = {1, 2, 2, -1};
    t.kind = {TokenKind::prefix, TokenKind::patch, TokenKind::merged, TokenKind::fused};
    const std::string path = test::temp_dir() + "/v.png";
    visualize_token_fates(crop, 2, 2, 16, {t}, path);
    cv::Mat img = cv::imread(path);
    ASSERT_FALSE(img.empty());
    const int panel_x = 64 + 8, top = 28;  // second panel, after the caption strip
    auto at = [&](int x, int y) { return img.at<cv::Vec3b>(top + y, panel_x + x); };
    EXPECT_EQ(at(16, 16), cv::Vec3b(200, 200, 200));  // kept: untouched
    EXPECT_LT(at(48, 48)[0], 60);                     // dropped: dark
    EXPECT_NE(at(48, 16), cv::Vec3b(200, 200, 200));  // merged: tinted
    EXPECT_EQ(at(48, 16), at(16, 48));                // one colour per group
}

}  // namespace
}  // namespace tessera
