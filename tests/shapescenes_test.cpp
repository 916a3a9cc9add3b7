// The bundled demo model (models/shapescenes-llava) against the PyTorch code
// that trained it: identical greedy tokens on 50 held-out ShapeScenes scenes,
// rendered at test time by the generator (bit-identical on every machine).
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/image.h"
#include "models/llava.h"
#include "tessera/captioner.h"
#include "test_support.h"

namespace tessera {
namespace {
using namespace test;

TEST(ShapeScenesModel, GreedyTokensMatchTheTrainingCodeOn50HeldOutScenes) {
    TESSERA_REQUIRE_PYTHON();
    const nlohmann::json ref =
        nlohmann::json::parse(std::ifstream(source_path("tests/fixtures/shapescenes/reference.json")));
    ASSERT_EQ(ref["parity"].size(), 50u);
    const std::string dir = render_heldout(50);
    Captioner cap({.model = source_path("models/shapescenes-llava"), .pipeline = "", .threads = 2});
    LlavaModel m;
    llava_load(m, source_path("models/shapescenes-llava"));
    int identical = 0;
    for (const auto& r : ref["parity"]) {
        const std::string prompt = r["prompt"];
        const std::vector<int32_t> ids = r["input_ids"];
        EXPECT_EQ(llava_prompt_ids(m, llava_prompt_text(prompt), m.cfg.visual_tokens_per_image()), ids) << prompt;
        GenerateOptions g;
        g.prompt = prompt, g.max_new_tokens = 64;
        const Caption c = cap.caption_file(dir + "/images/" + r["image"].get<std::string>(), g);
        EXPECT_EQ(c.prompt_tokens, int64_t(ids.size()));
        EXPECT_EQ(c.token_ids, r["tokens"].get<std::vector<int32_t>>()) << r["image"] << ": " << prompt;
        identical += c.token_ids == r["tokens"].get<std::vector<int32_t>>();
    }
    std::printf("[ measured ] identical greedy outputs on %d/50 held-out scenes\n", identical);
}

// --no-mmap reads the weights into memory: the same model, so the same tokens.
TEST(ShapeScenesModel, WeightsReadIntoMemoryCaptionAsMapped) {
    const std::string model = source_path("models/shapescenes-llava");
    Captioner mapped({.model = model, .pipeline = "", .threads = 2});
    Captioner in_memory({.model = model, .pipeline = "", .threads = 2, .no_mmap = true});
    GenerateOptions g;
    g.max_new_tokens = 24, g.stop_at_eos = false;
    const std::string image = source_path("models/samples/shapescene-heldout-44.png");
    const Caption a = mapped.caption_file(image, g), b = in_memory.caption_file(image, g);
    EXPECT_EQ(a.token_ids.size(), 24u);
    EXPECT_EQ(b.token_ids, a.token_ids);
    EXPECT_EQ(b.text, a.text);
}

}  // namespace
}  // namespace tessera

namespace tessera {
namespace {
using namespace test;

// Fraction of object pixels inside the top quarter of patches by CLS attention.
double coverage(const std::vector<double>& attention, const std::vector<int>& object_pixels) {
    std::vector<int> order(attention.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = int(i);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return attention[size_t(a)] > attention[size_t(b)]; });
    double inside = 0, total = 0;
    for (size_t k = 0; k < order.size(); ++k) {
        total += object_pixels[size_t(order[k])];
        if (k < order.size() / 4) inside += object_pixels[size_t(order[k])];
    }
    return total > 0 ? inside / total : 1.0;
}

TEST(ShapeScenesModel, ClsAttentionOfTheVisionTowerCoversTheObjects) {
    TESSERA_REQUIRE_PYTHON();
    const int scenes = 100;
    const std::string dir = render_heldout(scenes);
    LlavaModel m;
    llava_load(m, source_path("models/shapescenes-llava"), {.load_tokenizer = false});
    LlavaVisionState vs;
    llava_vision_state_init(vs, m);
    std::ifstream lines(dir + "/scenes.jsonl");
    std::string line;
    std::vector<double> per_layer(size_t(m.vision_blocks), 0.0), area;
    double summed_coverage = 0;
    std::vector<float> pixels(static_cast<size_t>(3 * 224 * 224));
    while (std::getline(lines, line)) {
        const nlohmann::json scene = nlohmann::json::parse(line);
        const std::vector<int> object_pixels = scene["patch_object_pixels"];
        clip_preprocess_image(image_decode_file(dir + "/images/" + scene["image"].get<std::string>()), m.preprocess,
                              pixels.data());
        ClsRowRecorder rows;
        Stage* stages[] = {&rows};
        llava_encode_image(m, vs, pixels.data(), stages, 1, nullptr);
        std::vector<double> summed(rows.head_mean(0).size(), 0.0);  // VTC-CLS's score: the sum over layers
        for (int l = 0; l < m.vision_blocks; ++l) {
            const std::vector<double> mean = rows.head_mean(size_t(l));
            per_layer[size_t(l)] += coverage(mean, object_pixels);
            for (size_t t = 0; t < summed.size(); ++t) summed[t] += mean[t];
        }
        summed_coverage += coverage(summed, object_pixels) / scenes;
        double covered = 0;
        for (int v : object_pixels) covered += v > 0;
        area.push_back(covered / 196.0);
    }
    double mean_area = 0;
    for (double a : area) mean_area += a / scenes;
    for (int l = 0; l < m.vision_blocks; ++l) {
        per_layer[size_t(l)] /= scenes;
        std::printf("[ measured ] block %d: top-25%% CLS patches hold %.3f of object pixels\n", l, per_layer[size_t(l)]);
    }
    std::printf("[ measured ] summed over blocks: %.3f; patches touching an object: %.3f of the image\n",
                summed_coverage, mean_area);
    // CLS attention summed over the tower's layers (VTC-CLS's ranking) puts
    // most object pixels in the top quarter of patches, which random patches
    // would do for a quarter of them.
    EXPECT_GT(summed_coverage, 0.6);
}

}  // namespace
}  // namespace tessera
