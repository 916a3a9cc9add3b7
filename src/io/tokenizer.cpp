#include "io/tokenizer.h"

#include <unicode/uchar.h>

#include <algorithm>
#include <filesystem>

#include "io/timm_config.h"
#include "io/tokenizer_internal.h"
#include "tessera/error.h"

namespace tessera {

namespace fs = std::filesystem;
using nlohmann::json;

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string& model_dir, const TokenizerOptions& options) {
    if (!fs::is_directory(model_dir)) fail(model_dir, "not a folder (expected a model folder with a tokenizer)");
    const std::string json_path = (fs::path(model_dir) / "tokenizer.json").string();
    const std::string spm_path = (fs::path(model_dir) / "tokenizer.model").string();
    const bool has_json = fs::is_regular_file(json_path), has_spm = fs::is_regular_file(spm_path);
    if (!has_json && !has_spm) fail(model_dir, "no tokenizer.json or tokenizer.model in " + model_dir);
    tok::HfConfig config = tok::hf_config_read(model_dir);
    // AutoTokenizer's default is the fast tokenizer, which tokenizer.json describes.
    if (has_json) return tok::tokenizer_json_make(json_read_file(json_path), json_path, config, options, "tokenizer.json");
    if (options.transformers5)
        return tok::tokenizer_json_make(tok::sentencepiece_to_tokenizer_json(spm_path, config), spm_path, config, options,
                                        "sentencepiece-converted");
    return tok::tokenizer_sentencepiece_load(spm_path, config);
}

// ---- TokenStream: the DecodeStream scheme of `tokenizers` ----
// Decoding ids one at a time loses context (a decoder strips the first
// token's leading space; a character may span byte tokens), so the stream
// decodes a window of recent ids and prints what the window's text gained.

TokenStream::TokenStream(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_(skip_special_tokens) {}

namespace {
bool ends_incomplete(const std::string& s) {
    static const std::string replacement = "\xEF\xBF\xBD";  // U+FFFD
    return s.size() >= 3 && s.compare(s.size() - 3, 3, replacement) == 0;
}
}  // namespace

std::string TokenStream::push(int32_t id) {
    window_.push_back(id);
    std::string text = tokenizer_.decode(window_, skip_special_);
    if (text.size() <= printed_text_.size() || ends_incomplete(text)) return "";
    std::string added = text.substr(printed_text_.size());
    // Keep the ids printed by this call as context for the next ones.
    window_.erase(window_.begin(), window_.begin() + std::ptrdiff_t(printed_ids_));
    printed_ids_ = window_.size();
    printed_text_ = tokenizer_.decode(window_, skip_special_);
    return added;
}

std::string TokenStream::finish() {
    std::string text = tokenizer_.decode(window_, skip_special_);
    std::string rest = text.size() > printed_text_.size() ? text.substr(printed_text_.size()) : "";
    window_.clear();
    printed_ids_ = 0;
    printed_text_.clear();
    return rest;
}

namespace tok {

const json* json_member(const json& obj, const char* key) {
    if (!obj.is_object()) return nullptr;
    auto it = obj.find(key);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
}

// ---- transformers-side configuration ----

namespace {

json read_object_file(const std::string& path) {
    if (!fs::is_regular_file(path)) return json::object();
    json j = json_read_file(path);
    if (!j.is_object()) fail(path, "expected a JSON object at the top level");
    return j;
}

// A token written as "text" or as {"content": "text", "lstrip": .., ...}.
// Named special tokens default to special and not normalized, as transformers
// builds them (AddedToken(..., special=True) has normalized = not special).
AddedToken token_from_json(const json& v, bool special, const std::string& where, const std::string& key) {
    AddedToken t;
    t.special = special;
    t.normalized = !special;
    if (v.is_string()) {
        t.content = v.get<std::string>();
        return t;
    }
    if (!v.is_object() || !json_member(v, "content") || !v["content"].is_string())
        fail(where, "key '" + key + "': expected a string or an object with 'content', got " + v.dump());
    t.content = v["content"].get<std::string>();
    t.special = json_bool(v, "special", special, where + ": key '" + key + "'");
    t.normalized = json_bool(v, "normalized", !t.special, where + ": key '" + key + "'");
    t.lstrip = json_bool(v, "lstrip", false, where + ": key '" + key + "'");
    t.rstrip = json_bool(v, "rstrip", false, where + ": key '" + key + "'");
    t.single_word = json_bool(v, "single_word", false, where + ": key '" + key + "'");
    return t;
}

std::optional<bool> optional_bool(const json& j, const char* key, const std::string& where) {
    if (!json_member(j, key)) return std::nullopt;
    return json_bool(j, key, false, where);
}

void read_special_list(const json& v, const std::string& where, const std::string& key, std::vector<AddedToken>& out) {
    out.clear();
    if (v.is_array()) {
        for (const json& t : v) out.push_back(token_from_json(t, true, where, key));
    } else if (v.is_object()) {  // transformers 5 "extra_special_tokens": {name: token}
        for (const auto& [name, t] : v.items()) out.push_back(token_from_json(t, true, where, key + "." + name));
    } else {
        fail(where, "key '" + key + "': expected a list of tokens, got " + v.dump());
    }
}

// Named special tokens and the extra list from one file; later files override.
void read_special_tokens(const json& j, const std::string& where, HfConfig& c) {
    struct Named {
        const char* key;
        std::optional<AddedToken>* slot;
    };
    for (Named n : {Named{"bos_token", &c.bos}, Named{"eos_token", &c.eos}, Named{"unk_token", &c.unk},
                    Named{"pad_token", &c.pad}}) {
        if (!j.contains(n.key)) continue;
        const json& v = j[n.key];
        if (v.is_null())
            n.slot->reset();
        else
            *n.slot = token_from_json(v, true, where, n.key);
    }
    for (const char* key : {"additional_special_tokens", "extra_special_tokens"})
        if (const json* v = json_member(j, key)) read_special_list(*v, where, key, c.additional_special);
}

}  // namespace

bool HfConfig::llama_class() const {
    const std::string& c = tokenizer_class;
    return c == "LlamaTokenizer" || c == "LlamaTokenizerFast" || c == "CodeLlamaTokenizer" ||
           c == "CodeLlamaTokenizerFast";
}

bool HfConfig::transformers5_llama_class() const {
    // From MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS (tokenization_auto.py),
    // the vision-language families built on LLaMA tokenizers.
    static const char* const generic[] = {"llava", "llava_next", "vipllava", "fuyu", "chameleon", "janus"};
    return llama_class() && std::none_of(std::begin(generic), std::end(generic),
                                         [&](const char* t) { return model_type == t; });
}

std::vector<AddedToken> HfConfig::special_tokens() const {
    std::vector<AddedToken> out;
    for (const auto* t : {&bos, &eos, &unk, &pad})
        if (*t) out.push_back(**t);
    out.insert(out.end(), additional_special.begin(), additional_special.end());
    return out;
}

HfConfig hf_config_read(const std::string& dir) {
    HfConfig c;
    c.dir = dir;
    c.config_path = (fs::path(dir) / "tokenizer_config.json").string();
    const json cfg = read_object_file(c.config_path);
    const std::string& where = c.config_path;
    c.tokenizer_class = json_string(cfg, "tokenizer_class", "", where);
    c.add_bos_token = optional_bool(cfg, "add_bos_token", where);
    c.add_eos_token = optional_bool(cfg, "add_eos_token", where);
    c.legacy = optional_bool(cfg, "legacy", where);
    c.add_prefix_space = optional_bool(cfg, "add_prefix_space", where);
    c.clean_up_tokenization_spaces = json_bool(cfg, "clean_up_tokenization_spaces", false, where);
    const std::string model_config = (fs::path(dir) / "config.json").string();
    c.model_type = json_string(read_object_file(model_config), "model_type", "", model_config);

    // LlamaTokenizer's constructor defaults, overridden by the files.
    if (c.llama_class()) {
        c.bos = token_from_json("<s>", true, where, "bos_token");
        c.eos = token_from_json("</s>", true, where, "eos_token");
        c.unk = token_from_json("<unk>", true, where, "unk_token");
    }
    read_special_tokens(cfg, where, c);
    const std::string map_path = (fs::path(dir) / "special_tokens_map.json").string();
    read_special_tokens(read_object_file(map_path), map_path, c);

    if (const json* dec = json_member(cfg, "added_tokens_decoder")) {
        if (!dec->is_object()) fail(where, "key 'added_tokens_decoder': expected an object {id: token}");
        for (const auto& [key, value] : dec->items()) {
            const std::string k = "added_tokens_decoder." + key;
            AddedToken t = token_from_json(value, false, where, k);
            size_t used = 0;
            long long id = -1;
            try {
                id = std::stoll(key, &used);
            } catch (const std::exception&) {
                used = 0;
            }
            if (used != key.size() || id < 0 || id > INT32_MAX) fail(where, "key '" + k + "': the key must be a token id");
            t.id = int32_t(id);
            c.added_tokens.push_back(t);
        }
    }
    // added_tokens.json (slow tokenizers of transformers 4): {"<image>": 32000}.
    const std::string added_path = (fs::path(dir) / "added_tokens.json").string();
    const json added = read_object_file(added_path);
    const std::vector<AddedToken> specials = c.special_tokens();
    for (const auto& item : added.items()) {
        const std::string content = item.key();  // not a structured binding: lambdas below capture it
        const json& id = item.value();
        if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
            fail(added_path, "key '" + content + "': expected a token id, got " + id.dump());
        const bool known = std::any_of(c.added_tokens.begin(), c.added_tokens.end(), [&](const AddedToken& t) {
            return t.content == content || t.id == id.get<int32_t>();
        });
        if (known) continue;
        AddedToken t;
        t.content = content;
        t.id = id.get<int32_t>();
        t.special = std::any_of(specials.begin(), specials.end(), [&](const AddedToken& s) { return s.content == content; });
        t.normalized = !t.special;
        c.added_tokens.push_back(t);
    }
    std::sort(c.added_tokens.begin(), c.added_tokens.end(),
              [](const AddedToken& a, const AddedToken& b) { return a.id < b.id; });
    return c;
}

// ---- added-token matching ----

void AddedTokenMatcher::add(const AddedToken& token) {
    if (token.content.empty()) return;
    tokens_.push_back(token);
    by_first_byte_[uint8_t(token.content[0])].push_back(tokens_.size() - 1);
}

const AddedToken* AddedTokenMatcher::match_at(std::string_view text, size_t pos) const {
    const AddedToken* best = nullptr;
    for (size_t i : by_first_byte_[uint8_t(text[pos])]) {
        const std::string& c = tokens_[i].content;
        if (best && c.size() <= best->content.size()) continue;
        if (text.size() - pos >= c.size() && text.compare(pos, c.size(), c) == 0) best = &tokens_[i];
    }
    return best;
}

namespace {
// Last code point of s[0..end) (s valid UTF-8, end on a boundary).
char32_t last_char(std::string_view s, size_t end) {
    size_t i = end;
    do --i;
    while (i > 0 && (uint8_t(s[i]) & 0xC0) == 0x80);
    return utf8_next(s, i);
}
}  // namespace

std::vector<Segment> split_added_tokens_hf(std::string_view text, const AddedTokenMatcher& matcher) {
    std::vector<Segment> out;
    size_t done = 0, pos = 0;
    while (pos < text.size()) {
        const AddedToken* t = matcher.empty() ? nullptr : matcher.match_at(text, pos);
        if (!t) {
            ++pos;
            continue;
        }
        size_t start = pos, stop = pos + t->content.size();
        pos = stop;
        if (t->single_word) {
            size_t i = stop;
            const bool space_before = start == 0 || !is_word_char(last_char(text, start));
            const bool space_after = stop == text.size() || !is_word_char(utf8_next(text, i));
            if (!space_before || !space_after) continue;
        }
        if (t->lstrip) {  // absorb the whitespace before, not what an earlier token took
            size_t s = start;
            while (s > done) {
                size_t prev = s;
                do --prev;
                while (prev > 0 && (uint8_t(text[prev]) & 0xC0) == 0x80);
                size_t i = prev;
                if (!is_white_space(utf8_next(text, i))) break;
                s = prev;
            }
            start = s;
        }
        if (t->rstrip) {
            while (stop < text.size()) {
                size_t i = stop;
                if (!is_white_space(utf8_next(text, i))) break;
                stop = i;
            }
            pos = stop;
        }
        if (done < start) out.push_back({std::string(text.substr(done, start - done)), -1, done});
        out.push_back({std::string(text.substr(start, stop - start)), t->id, start});
        done = stop;
    }
    if (done < text.size()) out.push_back({std::string(text.substr(done)), -1, done});
    return out;
}

// ---- UTF-8 ----

char32_t utf8_next(std::string_view s, size_t& i) {
    const uint8_t b0 = uint8_t(s[i]);
    int len = b0 < 0x80 ? 1 : (b0 >> 5) == 0x6 ? 2 : (b0 >> 4) == 0xE ? 3 : (b0 >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || i + size_t(len) > s.size()) {
        ++i;
        return 0xFFFD;
    }
    char32_t c = len == 1 ? b0 : len == 2 ? (b0 & 0x1F) : len == 3 ? (b0 & 0x0F) : (b0 & 0x07);
    for (int k = 1; k < len; ++k) {
        const uint8_t b = uint8_t(s[i + size_t(k)]);
        if ((b & 0xC0) != 0x80) {
            ++i;
            return 0xFFFD;
        }
        c = (c << 6) | (b & 0x3F);
    }
    i += size_t(len);
    return c;
}

void utf8_append(std::string& out, char32_t c) {
    if (c < 0x80) {
        out += char(c);
    } else if (c < 0x800) {
        out += char(0xC0 | (c >> 6));
        out += char(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
        out += char(0xE0 | (c >> 12));
        out += char(0x80 | ((c >> 6) & 0x3F));
        out += char(0x80 | (c & 0x3F));
    } else {
        out += char(0xF0 | (c >> 18));
        out += char(0x80 | ((c >> 12) & 0x3F));
        out += char(0x80 | ((c >> 6) & 0x3F));
        out += char(0x80 | (c & 0x3F));
    }
}

namespace {
// Length of the well-formed sequence at s[i] (Unicode table 3-7), or, when
// ill-formed, minus the length of its maximal subpart (at least 1).
int utf8_sequence(std::string_view s, size_t i) {
    const uint8_t b0 = uint8_t(s[i]);
    if (b0 < 0x80) return 1;
    int len;
    uint8_t lo = 0x80, hi = 0xBF;  // range of the second byte
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        len = 2;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        len = 3;
        if (b0 == 0xE0) lo = 0xA0;
        if (b0 == 0xED) hi = 0x9F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        len = 4;
        if (b0 == 0xF0) lo = 0x90;
        if (b0 == 0xF4) hi = 0x8F;
    } else {
        return -1;
    }
    for (int k = 1; k < len; ++k) {
        if (i + size_t(k) >= s.size()) return -k;
        const uint8_t b = uint8_t(s[i + size_t(k)]);
        if (k == 1 ? (b < lo || b > hi) : (b & 0xC0) != 0x80) return -k;
    }
    return len;
}
}  // namespace

bool utf8_valid(std::string_view s) {
    for (size_t i = 0; i < s.size();) {
        const int n = utf8_sequence(s, i);
        if (n < 0) return false;
        i += size_t(n);
    }
    return true;
}

std::string utf8_lossy(std::string_view bytes) {
    std::string out;
    out.reserve(bytes.size());
    for (size_t i = 0; i < bytes.size();) {
        const int n = utf8_sequence(bytes, i);
        if (n > 0) {
            out.append(bytes.substr(i, size_t(n)));
            i += size_t(n);
        } else {
            out += "\xEF\xBF\xBD";
            i += size_t(-n);
        }
    }
    return out;
}

// ---- Unicode properties (ICU) ----

bool is_white_space(char32_t c) { return u_hasBinaryProperty(UChar32(c), UCHAR_WHITE_SPACE); }

bool is_word_char(char32_t c) {
    const UChar32 u = UChar32(c);
    if (u_hasBinaryProperty(u, UCHAR_ALPHABETIC) || u_hasBinaryProperty(u, UCHAR_JOIN_CONTROL)) return true;
    switch (u_charType(u)) {
        case U_NON_SPACING_MARK:
        case U_ENCLOSING_MARK:
        case U_COMBINING_SPACING_MARK:
        case U_DECIMAL_DIGIT_NUMBER:
        case U_CONNECTOR_PUNCTUATION:
            return true;
        default:
            return false;
    }
}

bool is_numeric(char32_t c) {
    const int8_t t = u_charType(UChar32(c));
    return t == U_DECIMAL_DIGIT_NUMBER || t == U_LETTER_NUMBER || t == U_OTHER_NUMBER;
}

bool is_python_space(char32_t c) {
    const UChar32 u = UChar32(c);
    if (u_charType(u) == U_SPACE_SEPARATOR) return true;
    const UCharDirection d = u_charDirection(u);
    return d == U_WHITE_SPACE_NEUTRAL || d == U_BLOCK_SEPARATOR || d == U_SEGMENT_SEPARATOR;
}

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
    std::string out;
    if (from.empty()) return std::string(s);
    size_t i = 0;
    for (size_t j; (j = s.find(from, i)) != std::string_view::npos; i = j + from.size()) {
        out.append(s.substr(i, j - i));
        out.append(to);
    }
    out.append(s.substr(i));
    return out;
}

}  // namespace tok
}  // namespace tessera
