// tokenizer.json: the Hugging Face `tokenizers` pipeline, step for step as
// tokenizers/src/tokenizer/mod.rs runs it for one sequence:
//   1. added tokens that are not `normalized` are cut out of the raw text;
//   2. each remaining piece is normalized, then normalized added tokens are
//      cut out of it;
//   3. the pre-tokenizer splits (and rewrites) the pieces;
//   4. the model (BPE) turns each piece into ids;
//   5. the post-processor adds special tokens (BOS...).
// Decoding maps ids to token strings, drops special ones on request, and runs
// the decoder chain. Regexes (Split, Replace, ByteLevel) run in PCRE2 with
// UTF and UCP, which reads the Oniguruma patterns HF writes (\p{L}, (?i:..),
// lookahead) the same way. Unicode normalization and properties use ICU.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <functional>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "io/timm_config.h"
#include "io/tokenizer_internal.h"
#include "tessera/error.h"

namespace tessera::tok {
namespace {

using nlohmann::json;

// Where a component sits in the file, for messages: "FILE: key 'K': ...".
struct Where {
    const std::string& file;
    std::string key;
    Where at(const std::string& sub) const { return {file, key + "." + sub}; }
    Where at(size_t i) const { return {file, key + "[" + std::to_string(i) + "]"}; }
    [[noreturn]] void error(const std::string& message) const { fail(file, "key '" + key + "': " + message); }
};

const json& need(const json& obj, const char* key, const Where& w) {
    const json* v = json_member(obj, key);
    if (!v) w.error(std::string("'") + key + "' is missing");
    return *v;
}
std::string need_string(const json& obj, const char* key, const Where& w) {
    const json& v = need(obj, key, w);
    if (!v.is_string()) w.at(key).error("expected a string, got " + v.dump());
    return v.get<std::string>();
}
bool opt_bool(const json& obj, const char* key, bool fallback, const Where& w) {
    const json* v = json_member(obj, key);
    if (!v) return fallback;
    if (!v->is_boolean()) w.at(key).error("expected true or false, got " + v->dump());
    return v->get<bool>();
}
char32_t need_char(const json& obj, const char* key, const Where& w) {
    const std::string s = need_string(obj, key, w);
    size_t i = 0;
    const char32_t c = s.empty() ? 0 : utf8_next(s, i);
    if (s.empty() || i != s.size()) w.at(key).error("expected a single character, got \"" + s + "\"");
    return c;
}
std::string type_of(const json& obj, const Where& w) {
    if (!obj.is_object()) w.error("expected an object with a 'type', got " + obj.dump());
    return need_string(obj, "type", w);
}
[[noreturn]] void unsupported(const Where& w, const std::string& component, const std::string& type) {
    fail(w.file, "unsupported tokenizer " + component + " type '" + type + "' (key '" + w.key + "')");
}
std::string char_string(char32_t c) {
    std::string s;
    utf8_append(s, c);
    return s;
}

// ---- regex (PCRE2) and split patterns ----

class Regex {
public:
    Regex(const std::string& pattern, const Where& w) {
        int code = 0;
        PCRE2_SIZE offset = 0;
        re_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP, &code,
                            &offset, nullptr);
        if (!re_) {
            PCRE2_UCHAR message[256];
            pcre2_get_error_message(code, message, sizeof message);
            w.error("invalid regex \"" + pattern + "\" at offset " + std::to_string(offset) + ": " +
                    reinterpret_cast<const char*>(message));
        }
        pcre2_jit_compile(re_, PCRE2_JIT_COMPLETE);  // falls back to the interpreter when JIT is unavailable
    }
    ~Regex() { pcre2_code_free(re_); }
    Regex(const Regex&) = delete;
    Regex& operator=(const Regex&) = delete;

    // Non-overlapping matches, leftmost first. After an empty match the search
    // moves on one character, and an empty match right after a match is skipped.
    std::vector<std::pair<size_t, size_t>> find_all(std::string_view s) const {
        std::vector<std::pair<size_t, size_t>> out;
        pcre2_match_data* md = pcre2_match_data_create_from_pattern(re_, nullptr);
        size_t start = 0, last_end = SIZE_MAX;
        while (start <= s.size()) {
            const int rc = pcre2_match(re_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), start, PCRE2_NO_UTF_CHECK,
                                       md, nullptr);
            if (rc < 0) break;  // PCRE2_ERROR_NOMATCH (or a resource limit: no further splits)
            const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
            const size_t b = ov[0], e = ov[1];
            if (b == e) {
                if (b != last_end) out.emplace_back(b, e);
                if (b >= s.size()) break;
                size_t next = b;
                utf8_next(s, next);
                start = next;
                continue;
            }
            out.emplace_back(b, e);
            start = last_end = e;
        }
        pcre2_match_data_free(md);
        return out;
    }

private:
    pcre2_code* re_ = nullptr;
};

struct Span {
    size_t begin, end;
    bool is_match;
};

// Pattern::find_matches of `tokenizers`: spans covering the whole string.
std::vector<Span> spans_from_matches(std::string_view s, const std::vector<std::pair<size_t, size_t>>& matches) {
    if (s.empty()) return {{0, 0, false}};
    std::vector<Span> out;
    size_t prev = 0;
    for (auto [b, e] : matches) {
        if (prev != b) out.push_back({prev, b, false});
        out.push_back({b, e, true});
        prev = e;
    }
    if (prev != s.size()) out.push_back({prev, s.size(), false});
    return out;
}

// Every character for which `is_delim` holds is a one-character match.
template <class F>
std::vector<Span> spans_of_chars(std::string_view s, F&& is_delim) {
    std::vector<std::pair<size_t, size_t>> matches;
    for (size_t i = 0; i < s.size();) {
        const size_t b = i;
        if (is_delim(utf8_next(s, i))) matches.emplace_back(b, i);
    }
    return spans_from_matches(s, matches);
}

// {"String": "..."} (a literal) or {"Regex": "..."}.
class Pattern {
public:
    Pattern(const json& j, const Where& w) {
        if (const json* s = json_member(j, "String"); s && s->is_string()) {
            literal_ = s->get<std::string>();
        } else if (const json* r = json_member(j, "Regex"); r && r->is_string()) {
            regex_ = std::make_unique<Regex>(r->get<std::string>(), w);
        } else {
            w.error("expected {\"String\": ...} or {\"Regex\": ...}, got " + j.dump());
        }
    }
    std::vector<Span> find(std::string_view s) const {
        if (regex_) return spans_from_matches(s, regex_->find_all(s));
        if (literal_.empty()) return {{0, s.size(), false}};
        std::vector<std::pair<size_t, size_t>> matches;
        for (size_t i = 0; (i = s.find(literal_, i)) != std::string_view::npos; i += literal_.size())
            matches.emplace_back(i, i + literal_.size());
        return spans_from_matches(s, matches);
    }
    std::string replace(std::string_view s, const std::string& content) const {
        std::string out;
        for (const Span& sp : find(s)) out += sp.is_match ? content : std::string(s.substr(sp.begin, sp.end - sp.begin));
        return out;
    }

private:
    std::string literal_;
    std::unique_ptr<Regex> regex_;
};

enum class Behavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

Behavior behavior_from(const std::string& s, const Where& w) {
    if (s == "Removed") return Behavior::removed;
    if (s == "Isolated") return Behavior::isolated;
    if (s == "MergedWithPrevious") return Behavior::merged_with_previous;
    if (s == "MergedWithNext") return Behavior::merged_with_next;
    if (s == "Contiguous") return Behavior::contiguous;
    w.error("unknown split behavior '" + s + "'");
}

// NormalizedString::split: the byte ranges kept, by delimiter behavior.
std::vector<std::pair<size_t, size_t>> split_ranges(const std::vector<Span>& spans, Behavior behavior) {
    std::vector<Span> acc;
    bool prev = false;
    switch (behavior) {
        case Behavior::isolated:
            for (Span s : spans) acc.push_back({s.begin, s.end, false});
            break;
        case Behavior::removed:
            acc = spans;
            break;
        case Behavior::contiguous:
            for (Span s : spans) {
                if (s.is_match == prev && !acc.empty())
                    acc.back().end = s.end;
                else
                    acc.push_back({s.begin, s.end, false});
                prev = s.is_match;
            }
            break;
        case Behavior::merged_with_previous:
            for (Span s : spans) {
                if (s.is_match && !prev && !acc.empty())
                    acc.back().end = s.end;
                else
                    acc.push_back({s.begin, s.end, false});
                prev = s.is_match;
            }
            break;
        case Behavior::merged_with_next:
            for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
                if (it->is_match && !prev && !acc.empty())
                    acc.back().begin = it->begin;
                else
                    acc.push_back({it->begin, it->end, false});
                prev = it->is_match;
            }
            std::reverse(acc.begin(), acc.end());
            break;
    }
    std::vector<std::pair<size_t, size_t>> out;
    for (const Span& s : acc)
        if (!s.is_match) out.emplace_back(s.begin, s.end);
    return out;
}

// ---- GPT-2 byte <-> character table ----

struct ByteTable {
    std::array<std::string, 256> to_char;
    std::unordered_map<char32_t, uint8_t> to_byte;
    ByteTable() {
        int n = 0;
        for (int b = 0; b < 256; ++b) {
            const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            const char32_t c = printable ? char32_t(b) : char32_t(256 + n++);
            to_char[size_t(b)] = char_string(c);
            to_byte[c] = uint8_t(b);
        }
    }
};
const ByteTable& byte_table() {
    static const ByteTable table;
    return table;
}
std::string to_byte_chars(std::string_view s) {
    std::string out;
    for (char b : s) out += byte_table().to_char[uint8_t(b)];
    return out;
}

// ---- normalizers ----

struct Normalizer {
    virtual ~Normalizer() = default;
    virtual void apply(std::string& s) const = 0;
};

struct NormalizerSequence final : Normalizer {
    std::vector<std::unique_ptr<Normalizer>> steps;
    void apply(std::string& s) const override {
        for (const auto& n : steps) n->apply(s);
    }
};

struct PrependNormalizer final : Normalizer {
    std::string prefix;
    void apply(std::string& s) const override {
        if (!s.empty()) s = prefix + s;
    }
};

struct AppendNormalizer final : Normalizer {
    std::string suffix;
    void apply(std::string& s) const override {
        if (!s.empty()) s += suffix;
    }
};

struct ReplaceNormalizer final : Normalizer {
    std::unique_ptr<Pattern> pattern;
    std::string content;
    void apply(std::string& s) const override { s = pattern->replace(s, content); }
};

struct UnicodeNormalizer final : Normalizer {  // NFC, NFD, NFKC, NFKD
    const icu::Normalizer2* form = nullptr;
    void apply(std::string& s) const override {
        UErrorCode status = U_ZERO_ERROR;
        const icu::UnicodeString out = form->normalize(icu::UnicodeString::fromUTF8(s), status);
        if (U_FAILURE(status)) fail("tokenizer", std::string("Unicode normalization failed: ") + u_errorName(status));
        s.clear();
        out.toUTF8String(s);
    }
};

struct LowercaseNormalizer final : Normalizer {  // Rust char::to_lowercase, one character at a time
    void apply(std::string& s) const override {
        std::string out;
        for (size_t i = 0; i < s.size();) {
            icu::UnicodeString c(UChar32(utf8_next(s, i)));
            c.toLower(icu::Locale::getRoot()).toUTF8String(out);
        }
        s = out;
    }
};

struct StripNormalizer final : Normalizer {
    bool left = true, right = true;
    void apply(std::string& s) const override {
        size_t b = 0, e = s.size();
        if (left)
            for (size_t i = 0; i < s.size();) {
                if (!is_white_space(utf8_next(s, i))) break;
                b = i;
            }
        if (right)
            while (e > b) {
                size_t start = e - 1;
                while (start > b && (uint8_t(s[start]) & 0xC0) == 0x80) --start;
                size_t i = start;
                if (!is_white_space(utf8_next(s, i))) break;
                e = start;
            }
        s = s.substr(b, e - b);
    }
};

struct StripAccentsNormalizer final : Normalizer {
    void apply(std::string& s) const override {
        std::string out;
        for (size_t i = 0; i < s.size();) {
            const char32_t c = utf8_next(s, i);
            if (u_charType(UChar32(c)) != U_NON_SPACING_MARK) utf8_append(out, c);
        }
        s = out;
    }
};

struct ByteLevelNormalizer final : Normalizer {
    void apply(std::string& s) const override { s = to_byte_chars(s); }
};

const icu::Normalizer2* icu_form(const std::string& type) {
    UErrorCode status = U_ZERO_ERROR;
    const icu::Normalizer2* n = type == "NFC"    ? icu::Normalizer2::getNFCInstance(status)
                                : type == "NFD"  ? icu::Normalizer2::getNFDInstance(status)
                                : type == "NFKC" ? icu::Normalizer2::getNFKCInstance(status)
                                                 : icu::Normalizer2::getNFKDInstance(status);
    if (U_FAILURE(status)) fail("ICU", std::string("cannot load the ") + type + " normalizer: " + u_errorName(status));
    return n;
}

std::unique_ptr<Normalizer> normalizer_from(const json& j, const Where& w) {
    const std::string type = type_of(j, w);
    if (type == "Sequence") {
        auto seq = std::make_unique<NormalizerSequence>();
        const json& list = need(j, "normalizers", w);
        if (!list.is_array()) w.at("normalizers").error("expected a list");
        for (size_t i = 0; i < list.size(); ++i) seq->steps.push_back(normalizer_from(list[i], w.at("normalizers").at(i)));
        return seq;
    }
    if (type == "Prepend") {
        auto n = std::make_unique<PrependNormalizer>();
        n->prefix = need_string(j, "prepend", w);
        return n;
    }
    if (type == "Append") {
        auto n = std::make_unique<AppendNormalizer>();
        n->suffix = need_string(j, "append", w);
        return n;
    }
    if (type == "Replace") {
        auto n = std::make_unique<ReplaceNormalizer>();
        n->pattern = std::make_unique<Pattern>(need(j, "pattern", w), w.at("pattern"));
        n->content = need_string(j, "content", w);
        return n;
    }
    if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
        auto n = std::make_unique<UnicodeNormalizer>();
        n->form = icu_form(type);
        return n;
    }
    if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
    if (type == "Strip") {
        auto n = std::make_unique<StripNormalizer>();
        n->left = opt_bool(j, "strip_left", true, w);
        n->right = opt_bool(j, "strip_right", true, w);
        return n;
    }
    if (type == "StripAccents") return std::make_unique<StripAccentsNormalizer>();
    if (type == "ByteLevel") return std::make_unique<ByteLevelNormalizer>();
    unsupported(w, "normalizer", type);
}

// ---- pre-tokenizers ----

// A piece of the text on its way to the model; id >= 0: an added token.
struct Piece {
    std::string text;
    int32_t id = -1;
    bool at_start = false;  // begins at offset 0 of the input (Metaspace prepend_scheme "first")
};

struct PreTokenizer {
    virtual ~PreTokenizer() = default;
    virtual void apply(std::vector<Piece>& pieces) const = 0;
};

// PreTokenizedString::split: f maps a text piece to sub-pieces; added
// tokens pass through, empty pieces are dropped.
template <class F>
void split_pieces(std::vector<Piece>& pieces, F&& f) {
    std::vector<Piece> out;
    out.reserve(pieces.size());
    for (Piece& p : pieces) {
        if (p.id >= 0) {
            out.push_back(std::move(p));
            continue;
        }
        for (Piece& q : f(p))
            if (!q.text.empty()) out.push_back(std::move(q));
    }
    pieces = std::move(out);
}

std::vector<Piece> sub_pieces(const Piece& p, const std::vector<std::pair<size_t, size_t>>& ranges) {
    std::vector<Piece> out;
    for (auto [b, e] : ranges) out.push_back({p.text.substr(b, e - b), -1, p.at_start && b == 0});
    return out;
}

struct PreTokenizerSequence final : PreTokenizer {
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    void apply(std::vector<Piece>& pieces) const override {
        for (const auto& s : steps) s->apply(pieces);
    }
};

struct SplitPreTokenizer final : PreTokenizer {
    std::unique_ptr<Pattern> pattern;
    Behavior behavior = Behavior::isolated;
    bool invert = false;
    void apply(std::vector<Piece>& pieces) const override {
        split_pieces(pieces, [&](const Piece& p) {
            std::vector<Span> spans = pattern->find(p.text);
            if (invert)
                for (Span& s : spans) s.is_match = !s.is_match;
            return sub_pieces(p, split_ranges(spans, behavior));
        });
    }
};

struct ByteLevelPreTokenizer final : PreTokenizer {
    bool add_prefix_space = true, use_regex = true;
    std::unique_ptr<Regex> gpt2;
    void apply(std::vector<Piece>& pieces) const override {
        split_pieces(pieces, [&](Piece& p) {
            if (add_prefix_space && p.text[0] != ' ') p.text.insert(p.text.begin(), ' ');
            std::vector<Piece> parts =
                use_regex ? sub_pieces(p, split_ranges(spans_from_matches(p.text, gpt2->find_all(p.text)), Behavior::isolated))
                          : std::vector<Piece>{p};
            for (Piece& q : parts) q.text = to_byte_chars(q.text);
            return parts;
        });
    }
};

const std::string kMetaspace = "\xE2\x96\x81";  // "▁" U+2581

struct MetaspacePreTokenizer final : PreTokenizer {
    char32_t replacement = 0x2581;
    std::string rep = kMetaspace;
    enum class Prepend { always, first, never } prepend = Prepend::always;
    bool split = true;
    void apply(std::vector<Piece>& pieces) const override {
        split_pieces(pieces, [&](Piece& p) {
            p.text = replace_all(p.text, " ", rep);
            const bool add = prepend == Prepend::always || (prepend == Prepend::first && p.at_start);
            if (add && p.text.compare(0, rep.size(), rep) != 0) p.text = rep + p.text;
            if (!split) return std::vector<Piece>{p};
            const auto spans = spans_of_chars(p.text, [&](char32_t c) { return c == replacement; });
            return sub_pieces(p, split_ranges(spans, Behavior::merged_with_next));
        });
    }
};

// Digits, Whitespace, WhitespaceSplit, CharDelimiterSplit: a character
// class (or a regex) and a behavior.
struct CharSplitPreTokenizer final : PreTokenizer {
    std::function<bool(char32_t)> is_delim;
    Behavior behavior = Behavior::removed;
    void apply(std::vector<Piece>& pieces) const override {
        split_pieces(pieces, [&](const Piece& p) { return sub_pieces(p, split_ranges(spans_of_chars(p.text, is_delim), behavior)); });
    }
};

struct WhitespacePreTokenizer final : PreTokenizer {  // keeps \w+|[^\w\s]+, drops the rest
    std::unique_ptr<Regex> words;
    void apply(std::vector<Piece>& pieces) const override {
        split_pieces(pieces, [&](const Piece& p) {
            std::vector<Span> spans = spans_from_matches(p.text, words->find_all(p.text));
            for (Span& s : spans) s.is_match = !s.is_match;
            return sub_pieces(p, split_ranges(spans, Behavior::removed));
        });
    }
};

const char* const kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::unique_ptr<PreTokenizer> pre_tokenizer_from(const json& j, const Where& w) {
    const std::string type = type_of(j, w);
    if (type == "Sequence") {
        auto seq = std::make_unique<PreTokenizerSequence>();
        const json& list = need(j, "pretokenizers", w);
        if (!list.is_array()) w.at("pretokenizers").error("expected a list");
        for (size_t i = 0; i < list.size(); ++i)
            seq->steps.push_back(pre_tokenizer_from(list[i], w.at("pretokenizers").at(i)));
        return seq;
    }
    if (type == "Split") {
        auto s = std::make_unique<SplitPreTokenizer>();
        s->pattern = std::make_unique<Pattern>(need(j, "pattern", w), w.at("pattern"));
        s->behavior = behavior_from(need_string(j, "behavior", w), w.at("behavior"));
        s->invert = opt_bool(j, "invert", false, w);
        return s;
    }
    if (type == "ByteLevel") {
        auto b = std::make_unique<ByteLevelPreTokenizer>();
        b->add_prefix_space = opt_bool(j, "add_prefix_space", true, w);
        b->use_regex = opt_bool(j, "use_regex", true, w);
        b->gpt2 = std::make_unique<Regex>(kGpt2Pattern, w);
        return b;
    }
    if (type == "Metaspace") {
        auto m = std::make_unique<MetaspacePreTokenizer>();
        m->replacement = need_char(j, "replacement", w);
        m->rep = char_string(m->replacement);
        const std::string scheme = json_member(j, "prepend_scheme") ? need_string(j, "prepend_scheme", w) : "always";
        if (scheme == "always")
            m->prepend = MetaspacePreTokenizer::Prepend::always;
        else if (scheme == "first")
            m->prepend = MetaspacePreTokenizer::Prepend::first;
        else if (scheme == "never")
            m->prepend = MetaspacePreTokenizer::Prepend::never;
        else
            w.at("prepend_scheme").error("expected always, first or never, got '" + scheme + "'");
        if (!opt_bool(j, "add_prefix_space", true, w)) m->prepend = MetaspacePreTokenizer::Prepend::never;
        m->split = opt_bool(j, "split", true, w);
        return m;
    }
    if (type == "Digits") {
        auto d = std::make_unique<CharSplitPreTokenizer>();
        d->is_delim = is_numeric;
        d->behavior = opt_bool(j, "individual_digits", false, w) ? Behavior::isolated : Behavior::contiguous;
        return d;
    }
    if (type == "WhitespaceSplit") {
        auto d = std::make_unique<CharSplitPreTokenizer>();
        d->is_delim = is_white_space;
        return d;
    }
    if (type == "CharDelimiterSplit") {
        auto d = std::make_unique<CharSplitPreTokenizer>();
        const char32_t delim = need_char(j, "delimiter", w);
        d->is_delim = [delim](char32_t c) { return c == delim; };
        return d;
    }
    if (type == "Whitespace") {
        auto s = std::make_unique<WhitespacePreTokenizer>();
        s->words = std::make_unique<Regex>(R"(\w+|[^\w\s]+)", w);
        return s;
    }
    unsupported(w, "pre-tokenizer", type);
}

// ---- BPE model (tokenizers/src/models/bpe) ----

class Bpe {
public:
    Bpe(const json& j, const Where& w);
    void tokenize(std::string_view word, std::vector<int32_t>& out) const;
    int32_t id_of(const std::string& token) const {
        auto it = vocab_.find(token);
        return it == vocab_.end() ? -1 : it->second;
    }
    const std::string* token_of(int32_t id) const {
        auto it = tokens_.find(id);
        return it == tokens_.end() ? nullptr : &it->second;
    }
    int32_t max_id() const { return max_id_; }
    const std::optional<std::string>& unk_token() const { return unk_token_; }

private:
    struct Merge {
        uint32_t rank;
        int32_t new_id;
    };
    static uint64_t key(int32_t a, int32_t b) { return uint64_t(uint32_t(a)) << 32 | uint32_t(b); }
    const Merge* merge_of(int32_t a, int32_t b) const {
        auto it = merges_.find(key(a, b));
        return it == merges_.end() ? nullptr : &it->second;
    }
    void merge_all(std::vector<int32_t>& symbols) const;

    std::unordered_map<std::string, int32_t> vocab_;
    std::unordered_map<int32_t, std::string> tokens_;
    std::unordered_map<uint64_t, Merge> merges_;
    std::array<int32_t, 256> byte_ids_{};  // "<0xAB>" tokens, -1 when absent
    std::optional<std::string> unk_token_;
    std::string prefix_, suffix_;  // continuing_subword_prefix, end_of_word_suffix
    bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
    int32_t max_id_ = -1;
};

Bpe::Bpe(const json& j, const Where& w) {
    if (const json* d = json_member(j, "dropout"); d && (!d->is_number() || d->get<double>() != 0.0))
        w.at("dropout").error("BPE dropout is random and not supported, got " + d->dump());
    if (json_member(j, "unk_token")) unk_token_ = need_string(j, "unk_token", w);
    if (json_member(j, "continuing_subword_prefix")) prefix_ = need_string(j, "continuing_subword_prefix", w);
    if (json_member(j, "end_of_word_suffix")) suffix_ = need_string(j, "end_of_word_suffix", w);
    fuse_unk_ = opt_bool(j, "fuse_unk", false, w);
    byte_fallback_ = opt_bool(j, "byte_fallback", false, w);
    ignore_merges_ = opt_bool(j, "ignore_merges", false, w);

    const json& vocab = need(j, "vocab", w);
    if (!vocab.is_object()) w.at("vocab").error("expected an object {token: id}");
    for (const auto& [token, id] : vocab.items()) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
            w.at("vocab").error("token \"" + token + "\": expected an id >= 0, got " + id.dump());
        const int32_t i = id.get<int32_t>();
        vocab_[token] = i;
        tokens_[i] = token;
        max_id_ = std::max(max_id_, i);
    }
    static const char* hex = "0123456789ABCDEF";
    for (int b = 0; b < 256; ++b) byte_ids_[size_t(b)] = id_of(std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">");

    const json& merges = need(j, "merges", w);
    if (!merges.is_array()) w.at("merges").error("expected a list of merges");
    for (size_t r = 0; r < merges.size(); ++r) {
        const json& m = merges[r];
        std::string a, b;
        if (m.is_string()) {  // "a b" (tokenizers < 0.20)
            const std::string s = m.get<std::string>();
            const size_t sp = s.find(' ');
            if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
                w.at("merges").at(r).error("expected \"left right\", got \"" + s + "\"");
            a = s.substr(0, sp);
            b = s.substr(sp + 1);
        } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {  // ["a", "b"]
            a = m[0].get<std::string>();
            b = m[1].get<std::string>();
        } else {
            w.at("merges").at(r).error("expected \"left right\" or [\"left\", \"right\"], got " + m.dump());
        }
        const int32_t ia = id_of(a), ib = id_of(b);
        const std::string merged = a + (b.size() >= prefix_.size() ? b.substr(prefix_.size()) : "");
        const int32_t im = id_of(merged);
        for (auto [id, t] : {std::pair<int32_t, const std::string*>{ia, &a}, {ib, &b}, {im, &merged}})
            if (id < 0) w.at("merges").at(r).error("token \"" + *t + "\" is not in the vocabulary");
        merges_[key(ia, ib)] = {uint32_t(r), im};  // a repeated pair keeps its last rank, like HF's HashMap
    }
}

// Word::merge_all: repeatedly apply the lowest-ranked merge (leftmost on
// ties) over a linked list of symbols, with a min-heap of candidate pairs.
void Bpe::merge_all(std::vector<int32_t>& symbols) const {
    const size_t n = symbols.size();
    if (n < 2) return;
    std::vector<int> prev(n), next(n);
    std::vector<bool> alive(n, true);
    for (size_t i = 0; i < n; ++i) {
        prev[i] = int(i) - 1;
        next[i] = i + 1 < n ? int(i) + 1 : -1;
    }
    struct Candidate {
        uint32_t rank;
        size_t pos;
        int32_t new_id;
        bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
    for (size_t i = 0; i + 1 < n; ++i)
        if (const Merge* m = merge_of(symbols[i], symbols[i + 1])) queue.push({m->rank, i, m->new_id});
    while (!queue.empty()) {
        const Candidate top = queue.top();
        queue.pop();
        if (!alive[top.pos] || next[top.pos] < 0) continue;
        const size_t right = size_t(next[top.pos]);
        const Merge* m = merge_of(symbols[top.pos], symbols[right]);
        if (!m || m->new_id != top.new_id) continue;  // stale entry
        symbols[top.pos] = top.new_id;
        alive[right] = false;
        next[top.pos] = next[right];
        if (next[right] >= 0) prev[size_t(next[right])] = int(top.pos);
        if (prev[top.pos] >= 0) {
            const size_t l = size_t(prev[top.pos]);
            if (const Merge* pm = merge_of(symbols[l], symbols[top.pos])) queue.push({pm->rank, l, pm->new_id});
        }
        if (next[top.pos] >= 0) {
            if (const Merge* nm = merge_of(symbols[top.pos], symbols[size_t(next[top.pos])]))
                queue.push({nm->rank, top.pos, nm->new_id});
        }
    }
    size_t k = 0;
    for (size_t i = 0; i < n; ++i)
        if (alive[i]) symbols[k++] = symbols[i];
    symbols.resize(k);
}

void Bpe::tokenize(std::string_view word, std::vector<int32_t>& out) const {
    if (word.empty()) return;
    if (ignore_merges_) {
        if (const int32_t id = id_of(std::string(word)); id >= 0) {
            out.push_back(id);
            return;
        }
    }
    // BPE::merge_word: one symbol per character, else byte tokens, else unk.
    std::vector<int32_t> symbols;
    int32_t pending_unk = -1;
    for (size_t i = 0; i < word.size();) {
        const size_t b = i;
        utf8_next(word, i);
        std::string s(word.substr(b, i - b));
        if (b > 0) s = prefix_ + s;
        if (i == word.size()) s += suffix_;
        if (const int32_t id = id_of(s); id >= 0) {
            if (pending_unk >= 0) symbols.push_back(pending_unk);
            pending_unk = -1;
            symbols.push_back(id);
            continue;
        }
        if (byte_fallback_ && std::all_of(s.begin(), s.end(), [&](char c) { return byte_ids_[uint8_t(c)] >= 0; })) {
            for (char c : s) symbols.push_back(byte_ids_[uint8_t(c)]);
            continue;
        }
        if (!unk_token_) continue;  // no unk token: the character is dropped
        const int32_t unk = id_of(*unk_token_);
        if (unk < 0) fail("tokenizer", "unk_token '" + *unk_token_ + "' is not in the vocabulary");
        if (pending_unk >= 0 && !fuse_unk_) symbols.push_back(pending_unk);
        pending_unk = unk;
    }
    if (pending_unk >= 0) symbols.push_back(pending_unk);
    merge_all(symbols);
    out.insert(out.end(), symbols.begin(), symbols.end());
}

// ---- decoders ----

struct Decoder {
    virtual ~Decoder() = default;
    virtual void apply(std::vector<std::string>& tokens) const = 0;  // decode_chain
};

struct DecoderSequence final : Decoder {
    std::vector<std::unique_ptr<Decoder>> steps;
    void apply(std::vector<std::string>& tokens) const override {
        for (const auto& d : steps) d->apply(tokens);
    }
};

struct ByteLevelDecoder final : Decoder {
    void apply(std::vector<std::string>& tokens) const override {
        std::string bytes;
        for (const std::string& t : tokens) {
            std::string mapped;
            bool all = true;
            for (size_t i = 0; i < t.size() && all;) {
                auto it = byte_table().to_byte.find(utf8_next(t, i));
                if (it == byte_table().to_byte.end())
                    all = false;
                else
                    mapped += char(it->second);
            }
            bytes += all ? mapped : t;
        }
        tokens = {utf8_lossy(bytes)};
    }
};

struct ReplaceDecoder final : Decoder {
    std::unique_ptr<Pattern> pattern;
    std::string content;
    void apply(std::vector<std::string>& tokens) const override {
        for (std::string& t : tokens) t = pattern->replace(t, content);
    }
};

struct ByteFallbackDecoder final : Decoder {  // "<0xE6>" tokens -> bytes; invalid runs -> one U+FFFD per byte
    void apply(std::vector<std::string>& tokens) const override {
        std::vector<std::string> out;
        std::string bytes;
        size_t count = 0;
        auto flush = [&] {
            if (count == 0) return;
            if (utf8_valid(bytes))
                out.push_back(bytes);
            else
                for (size_t i = 0; i < count; ++i) out.push_back("\xEF\xBF\xBD");
            bytes.clear();
            count = 0;
        };
        for (std::string& t : tokens) {
            int byte = -1;
            if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && std::isxdigit(uint8_t(t[3])) &&
                std::isxdigit(uint8_t(t[4])))
                byte = std::stoi(t.substr(3, 2), nullptr, 16);
            if (byte >= 0) {
                bytes += char(byte);
                ++count;
            } else {
                flush();
                out.push_back(std::move(t));
            }
        }
        flush();
        tokens = std::move(out);
    }
};

struct FuseDecoder final : Decoder {
    void apply(std::vector<std::string>& tokens) const override {
        std::string all;
        for (const std::string& t : tokens) all += t;
        tokens = {all};
    }
};

struct StripDecoder final : Decoder {  // up to `start` leading / `stop` trailing `content` characters per token
    char32_t content = ' ';
    size_t start = 0, stop = 0;
    void apply(std::vector<std::string>& tokens) const override {
        for (std::string& t : tokens) {
            std::vector<char32_t> chars;
            for (size_t i = 0; i < t.size();) chars.push_back(utf8_next(t, i));
            size_t b = 0;
            while (b < start && b < chars.size() && chars[b] == content) ++b;
            size_t e = chars.size();
            while (chars.size() - e < stop && e > b && chars[e - 1] == content) --e;
            std::string out;
            for (size_t i = b; i < e; ++i) utf8_append(out, chars[i]);
            t = out;
        }
    }
};

struct MetaspaceDecoder final : Decoder {  // the replacement becomes a space; all of them go in the first token
    std::string rep;
    bool prepends = true;
    void apply(std::vector<std::string>& tokens) const override {
        for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = replace_all(tokens[i], rep, i == 0 && prepends ? "" : " ");
    }
};

std::unique_ptr<Decoder> decoder_from(const json& j, const Where& w) {
    const std::string type = type_of(j, w);
    if (type == "Sequence") {
        auto seq = std::make_unique<DecoderSequence>();
        const json& list = need(j, "decoders", w);
        if (!list.is_array()) w.at("decoders").error("expected a list");
        for (size_t i = 0; i < list.size(); ++i) seq->steps.push_back(decoder_from(list[i], w.at("decoders").at(i)));
        return seq;
    }
    if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
    if (type == "Replace") {
        auto r = std::make_unique<ReplaceDecoder>();
        r->pattern = std::make_unique<Pattern>(need(j, "pattern", w), w.at("pattern"));
        r->content = need_string(j, "content", w);
        return r;
    }
    if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
    if (type == "Fuse") return std::make_unique<FuseDecoder>();
    if (type == "Strip") {
        auto s = std::make_unique<StripDecoder>();
        s->content = need_char(j, "content", w);
        s->start = size_t(json_int(j, "start", 0, w.file));
        s->stop = size_t(json_int(j, "stop", 0, w.file));
        return s;
    }
    if (type == "Metaspace") {
        auto m = std::make_unique<MetaspaceDecoder>();
        m->rep = char_string(need_char(j, "replacement", w));
        const std::string scheme = json_member(j, "prepend_scheme") ? need_string(j, "prepend_scheme", w) : "always";
        m->prepends = scheme != "never" && opt_bool(j, "add_prefix_space", true, w);
        return m;
    }
    unsupported(w, "decoder", type);
}

// ---- post-processor: the ids put around a single sequence ----

struct Wrap {
    std::vector<int32_t> before, after;
};

Wrap post_processor_from(const json& j, const Where& w) {
    const std::string type = type_of(j, w);
    Wrap wrap;
    if (type == "ByteLevel") return wrap;  // only trims offsets
    if (type == "Sequence") {
        const json& list = need(j, "processors", w);
        if (!list.is_array()) w.at("processors").error("expected a list");
        for (size_t i = 0; i < list.size(); ++i) {  // each wraps the result of the previous ones
            Wrap inner = post_processor_from(list[i], w.at("processors").at(i));
            wrap.before.insert(wrap.before.begin(), inner.before.begin(), inner.before.end());
            wrap.after.insert(wrap.after.end(), inner.after.begin(), inner.after.end());
        }
        return wrap;
    }
    if (type == "TemplateProcessing") {
        const json& single = need(j, "single", w);
        const json& specials = need(j, "special_tokens", w);
        if (!single.is_array()) w.at("single").error("expected a list of pieces");
        bool seen_sequence = false;
        for (size_t i = 0; i < single.size(); ++i) {
            const Where wi = w.at("single").at(i);
            if (const json* seq = json_member(single[i], "Sequence")) {
                if (need_string(*seq, "id", wi) != "A" || seen_sequence) wi.error("expected one sequence $A");
                seen_sequence = true;
            } else if (const json* sp = json_member(single[i], "SpecialToken")) {
                const std::string name = need_string(*sp, "id", wi);
                const json* entry = json_member(specials, name.c_str());
                if (!entry) w.at("special_tokens").error("'" + name + "' is missing");
                const json& ids = need(*entry, "ids", w.at("special_tokens").at(name));
                if (!ids.is_array()) w.at("special_tokens").at(name).error("'ids' must be a list");
                for (const json& id : ids) {
                    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
                        w.at("special_tokens").at(name).error("bad id " + id.dump());
                    (seen_sequence ? wrap.after : wrap.before).push_back(id.get<int32_t>());
                }
            } else {
                wi.error("expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
            }
        }
        if (!seen_sequence) w.at("single").error("the template has no $A");
        return wrap;
    }
    if (type == "BertProcessing" || type == "RobertaProcessing") {  // [cls] A [sep]
        for (const char* key : {"cls", "sep"}) {
            const json& pair = need(j, key, w);
            if (!pair.is_array() || pair.size() != 2 || !pair[1].is_number_integer())
                w.at(key).error("expected [token, id]");
            (std::string(key) == "cls" ? wrap.before : wrap.after).push_back(pair[1].get<int32_t>());
        }
        return wrap;
    }
    unsupported(w, "post-processor", type);
}

std::string clean_up_tokenization(std::string s) {
    for (auto [from, to] : {std::pair{" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"},
                            {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}})
        s = replace_all(s, from, to);
    return s;
}

// ---- the tokenizer ----

class JsonTokenizer final : public Tokenizer {
public:
    JsonTokenizer(const json& j, const std::string& path, const HfConfig& config, const TokenizerOptions& options,
                  std::string kind);

    std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override;
    std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const override;
    int32_t token_id(std::string_view token) const override {
        auto it = added_ids_.find(std::string(token));
        return it != added_ids_.end() ? it->second : model_->id_of(std::string(token));
    }
    int64_t vocab_size() const override { return vocab_size_; }
    std::string kind() const override { return kind_; }

private:
    void add_token(AddedToken t);
    void rebuild_like_transformers5_llama(const HfConfig& config);

    std::unique_ptr<Normalizer> normalizer_;
    std::unique_ptr<PreTokenizer> pre_tokenizer_;
    std::unique_ptr<Bpe> model_;
    std::unique_ptr<Decoder> decoder_;
    Wrap wrap_;
    std::unordered_map<std::string, int32_t> added_ids_;
    std::unordered_map<int32_t, AddedToken> added_tokens_;
    std::unordered_set<std::string> special_contents_;
    AddedTokenMatcher raw_matcher_, normalized_matcher_;
    bool clean_up_ = false;
    int64_t vocab_size_ = 0;
    std::string kind_;
};

JsonTokenizer::JsonTokenizer(const json& j, const std::string& path, const HfConfig& config,
                             const TokenizerOptions& options, std::string kind)
    : kind_(std::move(kind)) {
    if (!j.is_object()) fail(path, "expected a JSON object at the top level");
    auto where = [&](const char* key) { return Where{path, key}; };

    const json* model = json_member(j, "model");
    if (!model || !model->is_object()) fail(path, "key 'model' is missing or not an object");
    const std::string model_type = json_member(*model, "type") ? need_string(*model, "type", where("model"))
                                   : json_member(*model, "merges") ? "BPE"
                                                                   : "";
    if (model_type != "BPE")
        fail(path, "unsupported tokenizer model type '" + (model_type.empty() ? "(none)" : model_type) +
                       "' (only BPE is supported)");
    model_ = std::make_unique<Bpe>(*model, where("model"));
    if (const json* n = json_member(j, "normalizer")) normalizer_ = normalizer_from(*n, where("normalizer"));
    if (const json* p = json_member(j, "pre_tokenizer")) pre_tokenizer_ = pre_tokenizer_from(*p, where("pre_tokenizer"));
    if (const json* d = json_member(j, "decoder")) decoder_ = decoder_from(*d, where("decoder"));
    if (options.transformers5 && config.transformers5_llama_class()) rebuild_like_transformers5_llama(config);
    clean_up_ = config.clean_up_tokenization_spaces;

    // Added vocabulary: the file's, then (transformers) the config's tokens
    // whose ids are not there yet, then named special tokens not yet added.
    if (const json* added = json_member(j, "added_tokens")) {
        if (!added->is_array()) where("added_tokens").error("expected a list");
        for (size_t i = 0; i < added->size(); ++i) {
            const json& a = (*added)[i];
            const Where wi = where("added_tokens").at(i);
            AddedToken t;
            const json& id = need(a, "id", wi);
            if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
                wi.at("id").error("expected an id >= 0, got " + id.dump());
            t.id = id.get<int32_t>();
            t.content = need_string(a, "content", wi);
            t.special = opt_bool(a, "special", false, wi);
            t.normalized = opt_bool(a, "normalized", !t.special, wi);
            t.lstrip = opt_bool(a, "lstrip", false, wi);
            t.rstrip = opt_bool(a, "rstrip", false, wi);
            t.single_word = opt_bool(a, "single_word", false, wi);
            added_ids_[t.content] = t.id;
            added_tokens_[t.id] = t;
        }
    }
    for (const AddedToken& t : config.added_tokens)
        if (!added_tokens_.count(t.id)) add_token(t);
    for (AddedToken t : config.special_tokens()) {
        t.special = true;
        if (!added_ids_.count(t.content)) add_token(t);
    }
    vocab_size_ = int64_t(model_->max_id()) + 1;
    for (const auto& [id, t] : added_tokens_) {
        vocab_size_ = std::max<int64_t>(vocab_size_, int64_t(id) + 1);
        if (t.special) special_contents_.insert(t.content);
        if (!t.normalized) {
            raw_matcher_.add(t);
        } else {  // matched against the normalized text, so normalized itself
            AddedToken n = t;
            if (normalizer_) normalizer_->apply(n.content);
            normalized_matcher_.add(n);
        }
    }

    auto id_of = [&](const std::optional<AddedToken>& t) { return t ? token_id(t->content) : -1; };
    bos_id_ = id_of(config.bos);
    eos_id_ = id_of(config.eos);
    pad_id_ = id_of(config.pad);
    unk_id_ = config.unk ? id_of(config.unk) : model_->unk_token() ? model_->id_of(*model_->unk_token()) : -1;

    // Special tokens around the text. transformers rebuilds the template from
    // add_bos_token/add_eos_token when the config sets them (transformers 4's
    // LlamaTokenizerFast always, with add_bos_token defaulting to true); else
    // tokenizer.json's.
    const json* post = json_member(j, "post_processor");
    const bool llama4 = !options.transformers5 && config.llama_class();
    if (config.add_bos_token || config.add_eos_token || (llama4 && !post)) {
        if (config.add_bos_token.value_or(llama4) && bos_id_ >= 0) wrap_.before = {bos_id_};
        if (config.add_eos_token.value_or(false) && eos_id_ >= 0) wrap_.after = {eos_id_};
    } else if (post) {
        wrap_ = post_processor_from(*post, where("post_processor"));
    }
}

// transformers 5 LlamaTokenizer.__init__: no normalizer, Metaspace with
// prepend_scheme from add_prefix_space (default true) and legacy (default
// false), split off; decoder Replace, ByteFallback, Fuse (+ Strip).
void JsonTokenizer::rebuild_like_transformers5_llama(const HfConfig& config) {
    const bool add_prefix_space = config.add_prefix_space.value_or(true);
    auto metaspace = std::make_unique<MetaspacePreTokenizer>();
    metaspace->rep = kMetaspace;
    metaspace->prepend = !add_prefix_space           ? MetaspacePreTokenizer::Prepend::never
                         : config.legacy.value_or(false) ? MetaspacePreTokenizer::Prepend::always
                                                         : MetaspacePreTokenizer::Prepend::first;
    metaspace->split = false;
    normalizer_.reset();
    pre_tokenizer_ = std::move(metaspace);
    auto seq = std::make_unique<DecoderSequence>();
    auto replace = std::make_unique<ReplaceDecoder>();
    static const std::string origin = "transformers 5 LlamaTokenizer";
    replace->pattern = std::make_unique<Pattern>(json{{"String", kMetaspace}}, Where{origin, "decoder"});
    replace->content = " ";
    seq->steps.push_back(std::move(replace));
    seq->steps.push_back(std::make_unique<ByteFallbackDecoder>());
    seq->steps.push_back(std::make_unique<FuseDecoder>());
    if (add_prefix_space) {
        auto strip = std::make_unique<StripDecoder>();
        strip->start = 1;
        seq->steps.push_back(std::move(strip));
    }
    decoder_ = std::move(seq);
}

// AddedVocabulary::add_tokens: the vocabulary id when the content has one,
// else the next free id after the model vocabulary.
void JsonTokenizer::add_token(AddedToken t) {
    if (t.content.empty()) return;
    if (const int32_t id = token_id(t.content); id >= 0) {
        t.id = id;
    } else {
        int32_t next = model_->max_id() + 1;
        for (const auto& [id2, tok] : added_tokens_) next = std::max(next, id2 + 1);
        t.id = next;
    }
    added_ids_[t.content] = t.id;
    added_tokens_[t.id] = t;
}

std::vector<int32_t> JsonTokenizer::encode(std::string_view text, bool add_special_tokens) const {
    if (!utf8_valid(text)) fail("tokenizer", "text to encode is not valid UTF-8");
    // 1-2. Added tokens, normalization.
    std::vector<Piece> pieces;
    for (Segment& seg : split_added_tokens_hf(text, raw_matcher_)) {
        if (seg.id >= 0) {
            pieces.push_back({std::move(seg.text), seg.id, false});
            continue;
        }
        std::string normalized = std::move(seg.text);
        if (normalizer_) normalizer_->apply(normalized);
        for (Segment& sub : split_added_tokens_hf(normalized, normalized_matcher_))
            if (!sub.text.empty()) pieces.push_back({std::move(sub.text), sub.id, seg.begin == 0 && sub.begin == 0});
    }
    // 3. Pre-tokenization.
    if (pre_tokenizer_) pre_tokenizer_->apply(pieces);
    // 4-5. Model, special tokens.
    std::vector<int32_t> ids;
    if (add_special_tokens) ids = wrap_.before;
    for (const Piece& p : pieces) {
        if (p.id >= 0)
            ids.push_back(p.id);
        else
            model_->tokenize(p.text, ids);
    }
    if (add_special_tokens) ids.insert(ids.end(), wrap_.after.begin(), wrap_.after.end());
    return ids;
}

std::string JsonTokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
    std::vector<std::string> tokens;
    for (int32_t id : ids) {
        const std::string* t = nullptr;
        if (auto it = added_tokens_.find(id); it != added_tokens_.end())
            t = &it->second.content;
        else
            t = model_->token_of(id);
        if (!t || (skip_special_tokens && special_contents_.count(*t))) continue;
        tokens.push_back(*t);
    }
    std::string text;
    if (decoder_) {
        decoder_->apply(tokens);
        for (const std::string& t : tokens) text += t;
    } else {
        for (size_t i = 0; i < tokens.size(); ++i) text += (i ? " " : "") + tokens[i];
    }
    return clean_up_ ? clean_up_tokenization(text) : text;
}

}  // namespace

std::unique_ptr<Tokenizer> tokenizer_json_make(const json& doc, const std::string& path, const HfConfig& config,
                                               const TokenizerOptions& options, const std::string& kind) {
    return std::make_unique<JsonTokenizer>(doc, path, config, options, kind);
}

}  // namespace tessera::tok
