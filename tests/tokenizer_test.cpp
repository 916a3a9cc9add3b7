// Text tokenizer of a Hugging Face model folder.
//  - SentencePiece (tokenizer.model): a LLaMA-like model trained here at test
//    time; plain text is compared with python3-sentencepiece, the added-token
//    rules of transformers' LlamaTokenizer with expectations composed by hand
//    from SentencePiece's ids for each piece.
//  - tokenizer.json: small hand-written files (GPT-2 byte-level BPE, LLaMA
//    Metaspace + byte fallback, a Qwen2-style Split regex + NFC) with ids
//    derived by hand from the merge ranks.
//  - Reference ids from real transformers recorded with the fixture models
//    (tests/fixtures/llava/*/reference/reference.json).
#include "io/tokenizer.h"

#include <gmock/gmock.h>
#include <sentencepiece_trainer.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "tessera/error.h"
#include "test_support.h"

namespace tessera {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::error_of;
using test::temp_dir;
using test::write_file;
using testing::ElementsAre;
using testing::HasSubstr;
using ids = std::vector<int32_t>;

const std::string kSp = "\xE2\x96\x81";  // "▁"

ids cat(std::initializer_list<ids> parts) {
    ids out;
    for (const ids& p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
}

std::string folder(const std::string& name, const json& tokenizer_json, const json& config = nullptr) {
    const std::string dir = temp_dir() + "/" + name;
    fs::create_directories(dir);
    write_file(dir + "/tokenizer.json", tokenizer_json.dump(2));
    if (!config.is_null()) write_file(dir + "/tokenizer_config.json", config.dump(2));
    return dir;
}

// ======================= tokenizer.json fixtures =======================

// GPT-2 byte-level table: the character standing for byte b.
std::string byte_char(int b) {
    static std::vector<std::string> table = [] {
        std::vector<std::string> t(256);
        int n = 0;
        for (int c = 0; c < 256; ++c) {
            const bool printable = (c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE && c <= 0xFF);
            const int cp = printable ? c : 256 + n++;
            std::string s;
            if (cp < 0x80) {
                s += char(cp);
            } else {
                s += char(0xC0 | (cp >> 6));
                s += char(0x80 | (cp & 0x3F));
            }
            t[size_t(c)] = s;
        }
        return t;
    }();
    return table[size_t(b)];
}

json added(int id, const std::string& content, bool special, bool normalized = false) {
    return {{"id", id},        {"content", content}, {"single_word", false}, {"lstrip", false},
            {"rstrip", false}, {"normalized", normalized}, {"special", special}};
}

// GPT-2 style: vocab id b for the character of byte b, then merges 256...
//   0 Ġ t   1 h e   2 Ġt he   3 l l   4 he ll   5 hell o   6 Ġ c   7 a t   8 Ġc at   9 1 2
json gpt2_json(bool list_merges) {
    json vocab = json::object();
    for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
    const std::vector<std::pair<std::string, std::string>> merges = {
        {"Ġ", "t"}, {"h", "e"}, {"Ġt", "he"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {"Ġ", "c"}, {"a", "t"}, {"Ġc", "at"}, {"1", "2"}};
    json m = json::array();
    int id = 256;
    for (const auto& [a, b] : merges) {
        vocab[a + b] = id++;
        m.push_back(list_merges ? json::array({a, b}) : json(a + " " + b));
    }
    vocab["<|endoftext|>"] = 266;
    return {{"version", "1.0"},
            {"truncation", nullptr},
            {"padding", nullptr},
            {"added_tokens", json::array({added(266, "<|endoftext|>", true)})},
            {"normalizer", nullptr},
            {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
            {"post_processor", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}}},
            {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
            {"model",
             {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", ""},
              {"end_of_word_suffix", ""}, {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
              {"vocab", vocab}, {"merges", m}}}};
}

TEST(Tokenizer, ByteLevelBpeFollowsMergeRanks) {
    for (bool list_merges : {false, true}) {
        SCOPED_TRACE(list_merges ? "merges as [a, b]" : "merges as \"a b\"");
        auto tok = Tokenizer::load(folder("gpt2", gpt2_json(list_merges)));
        EXPECT_EQ(tok->kind(), "tokenizer.json");
        EXPECT_EQ(tok->vocab_size(), 267);
        // "hello": he(1) ll(3) hell(4) hello(5); " the": Ġt(0) he(1) Ġthe(2);
        // " cat": Ġc(6) at(7) Ġcat(8).
        EXPECT_EQ(tok->encode("hello the cat", true), (ids{261, 258, 264}));
        // \s+(?!\S) takes the first of two spaces; the second joins the word.
        EXPECT_EQ(tok->encode("  hello", true), (ids{32, 32, 261}));
        EXPECT_EQ(tok->encode("hello   the", true), (ids{261, 32, 32, 258}));
        EXPECT_EQ(tok->encode("\n", true), (ids{10}));
        EXPECT_EQ(tok->encode("a\tb", true), (ids{97, 9, 98}));
        EXPECT_EQ(tok->encode("trailing ", true), (ids{116, 114, 97, 105, 108, 105, 110, 103, 32}));
        EXPECT_EQ(tok->encode("\xC3\xA9", true), (ids{0xC3, 0xA9}));                           // é
        EXPECT_EQ(tok->encode("\xF0\x9F\x99\x82", true), (ids{0xF0, 0x9F, 0x99, 0x82}));       // 🙂
        EXPECT_EQ(tok->encode("12345", true), (ids{265, '3', '4', '5'}));                      // one \p{N}+ word
        EXPECT_EQ(tok->encode("it's", true), (ids{'i', 't', '\'', 's'}));
        EXPECT_EQ(tok->encode("hello<|endoftext|>", true), (ids{261, 266}));
        EXPECT_EQ(tok->encode("a<|endoftext|> b", true), (ids{'a', 266, 32, 'b'}));
        EXPECT_EQ(tok->encode("", true), ids{});

        EXPECT_EQ(tok->decode(ids{261, 258, 264}, false), "hello the cat");
        EXPECT_EQ(tok->decode(ids{261, 266, 32, 32, 261}, false), "hello<|endoftext|>  hello");
        EXPECT_EQ(tok->decode(ids{261, 266}, true), "hello");
        EXPECT_EQ(tok->decode(ids{0xF0, 0x9F}, false), "\xEF\xBF\xBD");  // incomplete: one U+FFFD
        EXPECT_EQ(tok->decode(ids{0xF0, 0x9F, 0x99, 0x82, 99999}, false), "\xF0\x9F\x99\x82");  // unknown id dropped
        EXPECT_EQ(tok->token_id("<|endoftext|>"), 266);
        EXPECT_EQ(tok->token_id("Ġthe"), 258);
        EXPECT_EQ(tok->token_id("nope"), -1);
        EXPECT_EQ(tok->bos_id(), -1);
    }
}

TEST(Tokenizer, AddedTokenFlagsFollowTokenizers) {
    json j = gpt2_json(false);
    json mask = added(267, "<mask>", true);
    mask["lstrip"] = mask["rstrip"] = true;
    json word = added(268, "cat", false);
    word["single_word"] = true;
    j["added_tokens"].push_back(mask);
    j["added_tokens"].push_back(word);
    auto tok = Tokenizer::load(folder("flags", j));
    // lstrip/rstrip: " <mask> " is the token; "the" has no Ġ then.
    EXPECT_EQ(tok->encode("hello <mask> the", true), (ids{261, 267, 't', 257}));
    // single_word: only whole-word "cat" is the added token.
    EXPECT_EQ(tok->encode("cat concatenate cat.", true),
              (ids{268, 262, 'o', 'n', 'c', 263, 'e', 'n', 263, 'e', 32, 268, '.'}));
    EXPECT_EQ(tok->encode("cats", true), (ids{'c', 263, 's'}));
}

// LLaMA: <unk> <s> </s>, 256 byte tokens "<0x00>".. at 3..258, then pieces.
//   merges: 0 ▁ t  1 h e  2 ▁t he  3 ▁ c  4 a t  5 ▁c at
json llama_json(bool legacy_normalizer, bool byte_fallback = true) {
    json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
    static const char* hex = "0123456789ABCDEF";
    for (int b = 0; b < 256; ++b) vocab[std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">"] = 3 + b;
    int id = 259;
    for (const std::string& t : std::vector<std::string>{kSp, kSp + "t", "he", kSp + "the", kSp + "c", "at", kSp + "cat", "t", "h", "e", "c", "a",
                                "\xC3\xA9"})
        vocab[t] = id++;  // ▁ 259, ▁t 260, he 261, ▁the 262, ▁c 263, at 264, ▁cat 265, t 266, h 267, e 268, c 269, a 270, é 271
    json merges = json::array({json::array({kSp, "t"}), json::array({"h", "e"}), json::array({kSp + "t", "he"}),
                               json::array({kSp, "c"}), json::array({"a", "t"}), json::array({kSp + "c", "at"})});
    json j = {{"version", "1.0"},
              {"added_tokens", json::array({added(0, "<unk>", true), added(1, "<s>", true), added(2, "</s>", true),
                                             added(272, "<image>", true)})},
              {"post_processor",
               {{"type", "TemplateProcessing"},
                {"single", json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
                {"pair", json::array()},
                {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
              {"decoder",
               {{"type", "Sequence"},
                {"decoders", json::array({{{"type", "Replace"}, {"pattern", {{"String", kSp}}}, {"content", " "}},
                                          {{"type", "ByteFallback"}},
                                          {{"type", "Fuse"}},
                                          {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}})}}},
              {"model",
               {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", "<unk>"}, {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr}, {"fuse_unk", true}, {"byte_fallback", byte_fallback},
                {"ignore_merges", false}, {"vocab", vocab}, {"merges", merges}}}};
    if (legacy_normalizer) {  // transformers < 4.38 conversion
        j["normalizer"] = {{"type", "Sequence"},
                           {"normalizers", json::array({{{"type", "Prepend"}, {"prepend", kSp}},
                                                        {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSp}}})}};
        j["pre_tokenizer"] = nullptr;
    } else {  // legacy=false conversion
        j["normalizer"] = nullptr;
        j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", kSp}, {"prepend_scheme", "first"}, {"split", false}};
    }
    return j;
}

json llama_config() {
    return {{"tokenizer_class", "LlamaTokenizer"}, {"add_bos_token", true}, {"add_eos_token", false},
            {"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}, {"pad_token", nullptr},
            {"legacy", false}, {"clean_up_tokenization_spaces", false}};
}

TEST(Tokenizer, LlamaMetaspaceAndByteFallback) {
    for (bool legacy_normalizer : {true, false}) {
        SCOPED_TRACE(legacy_normalizer ? "Prepend+Replace normalizer" : "Metaspace(first) pre-tokenizer");
        auto tok = Tokenizer::load(folder("llama", llama_json(legacy_normalizer), llama_config()));
        EXPECT_EQ(tok->bos_id(), 1);
        EXPECT_EQ(tok->eos_id(), 2);
        EXPECT_EQ(tok->pad_id(), -1);
        EXPECT_EQ(tok->unk_id(), 0);
        // ▁t(0) he(1) ▁the(2) ▁c(3) at(4) ▁cat(5) over the whole "▁the▁cat".
        EXPECT_EQ(tok->encode("the cat", true), (ids{1, 262, 265}));
        EXPECT_EQ(tok->encode("the cat", false), (ids{262, 265}));
        EXPECT_EQ(tok->encode("", true), (ids{1}));
        EXPECT_EQ(tok->encode("\xC3\xA9", true), (ids{1, 259, 271}));                     // é is a piece
        EXPECT_EQ(tok->encode("\xE6\x97\xA5", true), (ids{1, 259, 3 + 0xE6, 3 + 0x97, 3 + 0xA5}));  // 日: bytes
        EXPECT_EQ(tok->encode("\n", true), (ids{1, 259, 3 + 0x0A}));
        EXPECT_EQ(tok->encode("the</s>", true), (ids{1, 262, 2}));
        if (legacy_normalizer) {
            // Each piece between added tokens gets its own "▁".
            EXPECT_EQ(tok->encode("<image>the cat", true), (ids{1, 272, 262, 265}));
            EXPECT_EQ(tok->encode("  ", true), (ids{1, 259, 259, 259}));
            EXPECT_EQ(tok->encode("<image> the", true), (ids{1, 272, 259, 262}));  // "▁▁the"
        } else {
            // "first": only a piece at the very start of the text gets "▁".
            EXPECT_EQ(tok->encode("<image>the cat", true), (ids{1, 272, 266, 261, 265}));
            EXPECT_EQ(tok->encode("  ", true), (ids{1, 259, 259}));
            EXPECT_EQ(tok->encode("<image> the", true), (ids{1, 272, 262}));
        }

        EXPECT_EQ(tok->decode(ids{1, 262, 265}, true), "the cat");
        EXPECT_EQ(tok->decode(ids{1, 262, 265}, false), "<s> the cat");
        EXPECT_EQ(tok->decode(ids{259, 3 + 0xE6, 3 + 0x97, 3 + 0xA5}, true), "\xE6\x97\xA5");
        EXPECT_EQ(tok->decode(ids{262, 3 + 0xE6, 3 + 0x97}, true), "the\xEF\xBF\xBD\xEF\xBF\xBD");
    }
}

TEST(Tokenizer, Transformers5RebuildsLlamaPipelines) {
    // transformers 5 ignores the legacy Prepend+Replace normalizer of a
    // LlamaTokenizer and uses Metaspace: "first" for legacy=false...
    TokenizerOptions v5;
    v5.transformers5 = true;
    auto tok = Tokenizer::load(folder("v5", llama_json(true), llama_config()), v5);
    EXPECT_EQ(tok->encode("<image>the cat", true), (ids{1, 272, 266, 261, 265}));
    EXPECT_EQ(tok->encode("  ", true), (ids{1, 259, 259}));
    EXPECT_EQ(tok->decode(ids{1, 262, 265}, true), "the cat");
    // ... "always" for legacy=true.
    json cfg = llama_config();
    cfg["legacy"] = true;
    tok = Tokenizer::load(folder("v5legacy", llama_json(false), cfg), v5);
    EXPECT_EQ(tok->encode("<image>the cat", true), (ids{1, 272, 262, 265}));
    // Other tokenizer classes keep tokenizer.json's pipeline.
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast";
    tok = Tokenizer::load(folder("v5other", llama_json(true), cfg), v5);
    EXPECT_EQ(tok->encode("<image>the cat", true), (ids{1, 272, 262, 265}));
}

TEST(Tokenizer, UnknownCharactersFuseIntoOneUnk) {
    auto tok = Tokenizer::load(folder("llama-unk", llama_json(false, false), llama_config()));
    EXPECT_EQ(tok->encode("the \xE6\x97\xA5\xE6\x9C\xAC cat", true), (ids{1, 262, 259, 0, 265}));
}

TEST(Tokenizer, AddBosAndEosFollowTheConfig) {
    json cfg = llama_config();
    cfg["add_eos_token"] = true;
    auto tok = Tokenizer::load(folder("eos", llama_json(false), cfg));
    EXPECT_EQ(tok->encode("the", true), (ids{1, 262, 2}));
    cfg["add_bos_token"] = false;
    cfg["add_eos_token"] = false;
    tok = Tokenizer::load(folder("nobos", llama_json(false), cfg));
    EXPECT_EQ(tok->encode("the", true), (ids{262}));
    // Without add_bos_token/add_eos_token in the config, tokenizer.json's template.
    cfg.erase("add_bos_token");
    cfg.erase("add_eos_token");
    tok = Tokenizer::load(folder("template", llama_json(false), cfg));
    EXPECT_EQ(tok->encode("the", true), (ids{1, 262}));
}

TEST(Tokenizer, ConfigAddedTokensJoinTheVocabulary) {
    // transformers adds added_tokens_decoder entries missing from tokenizer.json.
    json cfg = llama_config();
    cfg["added_tokens_decoder"] = {
        {"273", {{"content", "<pad>"}, {"lstrip", false}, {"normalized", false}, {"rstrip", false}, {"single_word", false}, {"special", true}}}};
    cfg["pad_token"] = "<pad>";
    auto tok = Tokenizer::load(folder("pad", llama_json(false), cfg));
    EXPECT_EQ(tok->pad_id(), 273);
    EXPECT_EQ(tok->vocab_size(), 274);
    EXPECT_EQ(tok->encode("the<pad>", true), (ids{1, 262, 273}));
    EXPECT_EQ(tok->decode(ids{1, 262, 273}, true), "the");
}

TEST(Tokenizer, TokenStreamWaitsForCompleteCharacters) {
    auto tok = Tokenizer::load(folder("stream", llama_json(false), llama_config()));
    const ids all = {1, 262, 265, 259, 3 + 0xE6, 3 + 0x97, 3 + 0xA5, 260};  // <s> the cat 日 t
    TokenStream stream(*tok, true);
    std::vector<std::string> pieces;
    for (int32_t id : all) pieces.push_back(stream.push(id));
    pieces.push_back(stream.finish());
    EXPECT_THAT(pieces, ElementsAre("", "the", " cat", " ", "", "", "\xE6\x97\xA5", " t", ""));
    std::string joined;
    for (const std::string& p : pieces) joined += p;
    EXPECT_EQ(joined, tok->decode(all, true));

    TokenStream cut(*tok, true);  // an incomplete character at the end still comes out
    EXPECT_EQ(cut.push(3 + 0xE6), "");
    EXPECT_EQ(cut.finish(), "\xEF\xBF\xBD");
}

// Qwen2-style: NFC, a Split regex with (?i:..), \p{..} and (?!\S), then
// byte-level BPE. Merges: 0 Ġ Ġ  1 Ġ b  2 l l
json split_json() {
    json j = gpt2_json(false);
    j["normalizer"] = {{"type", "NFC"}};
    const std::string pattern =
        R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
    j["pre_tokenizer"] = {
        {"type", "Sequence"},
        {"pretokenizers",
         json::array({{{"type", "Split"}, {"pattern", {{"Regex", pattern}}}, {"behavior", "Isolated"}, {"invert", false}},
                      {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}}})}};
    json vocab = json::object();
    for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
    vocab["ĠĠ"] = 256;
    vocab["Ġb"] = 257;
    vocab["ll"] = 258;
    vocab["<|im_end|>"] = 259;
    j["model"]["vocab"] = vocab;
    j["model"]["merges"] = json::array({"Ġ Ġ", "Ġ b", "l l"});
    j["added_tokens"] = json::array({added(259, "<|im_end|>", true)});
    return j;
}

TEST(Tokenizer, SplitRegexAndNfc) {
    auto tok = Tokenizer::load(folder("qwen", split_json()));
    // \s+(?!\S) leaves the last space to " b": "a" "ĠĠ" "Ġb".
    EXPECT_EQ(tok->encode("a   b", true), (ids{'a', 256, 257}));
    // Digits one at a time; " ?[^\s\p{L}\p{N}]+" keeps "!" alone.
    EXPECT_EQ(tok->encode("ab12!", true), (ids{'a', 'b', '1', '2', '!'}));
    // (?i:'S) is a piece of its own; "ll" merges inside "ALL"? no: case matters.
    EXPECT_EQ(tok->encode("IT'S all", true), (ids{'I', 'T', '\'', 'S', 32, 'a', 258}));
    // NFC turns e + U+0301 into é before the bytes are taken.
    EXPECT_EQ(tok->encode("e\xCC\x81", true), (ids{0xC3, 0xA9}));
    EXPECT_EQ(tok->encode("hi<|im_end|>\n", true), (ids{'h', 'i', 259, 10}));
    EXPECT_EQ(tok->decode(ids{'a', 256, 257, 259}, true), "a   b");
}

// ======================= errors =======================

TEST(Tokenizer, LoadErrorsNameTheFile) {
    const std::string empty = temp_dir();
    EXPECT_THAT(error_of([&] { Tokenizer::load(empty); }), HasSubstr("no tokenizer.json or tokenizer.model in " + empty));
    EXPECT_THAT(error_of([&] { Tokenizer::load(empty + "/missing"); }), HasSubstr("not a folder"));

    const std::string bad = temp_dir();
    write_file(bad + "/tokenizer.json", "{\"model\": {\"type\": \"BPE\",,}");
    const std::string msg = error_of([&] { Tokenizer::load(bad); });
    EXPECT_THAT(msg, HasSubstr(bad + "/tokenizer.json: invalid JSON"));
    EXPECT_THAT(msg, HasSubstr("line 1, column 26"));

    auto load_error = [](const std::string& name, const json& j) {
        const std::string dir = folder(name, j);
        const std::string m = error_of([&] { Tokenizer::load(dir); });
        EXPECT_THAT(m, HasSubstr(dir + "/tokenizer.json: ")) << m;
        return m;
    };
    json wp = gpt2_json(false);
    wp["model"]["type"] = "WordPiece";
    EXPECT_THAT(load_error("wordpiece", wp), HasSubstr("unsupported tokenizer model type 'WordPiece'"));
    json no_merges = gpt2_json(false);
    no_merges["model"].erase("merges");
    EXPECT_THAT(load_error("nomerges", no_merges), HasSubstr("key 'model': 'merges' is missing"));
    json no_vocab = gpt2_json(false);
    no_vocab["model"].erase("vocab");
    EXPECT_THAT(load_error("novocab", no_vocab), HasSubstr("key 'model': 'vocab' is missing"));
    json oov = gpt2_json(false);
    oov["model"]["merges"].push_back("x zz");
    EXPECT_THAT(load_error("oov", oov), HasSubstr("key 'model.merges[10]': token \"zz\" is not in the vocabulary"));
    json bad_norm = gpt2_json(false);
    bad_norm["normalizer"] = {{"type", "BertNormalizer"}};
    EXPECT_THAT(load_error("bert", bad_norm), HasSubstr("unsupported tokenizer normalizer type 'BertNormalizer' (key 'normalizer')"));
    json bad_dec = gpt2_json(false);
    bad_dec["decoder"] = {{"type", "Sequence"}, {"decoders", json::array({{{"type", "WordPiece"}}})}};
    EXPECT_THAT(load_error("wpdec", bad_dec), HasSubstr("unsupported tokenizer decoder type 'WordPiece' (key 'decoder.decoders[0]')"));
    json bad_re = split_json();
    bad_re["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"Regex", "(unclosed"}};
    EXPECT_THAT(load_error("regex", bad_re), HasSubstr("key 'pre_tokenizer.pretokenizers[0].pattern': invalid regex"));

    const std::string cfg = folder("badcfg", gpt2_json(false));
    write_file(cfg + "/tokenizer_config.json", "[1, 2");
    EXPECT_THAT(error_of([&] { Tokenizer::load(cfg); }), HasSubstr(cfg + "/tokenizer_config.json: invalid JSON"));

    auto tok = Tokenizer::load(folder("utf8", gpt2_json(false)));
    EXPECT_THAT(error_of([&] { tok->encode("bad \xC3(", true); }), HasSubstr("not valid UTF-8"));
}

TEST(Tokenizer, CorruptSentencePieceModel) {
    const std::string dir = temp_dir();
    write_file(dir + "/tokenizer.model", "this is not a protobuf");
    const std::string msg = error_of([&] { Tokenizer::load(dir); });
    EXPECT_THAT(msg, HasSubstr(dir + "/tokenizer.model: cannot load the SentencePiece model"));
}

// ======================= SentencePiece =======================

// A LLaMA-like SentencePiece model (BPE, byte fallback, split digits,
// identity normalization, whitespace kept), trained once per run.
const std::string& spm_model() {
    static const std::string path = [] {
        const std::string dir = temp_dir();
        std::string corpus;
        const char* words[] = {"the", "a", "cat", "dog", "sat", "on", "mat", "image", "picture", "of", "with", "and",
                               "red", "blue", "small", "large", "man", "woman", "tree", "house", "is", "are", "photo",
                               "shows", "what", "this", "Hello", "world", "USER", "ASSISTANT"};
        const char* extra[] = {"caf\xC3\xA9", "na\xC3\xAFve", "\xC3\xBC" "ber", "Stra\xC3\x9F" "e", "\xE6\x97\xA5\xE6\x9C\xAC"};
        uint32_t s = 12345;
        auto next = [&] { return s = s * 1103515245u + 12345u, (s >> 16) & 0x7FFF; };
        for (int line = 0; line < 600; ++line) {
            const int n = 3 + int(next() % 10);
            for (int w = 0; w < n; ++w) corpus += std::string(w ? " " : "") + words[next() % 30];
            if (line % 5 == 0) corpus += std::string(" ") + extra[next() % 5];
            if (line % 7 == 0) (corpus += ' ') += std::to_string(next() % 100000);
            corpus += line % 3 == 0 ? ".\n" : "\n";
        }
        write_file(dir + "/corpus.txt", corpus);
        const auto status = sentencepiece::SentencePieceTrainer::Train(
            "--input=" + dir + "/corpus.txt --model_prefix=" + dir +
            "/m --model_type=bpe --vocab_size=500 --byte_fallback=true --split_digits=true"
            " --allow_whitespace_only_pieces=true --remove_extra_whitespaces=false --normalization_rule_name=identity"
            " --character_coverage=1.0 --num_threads=1 --minloglevel=2");
        if (!status.ok()) throw std::runtime_error("spm training failed: " + status.ToString());
        return dir + "/m.model";
    }();
    return path;
}

json image_token(bool lstrip = false, bool rstrip = false) {
    return {{"content", "<image>"}, {"lstrip", lstrip}, {"normalized", false}, {"rstrip", rstrip}, {"single_word", false}, {"special", true}};
}

std::string spm_folder(const std::string& name, bool legacy, json extra = json::object()) {
    const std::string dir = temp_dir() + "/" + name;
    fs::create_directories(dir);
    fs::copy_file(spm_model(), dir + "/tokenizer.model");
    json cfg = {{"tokenizer_class", "LlamaTokenizer"}, {"add_bos_token", true}, {"add_eos_token", false},
                {"legacy", legacy}, {"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"},
                {"added_tokens_decoder",
                 {{"0", {{"content", "<unk>"}, {"lstrip", false}, {"normalized", false}, {"rstrip", false}, {"single_word", false}, {"special", true}}},
                  {"1", {{"content", "<s>"}, {"lstrip", false}, {"normalized", false}, {"rstrip", false}, {"single_word", false}, {"special", true}}},
                  {"2", {{"content", "</s>"}, {"lstrip", false}, {"normalized", false}, {"rstrip", false}, {"single_word", false}, {"special", true}}},
                  {"500", image_token()}}}};
    cfg.update(extra);
    write_file(dir + "/tokenizer_config.json", cfg.dump(2));
    return dir;
}

// python3-sentencepiece's ids for each text: with the model as trained
// ("legacy") and with add_dummy_prefix off ("no_dummy", as transformers
// loads it for legacy=false).
struct SpReference {
    std::vector<ids> legacy, no_dummy;
    size_t unk_length = 0;
    bool dummy_off_drops_prefix = false;
};

SpReference sp_reference(const std::vector<std::string>& texts) {
    const std::string dir = temp_dir();
    write_file(dir + "/texts.json", json(texts).dump());
    write_file(dir + "/ref.py", R"PY(
import json, sys
import sentencepiece as spm
model, texts = sys.argv[1], json.load(open(sys.argv[2], encoding="utf-8"))
sp = spm.SentencePieceProcessor(model_file=model)
# NormalizerSpec{add_dummy_prefix: false} merged into the ModelProto (field 3).
nd = spm.SentencePieceProcessor(model_proto=open(model, "rb").read() + b"\x1a\x02\x18\x00")
print(json.dumps({
    "legacy": [sp.encode(t) for t in texts],
    "no_dummy": [nd.encode(t) for t in texts],
    "unk_length": len(nd.encode("<unk>")),
    "dummy_off_drops_prefix": sp.encode("Hey", out_type=str)[0].startswith("\u2581")
                              and not nd.encode("Hey", out_type=str)[0].startswith("\u2581"),
}))
)PY");
    const auto r = test::run_command(test::reference_python() + " " + dir + "/ref.py " + spm_model() + " " + dir + "/texts.json");
    if (r.exit_code != 0) throw std::runtime_error("reference python failed: " + r.err);
    const json j = json::parse(r.out);
    SpReference ref;
    ref.legacy = j["legacy"].get<std::vector<ids>>();
    ref.no_dummy = j["no_dummy"].get<std::vector<ids>>();
    ref.unk_length = j["unk_length"].get<size_t>();
    ref.dummy_off_drops_prefix = j["dummy_off_drops_prefix"].get<bool>();
    return ref;
}

#define REQUIRE_SENTENCEPIECE_PYTHON()                                                                         \
    do {                                                                                                       \
        TESSERA_REQUIRE_PYTHON();                                                                              \
        if (test::run_command(test::reference_python() + " -c 'import sentencepiece'").exit_code != 0)         \
            GTEST_SKIP() << "python3-sentencepiece not installed (run scripts/setup.sh)";                      \
    } while (0)

TEST(Tokenizer, SentencePiecePlainTextMatchesTheLibrary) {
    REQUIRE_SENTENCEPIECE_PYTHON();
    const std::vector<std::string> texts = {
        "Hello world", "  leading spaces", "trailing spaces  ", "multiple   spaces inside", "line one\nline two",
        "tab\tseparated", "caf\xC3\xA9 na\xC3\xAFve \xC3\xBC" "ber", "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E", "emoji \xF0\x9F\x99\x82 here",
        "digits 12345 and 3.14", " ", "\n", "USER: what is this? ASSISTANT:", "mixed \xC3\x9C" "ber 42 \xF0\x9F\x99\x82\t\n end"};
    const SpReference ref = sp_reference(texts);
    ASSERT_TRUE(ref.dummy_off_drops_prefix);
    auto legacy = Tokenizer::load(spm_folder("legacy", true));
    auto modern = Tokenizer::load(spm_folder("modern", false));
    EXPECT_EQ(legacy->kind(), "sentencepiece");
    EXPECT_EQ(legacy->vocab_size(), 501);
    EXPECT_EQ(legacy->bos_id(), 1);
    EXPECT_EQ(legacy->eos_id(), 2);
    EXPECT_EQ(legacy->token_id("<image>"), 500);
    for (size_t i = 0; i < texts.size(); ++i) {
        SCOPED_TRACE("text: \"" + texts[i] + "\"");
        EXPECT_EQ(legacy->encode(texts[i], true), cat({{1}, ref.legacy[i]}));
        EXPECT_EQ(legacy->encode(texts[i], false), ref.legacy[i]);
        // legacy=false prepends "▁" itself and encodes without the dummy
        // prefix: the same ids for text without added tokens.
        EXPECT_EQ(modern->encode(texts[i], true), cat({{1}, ref.legacy[i]}));
        if (!std::isspace(uint8_t(texts[i][0]))) {  // LlamaTokenizer drops a leading space
            EXPECT_EQ(legacy->decode(legacy->encode(texts[i], true), true), texts[i]);
        }
    }
    EXPECT_EQ(legacy->encode("", true), ids{1});
    EXPECT_EQ(modern->encode("", true), ids{1});
}

TEST(Tokenizer, SentencePieceAddedTokensFollowLlamaTokenizer) {
    REQUIRE_SENTENCEPIECE_PYTHON();
    // The pieces transformers hands to SentencePiece for each case.
    const std::vector<std::string> texts = {"Hello ",     " world",     "<unk>" + kSp + "Hello ", "<unk> world",
                                            "hi",         "\nWhat is this?", "<unk>" + kSp,       "a",
                                            "b",          "<unk>" + kSp + "a"};
    const SpReference r = sp_reference(texts);
    auto no_dummy = [&](size_t i) { return ids(r.no_dummy[i].begin() + std::ptrdiff_t(r.unk_length), r.no_dummy[i].end()); };
    const int32_t img = 500;

    auto legacy = Tokenizer::load(spm_folder("legacy", true));
    // Each piece is encoded on its own, with SentencePiece's dummy prefix.
    EXPECT_EQ(legacy->encode("Hello <image> world", true), cat({{1}, r.legacy[0], {img}, r.legacy[1]}));
    EXPECT_EQ(legacy->encode("<image>hi", true), cat({{1, img}, r.legacy[4]}));
    EXPECT_EQ(legacy->encode("<s>hi</s>", false), cat({{1}, r.legacy[4], {2}}));

    auto modern = Tokenizer::load(spm_folder("modern", false));
    // "▁Hello " and " world" start with a space: "<unk>" + piece, minus <unk>'s pieces.
    EXPECT_EQ(modern->encode("Hello <image> world", true), cat({{1}, no_dummy(2), {img}, no_dummy(3)}));
    // "hi" after a token: no dummy prefix at all.
    EXPECT_EQ(modern->encode("<image>hi", true), cat({{1}, no_dummy(6), {img}, r.no_dummy[4]}));
    EXPECT_EQ(modern->encode("<image>\nWhat is this?", true), cat({{1}, no_dummy(6), {img}, r.no_dummy[5]}));
    // A lone "▁" before a special token (here </s>) is dropped.
    EXPECT_EQ(modern->encode("</s>hi", true), cat({{1, 2}, r.no_dummy[4]}));

    // lstrip/rstrip remove the whitespace next to the token.
    auto strip = Tokenizer::load(spm_folder("strip", true, {{"added_tokens_decoder", {{"500", image_token(true, true)}}}}));
    EXPECT_EQ(strip->encode("a  <image>  b", true), cat({{1}, r.legacy[7], {img}, r.legacy[8]}));

    // added_tokens.json (transformers 4 slow tokenizers) also adds tokens.
    const std::string dir = spm_folder("addedjson", true, {{"added_tokens_decoder", json::object()}});
    write_file(dir + "/added_tokens.json", R"({"<image>": 500, "<pad>": 501})");
    auto extra = Tokenizer::load(dir);
    EXPECT_EQ(extra->encode("a<pad>", false), cat({r.legacy[7], {501}}));
    EXPECT_EQ(extra->vocab_size(), 502);

    auto eos = Tokenizer::load(spm_folder("eos", true, {{"add_eos_token", true}}));
    EXPECT_EQ(eos->encode("a", true), cat({{1}, r.legacy[7], {2}}));
}

TEST(Tokenizer, SentencePieceDecodeFollowsLlamaTokenizer) {
    auto legacy = Tokenizer::load(spm_folder("legacy", true));
    auto modern = Tokenizer::load(spm_folder("modern", false));
    for (const auto* tok : {legacy.get(), modern.get()}) {
        const ids hello = tok->encode("Hello world", true);
        EXPECT_EQ(tok->decode(hello, true), "Hello world");
        const ids emoji = tok->encode("see \xF0\x9F\x99\x82!", false);
        EXPECT_EQ(tok->decode(emoji, false), "see \xF0\x9F\x99\x82!");
        std::string streamed;
        TokenStream stream(*tok, true);
        for (int32_t id : emoji) streamed += stream.push(id);
        EXPECT_EQ(streamed + stream.finish(), "see \xF0\x9F\x99\x82!");
    }
    // Special tokens stay unless skipped; LlamaTokenizer puts no space after <s>
    // for the legacy model, SentencePiece keeps the piece's "▁" otherwise.
    EXPECT_EQ(legacy->decode(legacy->encode("Hello world", true), false), "<s>Hello world");
    EXPECT_EQ(modern->decode(modern->encode("Hello world", true), false), "<s> Hello world");
    // A non-special added token is its own sub-text, joined with spaces.
    EXPECT_EQ(legacy->decode(legacy->encode("Hello<image>world", false), false), "Hello <image> world");
}

TEST(Tokenizer, Transformers5ConvertsBareSentencePieceModels) {
    TokenizerOptions v5;
    v5.transformers5 = true;
    // LLaVA folders get the generic TokenizersBackend: spaces become "▁",
    // nothing is prepended, and the decoder keeps a leading space.
    std::string dir = spm_folder("v5llava", false);
    write_file(dir + "/config.json", R"({"model_type": "llava"})");
    auto tok = Tokenizer::load(dir, v5);
    EXPECT_EQ(tok->kind(), "sentencepiece-converted");
    EXPECT_EQ(tok->vocab_size(), 501);
    const ids hello = tok->encode("Hello world", true);
    ASSERT_GE(hello.size(), 3u);
    EXPECT_EQ(hello[0], 1);
    EXPECT_NE(tok->decode(ids{hello[1]}, true)[0], ' ');  // no "▁" on the first piece
    EXPECT_EQ(tok->decode(hello, true), "Hello world");
    EXPECT_EQ(tok->decode(tok->encode(" lead \xF0\x9F\x99\x82", true), true), " lead \xF0\x9F\x99\x82");
    EXPECT_EQ(tok->encode("a<image>", false).back(), 500);
    // A trusted LlamaTokenizer class: Metaspace "first", like the slow
    // legacy=false tokenizer on plain text; its decoder strips one space.
    write_file(dir + "/config.json", R"({"model_type": "llama"})");
    tok = Tokenizer::load(dir, v5);
    auto slow = Tokenizer::load(dir);
    EXPECT_EQ(tok->encode("Hello world, what is this?", true), slow->encode("Hello world, what is this?", true));
    EXPECT_EQ(tok->decode(tok->encode(" lead", true), true), "lead");

    // Unigram models and SentencePiece normalization rules are not converted.
    for (const char* flags : {"--model_type=unigram", "--model_type=bpe --normalization_rule_name=nmt_nfkc"}) {
        const std::string other = temp_dir();
        write_file(other + "/corpus.txt", "a small corpus\nwith a few words\nand lines of text\n");
        const auto status = sentencepiece::SentencePieceTrainer::Train(
            "--input=" + other + "/corpus.txt --model_prefix=" + other + "/tokenizer --vocab_size=40 " + flags +
            " --hard_vocab_limit=false --minloglevel=2");
        ASSERT_TRUE(status.ok()) << status.ToString();
        const std::string msg = error_of([&] { Tokenizer::load(other, v5); });
        EXPECT_THAT(msg, HasSubstr(other + "/tokenizer.model: transformers 5"));
        EXPECT_THAT(msg, HasSubstr("not supported"));
    }
}

// ======================= reference ids from transformers =======================

// The fixture models' reference/reference.json (tools/make_llava_fixtures.py)
// records, per tricky string, what real transformers' AutoTokenizer gives:
// ids with and without special tokens and decode(ids, skip_special_tokens=
// True). The recorded version ("config_as_loaded.transformers_version")
// selects the mode; for transformers 5 that covers its conversion of a bare
// tokenizer.model (tiny-llava-mha) as well as tokenizer.json (tiny-llava-gqa).
TEST(Tokenizer, MatchesTransformersReferenceIds) {
    const fs::path root = test::source_path("tests/fixtures/llava");
    std::vector<fs::path> files;
    if (fs::is_directory(root))
        for (const auto& entry : fs::directory_iterator(root))
            if (fs::is_regular_file(entry.path() / "reference" / "reference.json"))
                files.push_back(entry.path() / "reference" / "reference.json");
    if (files.empty()) GTEST_SKIP() << "no transformers references (tests/fixtures/llava/*/reference/reference.json)";
    int checked = 0;
    for (const fs::path& file : files) {
        SCOPED_TRACE(file.string());
        const json ref = json::parse(test::read_file(file.string()));
        if (!ref.contains("tokenizer_cases")) continue;
        const std::string version = ref.at("config_as_loaded").at("transformers_version").get<std::string>();
        TokenizerOptions options;
        options.transformers5 = version.rfind("5.", 0) == 0;
        auto tok = Tokenizer::load(file.parent_path().parent_path().string(), options);
        for (const json& c : ref["tokenizer_cases"]) {
            const std::string text = c.at("text").get<std::string>();
            SCOPED_TRACE("transformers " + version + ", text " + c.at("text").dump());
            const ids expected = c.at("ids").get<ids>();
            EXPECT_EQ(tok->encode(text, true), expected);
            if (c.contains("ids_no_special")) {
                EXPECT_EQ(tok->encode(text, false), c["ids_no_special"].get<ids>());
            }
            if (c.contains("decoded")) {
                EXPECT_EQ(tok->decode(expected, true), c["decoded"].get<std::string>());
            }
            ++checked;
        }
    }
    EXPECT_GT(checked, 0);
}

}  // namespace
}  // namespace tessera
