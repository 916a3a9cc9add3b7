// Shared by the two tokenizer implementations (tokenizer_json.cpp,
// tokenizer_sentencepiece.cpp): the transformers-side configuration of a model
// folder, added-token matching and UTF-8 / Unicode helpers. Not a public header.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "io/tokenizer.h"

namespace tessera::tok {

// An AddedToken as transformers and `tokenizers` store it.
struct AddedToken {
    std::string content;
    int32_t id = -1;  // -1: not assigned yet
    bool special = false;
    bool lstrip = false, rstrip = false, single_word = false;
    bool normalized = true;
};

// tokenizer_config.json + special_tokens_map.json + added_tokens.json. Absent
// files read as empty; present ones must be valid JSON objects.
struct HfConfig {
    std::string dir;
    std::string config_path;  // DIR/tokenizer_config.json (for messages)
    std::string tokenizer_class;
    std::string model_type;  // DIR/config.json "model_type", "" when absent
    std::optional<bool> add_bos_token, add_eos_token, legacy, add_prefix_space;
    bool clean_up_tokenization_spaces = false;
    // Named special tokens; nullopt when unset (or null).
    std::optional<AddedToken> bos, eos, unk, pad;
    std::vector<AddedToken> additional_special;  // additional_/extra_special_tokens
    std::vector<AddedToken> added_tokens;        // added_tokens_decoder, then added_tokens.json (ids set)

    // LlamaTokenizer(Fast) / CodeLlama: add_bos_token defaults to true and the
    // post-processor is rebuilt from add_bos_token/add_eos_token.
    bool llama_class() const;
    // The class transformers 5's AutoTokenizer builds is a LlamaTokenizer: a
    // Llama class in tokenizer_config.json that transformers 5 trusts (it
    // ignores the class of some model types, LLaVA's among them, and builds
    // the generic TokenizersBackend instead).
    bool transformers5_llama_class() const;
    // bos, eos, unk, pad (those set) then additional_special: HF all_special_tokens.
    std::vector<AddedToken> special_tokens() const;
};
HfConfig hf_config_read(const std::string& dir);

// A piece of the input: either plain text or an added token (id >= 0).
struct Segment {
    std::string text;
    int32_t id = -1;
    size_t begin = 0;  // byte offset in the text that was split
};

// One matcher over a set of added tokens: leftmost-longest matches, like the
// aho-corasick automaton (LeftmostLongest) of `tokenizers` and transformers'
// slow-tokenizer Trie.
class AddedTokenMatcher {
public:
    void add(const AddedToken& token);
    bool empty() const { return tokens_.empty(); }
    // Longest token starting at text[pos], or nullptr.
    const AddedToken* match_at(std::string_view text, size_t pos) const;

private:
    std::vector<AddedToken> tokens_;
    std::vector<std::vector<size_t>> by_first_byte_ = std::vector<std::vector<size_t>>(256);
};

// `tokenizers` AddedVocabulary::find_matches: splits text on the tokens,
// honouring single_word, lstrip and rstrip (whitespace joins the token).
std::vector<Segment> split_added_tokens_hf(std::string_view text, const AddedTokenMatcher& matcher);

// ---- UTF-8 / Unicode (ICU where Unicode data is needed) ----
// Decodes the code point at s[i], advancing i; invalid bytes read as U+FFFD.
char32_t utf8_next(std::string_view s, size_t& i);
void utf8_append(std::string& out, char32_t c);
bool utf8_valid(std::string_view s);
// Keeps only complete characters: invalid sequences become U+FFFD, one per
// maximal invalid subpart (Rust String::from_utf8_lossy).
std::string utf8_lossy(std::string_view bytes);
bool is_white_space(char32_t c);    // Unicode White_Space (Rust char::is_whitespace, regex \s)
bool is_word_char(char32_t c);      // regex \w (Alphabetic, M, Nd, Pc, Join_Control)
bool is_numeric(char32_t c);        // Rust char::is_numeric: Nd, Nl, No
bool is_python_space(char32_t c);   // Python str.isspace
std::string replace_all(std::string_view s, std::string_view from, std::string_view to);

// The implementations: tokenizer.json (`doc`, read from `path`), and
// tokenizer.model as transformers 4's slow LlamaTokenizer runs it.
std::unique_ptr<Tokenizer> tokenizer_json_make(const nlohmann::json& doc, const std::string& path,
                                               const HfConfig& config, const TokenizerOptions& options,
                                               const std::string& kind);
std::unique_ptr<Tokenizer> tokenizer_sentencepiece_load(const std::string& path, const HfConfig& config);
// tokenizer.model as transformers 5 converts it: the tokenizer.json document
// it builds (BPE with merges ranked by piece id, "▁" for spaces).
nlohmann::json sentencepiece_to_tokenizer_json(const std::string& path, const HfConfig& config);

// Key lookup that treats null as absent.
const nlohmann::json* json_member(const nlohmann::json& obj, const char* key);

}  // namespace tessera::tok
