// The bundled demo model (models/shapescenes-llava) against the PyTorch code
// that trained it: identical greedy tokens on 50 held-out ShapeScenes scenes,
// rendered at test time by the generator (bit-identical on every machine).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "models/llava.h"
#include "tessera/captioner.h"
#include "test_support.h"

namespace tessera {
namespace {
using namespace test;

std::string render_heldout(int count) {
    const std::string dir = temp_dir();
    const CommandResult r = run_command("'" + reference_python() + "' '" + source_path("tools/shapescenes.py") +
                                        "' --split heldout --count " + std::to_string(count) + " --out '" + dir + "'");
    if (r.exit_code != 0) throw std::runtime_error("shapescenes.py failed: " + r.err);
    return dir;
}

TEST(ShapeScenesModel, GreedyTokensMatchTheTrainingCodeOn50HeldOutScenes) {
    TESSERA_REQUIRE_PYTHON();
    const nlohmann::json ref =
        nlohmann::json::parse(std::ifstream(source_path("tests/fixtures/shapescenes/reference.json")));
    ASSERT_EQ(ref["parity"].size(), 50u);
    const std::string dir = render_heldout(50);
    Captioner cap({.model = source_path("models/shapescenes-llava"), .threads = 2});
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

}  // namespace
}  // namespace tessera
