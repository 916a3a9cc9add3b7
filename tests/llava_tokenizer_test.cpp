// The tokenizers of the fixture models against the references recorded on
// the reference machine: transformers' ids for the tokenizer.json model, the
// SentencePiece library's own ids for the tokenizer.model one.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "io/tokenizer.h"
#include "models/llava.h"
#include "test_support.h"

namespace tessera {
namespace {
using namespace test;

nlohmann::json reference(const std::string& name) {
    return nlohmann::json::parse(std::ifstream(source_path("tests/fixtures/llava/" + name + "/reference/reference.json")));
}

TEST(LlavaTokenizer, TokenizerJsonIdsMatchTransformersOnTrickyStrings) {
    const nlohmann::json ref = reference("tiny-llava-gqa");
    auto tok = Tokenizer::load(source_path("tests/fixtures/llava/tiny-llava-gqa"));
    EXPECT_EQ(tok->kind(), "tokenizer.json");
    int checked = 0;
    for (const auto& c : ref["tokenizer_cases"]) {
        const std::string text = c["text"];
        EXPECT_EQ(tok->encode(text, true), c["ids"].get<std::vector<int32_t>>()) << text;
        EXPECT_EQ(tok->encode(text, false), c["ids_no_special"].get<std::vector<int32_t>>()) << text;
        const std::vector<int32_t> ids = c["ids"];
        EXPECT_EQ(tok->decode(ids, true), c["decoded"].get<std::string>()) << text;
        ++checked;
    }
    EXPECT_GE(checked, 25);
}

TEST(LlavaTokenizer, SentencePieceIdsMatchTheLibraryOnTrickyStrings) {
    const nlohmann::json ref = reference("tiny-llava-mha");
    auto tok = Tokenizer::load(source_path("tests/fixtures/llava/tiny-llava-mha"));
    EXPECT_EQ(tok->kind(), "sentencepiece");
    int checked = 0;
    for (const auto& c : ref["sentencepiece_raw"]) {
        const std::string text = c["text"];
        if (text.find("<image>") != std::string::npos) continue;  // the library knows no added tokens
        std::vector<int32_t> want = c["ids"];
        EXPECT_EQ(tok->encode(text, false), want) << text;
        want.insert(want.begin(), 1);  // <s>
        EXPECT_EQ(tok->encode(text, true), want) << text;
        ++checked;
    }
    EXPECT_GE(checked, 20);
    // Added tokens split the text; with legacy=false the text after one gets
    // no dummy prefix (transformers 4.x LlamaTokenizer).
    const int32_t image = tok->token_id("<image>");
    ASSERT_EQ(image, 601);
    const std::vector<int32_t> ids = tok->encode("USER: <image>\nWhat", true);
    ASSERT_GE(ids.size(), 5u);
    EXPECT_EQ(ids[0], 1);
    EXPECT_EQ(std::count(ids.begin(), ids.end(), image), 1);
    const std::vector<int32_t> user = tok->encode("USER: ", false);
    EXPECT_EQ(std::vector<int32_t>(ids.begin() + 1, ids.begin() + 1 + long(user.size())), user);
    EXPECT_EQ(ids[1 + user.size()], image);
    EXPECT_EQ(ids[2 + user.size()], tok->token_id("\n"));  // "\n", not "▁\n"
}

TEST(LlavaTokenizer, PromptExpandsTheImageTokenLikeLlavaProcessor) {
    const nlohmann::json ref = reference("tiny-llava-gqa");
    LlavaModel m;
    llava_load(m, source_path("tests/fixtures/llava/tiny-llava-gqa"));
    const std::vector<int32_t> ids =
        llava_prompt_ids(m, llava_prompt_text("Describe the image."), m.cfg.visual_tokens_per_image());
    EXPECT_EQ(ids, ref["input_ids"].get<std::vector<int32_t>>());
    EXPECT_NE(error_of([&] { llava_prompt_ids(m, "no image here", 16); }).find("exactly one <image> token, found 0"),
              std::string::npos);
    EXPECT_NE(error_of([&] { llava_prompt_ids(m, "<image><image>", 16); }).find("found 2"), std::string::npos);
}

}  // namespace
}  // namespace tessera
