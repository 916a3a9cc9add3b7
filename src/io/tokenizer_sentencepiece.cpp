// tokenizer.model through libsentencepiece, wrapped like transformers' slow
// LlamaTokenizer (tokenization_llama.py + PreTrainedTokenizer.tokenize):
//  1. legacy=false: "▁" in the text becomes " ", and "▁" is prepended;
//  2. the text is split on added tokens (leftmost-longest), lstrip/rstrip/
//     single_word edit the neighbouring pieces;
//  3. each remaining piece is encoded by SentencePiece: legacy=true with the
//     model's dummy prefix; legacy=false with the dummy prefix off, and pieces
//     starting with "▁"/" " encoded as unk_token + piece minus the unk
//     token's own pieces (so the leading "▁" survives);
//  4. legacy=false: a lone leading "▁" before a special token is dropped;
//  5. BOS/EOS per add_bos_token (default true) / add_eos_token (default false).
// Also: the tokenizer.json document transformers 5 builds from tokenizer.model
// (read with a small protobuf reader, since the model's proto schema is not
// part of the Debian package).
#include <sentencepiece_processor.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "io/tokenizer_internal.h"
#include "tessera/error.h"

namespace tessera::tok {
namespace {

const std::string kSpace = "\xE2\x96\x81";  // "▁" U+2581, SentencePiece's space

std::string py_lstrip(const std::string& s) {
    size_t i = 0;
    while (i < s.size()) {
        size_t j = i;
        if (!is_python_space(utf8_next(s, j))) break;
        i = j;
    }
    return s.substr(i);
}

std::string py_rstrip(const std::string& s) {
    size_t end = s.size();
    while (end > 0) {
        size_t start = end - 1;
        while (start > 0 && (uint8_t(s[start]) & 0xC0) == 0x80) --start;
        size_t j = start;
        if (!is_python_space(utf8_next(s, j))) break;
        end = start;
    }
    return s.substr(0, end);
}

// transformers' clean_up_tokenization.
std::string clean_up_tokenization(std::string s) {
    for (auto [from, to] : {std::pair{" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"},
                            {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}})
        s = replace_all(s, from, to);
    return s;
}

class SentencePieceTokenizer final : public Tokenizer {
public:
    SentencePieceTokenizer(const std::string& path, const HfConfig& config);

    std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override;
    std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const override;
    int32_t token_id(std::string_view token) const override;
    int64_t vocab_size() const override { return vocab_size_; }
    std::string kind() const override { return "sentencepiece"; }

private:
    std::vector<std::string> sp_pieces(const std::string& text) const;
    std::vector<std::string> tokenize_piece(const std::string& text) const;  // LlamaTokenizer._tokenize
    std::string tokens_to_string(std::vector<std::string> tokens) const;     // convert_tokens_to_string
    void add_token(AddedToken t);
    bool is_special(const std::string& token) const { return special_contents_.count(token) > 0; }

    std::string path_;
    sentencepiece::SentencePieceProcessor sp_;
    bool legacy_ = true, add_prefix_space_ = true, add_bos_ = true, add_eos_ = false, clean_up_ = false;
    std::unordered_map<std::string, int32_t> added_ids_;    // content -> id
    std::unordered_map<int32_t, AddedToken> added_tokens_;  // id -> token
    AddedTokenMatcher matcher_;
    std::unordered_set<std::string> special_contents_;  // all_special_tokens
    std::unordered_set<int32_t> special_ids_;           // all_special_ids
    std::unordered_set<std::string> additional_special_;
    std::string unk_content_ = "<unk>";
    size_t unk_token_length_ = 0;
    int64_t vocab_size_ = 0;
};

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& path, const HfConfig& c) : path_(path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) fail(path, "cannot open file");
    std::ostringstream ss;
    ss << f.rdbuf();
    std::string proto = ss.str();
    legacy_ = c.legacy.value_or(true);
    add_prefix_space_ = c.add_prefix_space.value_or(true);
    add_bos_ = c.add_bos_token.value_or(true);
    add_eos_ = c.add_eos_token.value_or(false);
    clean_up_ = c.clean_up_tokenization_spaces;
    // legacy=false: transformers merges NormalizerSpec{add_dummy_prefix: false}
    // into the model. Appending that message (field 3, whose field 3 is
    // add_dummy_prefix) to the serialized ModelProto is the same protobuf merge.
    if (!legacy_) proto += std::string("\x1a\x02\x18\x00", 4);
    sentencepiece::util::Status status;
    try {
        status = sp_.LoadFromSerializedProto(proto);
    } catch (const std::exception& e) {
        // The library's trie builder throws on some malformed piece lists
        // (fuzz_sentencepiece: a piece whose text is a NUL byte).
        fail(path, std::string("cannot load the SentencePiece model: ") + e.what());
    }
    if (!status.ok()) fail(path, "cannot load the SentencePiece model: " + status.ToString());
    vocab_size_ = sp_.GetPieceSize();

    // Named special tokens: the config's, else the model's own pieces.
    auto model_piece = [&](int id) -> std::optional<AddedToken> {
        if (id < 0 || id >= sp_.GetPieceSize()) return std::nullopt;
        AddedToken t;
        t.content = sp_.IdToPiece(id);
        t.special = true;
        t.normalized = false;
        return t;
    };
    HfConfig cfg = c;
    if (!cfg.llama_class() && cfg.tokenizer_class.empty()) {
        if (!cfg.bos) cfg.bos = model_piece(sp_.bos_id());
        if (!cfg.eos) cfg.eos = model_piece(sp_.eos_id());
        if (!cfg.unk) cfg.unk = model_piece(sp_.unk_id());
    }
    if (cfg.unk) unk_content_ = cfg.unk->content;

    // PreTrainedTokenizer.__init__: the config's added tokens keep their ids,
    // then special tokens not yet added get the vocabulary id or a new one.
    for (const AddedToken& t : cfg.added_tokens) {
        added_ids_[t.content] = t.id;
        added_tokens_[t.id] = t;
    }
    for (AddedToken t : cfg.special_tokens()) {
        t.special = true;
        if (!added_ids_.count(t.content)) add_token(t);
    }
    for (const auto& [id, t] : added_tokens_) {
        matcher_.add(t);
        vocab_size_ = std::max<int64_t>(vocab_size_, int64_t(id) + 1);
    }
    for (const AddedToken& t : cfg.special_tokens()) {
        special_contents_.insert(t.content);
        special_ids_.insert(token_id(t.content));
    }
    for (const AddedToken& t : cfg.additional_special) additional_special_.insert(t.content);
    auto id_of = [&](const std::optional<AddedToken>& t) { return t ? token_id(t->content) : -1; };
    bos_id_ = id_of(cfg.bos);
    eos_id_ = id_of(cfg.eos);
    unk_id_ = id_of(cfg.unk);
    pad_id_ = id_of(cfg.pad);
    unk_token_length_ = sp_pieces(unk_content_).size();
}

// PreTrainedTokenizer._add_tokens for one token.
void SentencePieceTokenizer::add_token(AddedToken t) {
    if (t.content.empty()) return;
    const int sp_id = sp_.PieceToId(t.content);
    const bool in_vocab = sp_id != sp_.unk_id() || sp_.IdToPiece(sp_id) == t.content;
    if (in_vocab) {
        t.id = sp_id;
    } else {
        int32_t next = sp_.GetPieceSize();
        for (const auto& [id, tok] : added_tokens_) next = std::max(next, id + 1);
        t.id = next;
    }
    added_ids_[t.content] = t.id;
    added_tokens_[t.id] = t;
}

int32_t SentencePieceTokenizer::token_id(std::string_view token) const {
    auto it = added_ids_.find(std::string(token));
    if (it != added_ids_.end()) return it->second;
    const int id = sp_.PieceToId(token);
    if (id == sp_.unk_id() && sp_.IdToPiece(id) != token) return -1;
    return id;
}

std::vector<std::string> SentencePieceTokenizer::sp_pieces(const std::string& text) const {
    std::vector<std::string> pieces;
    const auto status = sp_.Encode(text, &pieces);
    if (!status.ok()) fail(path_, "SentencePiece encode failed: " + status.ToString());
    return pieces;
}

std::vector<std::string> SentencePieceTokenizer::tokenize_piece(const std::string& text) const {
    const bool space_first = text.compare(0, kSpace.size(), kSpace) == 0 || (!text.empty() && text[0] == ' ');
    if (legacy_ || !space_first) return sp_pieces(text);
    // Without the dummy prefix SentencePiece drops a leading "▁"; encoding
    // "<unk>" + text and removing the unk token's pieces keeps it.
    std::vector<std::string> pieces = sp_pieces(unk_content_ + text);
    if (pieces.size() >= unk_token_length_) pieces.erase(pieces.begin(), pieces.begin() + std::ptrdiff_t(unk_token_length_));
    return pieces;
}

std::vector<int32_t> SentencePieceTokenizer::encode(std::string_view text_in, bool add_special_tokens) const {
    if (!utf8_valid(text_in)) fail("tokenizer", "text to encode is not valid UTF-8");
    std::string text(text_in);
    if (!legacy_ && !text.empty()) {  // LlamaTokenizer.tokenize
        text = replace_all(text, kSpace, " ");
        if (add_prefix_space_) text = kSpace + text;
    }

    // Trie.split: the text cut around each added token.
    std::vector<std::string> parts;
    size_t done = 0;
    for (size_t pos = 0; pos < text.size();) {
        const AddedToken* t = matcher_.empty() ? nullptr : matcher_.match_at(text, pos);
        if (!t) {
            ++pos;
            continue;
        }
        if (done < pos) parts.push_back(text.substr(done, pos - done));
        parts.push_back(t->content);
        pos += t->content.size();
        done = pos;
    }
    if (done < text.size()) parts.push_back(text.substr(done));

    // lstrip / rstrip / single_word act on the neighbouring parts.
    for (size_t i = 0; i < parts.size(); ++i) {
        auto it = added_ids_.find(parts[i]);
        if (it == added_ids_.end()) continue;
        const AddedToken& t = added_tokens_.at(it->second);
        std::string* left = i > 0 ? &parts[i - 1] : nullptr;
        std::string* right = i + 1 < parts.size() ? &parts[i + 1] : nullptr;
        if (t.rstrip && right && !right->empty()) *right = py_lstrip(*right);
        if (t.lstrip && left && !left->empty()) *left = py_rstrip(*left);
        if (t.single_word && left && !left->empty() && left->back() != ' ') {
            *left += parts[i];
            parts[i].clear();
        } else if (t.single_word && right && !right->empty() && (*right)[0] != ' ') {
            parts[i] += *right;
            right->clear();
        }
    }

    std::vector<std::string> tokens;
    for (const std::string& part : parts) {
        if (part.empty()) continue;
        if (added_ids_.count(part)) {
            tokens.push_back(part);
        } else {
            std::vector<std::string> pieces = tokenize_piece(part);
            tokens.insert(tokens.end(), pieces.begin(), pieces.end());
        }
    }
    if (!legacy_ && tokens.size() > 1 && tokens[0] == kSpace && is_special(tokens[1])) tokens.erase(tokens.begin());

    std::vector<int32_t> ids;
    ids.reserve(tokens.size() + 2);
    if (add_special_tokens && add_bos_ && bos_id_ >= 0) ids.push_back(bos_id_);
    for (const std::string& t : tokens) {
        auto it = added_ids_.find(t);
        ids.push_back(it != added_ids_.end() ? it->second : int32_t(sp_.PieceToId(t)));
    }
    if (add_special_tokens && add_eos_ && eos_id_ >= 0) ids.push_back(eos_id_);
    return ids;
}

std::string SentencePieceTokenizer::tokens_to_string(std::vector<std::string> tokens) const {
    if (tokens.empty()) return "";
    if (add_prefix_space_ && tokens[0].compare(0, kSpace.size(), kSpace) == 0) tokens[0].erase(0, kSpace.size());
    auto sp_decode = [&](const std::vector<std::string>& pieces) {
        std::string out;
        const auto status = sp_.Decode(pieces, &out);
        if (!status.ok()) fail(path_, "SentencePiece decode failed: " + status.ToString());
        return out;
    };
    std::vector<std::string> current;
    std::string out;
    bool prev_special = false;
    for (size_t i = 0; i < tokens.size(); ++i) {
        const std::string& t = tokens[i];
        if (is_special(t)) {
            if (!prev_special && i != 0 && legacy_) out += ' ';
            out += sp_decode(current) + t;
            current.clear();
            prev_special = true;
        } else {
            if (prev_special && i == 1 && add_prefix_space_ && t.compare(0, kSpace.size(), kSpace) != 0) out += ' ';
            current.push_back(t);
            prev_special = false;
        }
    }
    return out + sp_decode(current);
}

// PreTrainedTokenizer._decode: added tokens that are not special stay
// literal, sub-texts are joined with spaces (spaces_between_special_tokens).
std::string SentencePieceTokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
    std::vector<std::string> sub_texts, current;
    for (int32_t id : ids) {
        if (skip_special_tokens && special_ids_.count(id)) continue;
        std::string token;
        if (auto it = added_tokens_.find(id); it != added_tokens_.end())
            token = it->second.content;
        else if (id >= 0 && id < sp_.GetPieceSize())
            token = sp_.IdToPiece(id);
        else
            continue;
        const bool legacy_added = (added_ids_.count(token) && !is_special(token)) ||
                                  (additional_special_.count(token) && token_id(token) >= sp_.GetPieceSize());
        if (legacy_added) {
            if (!current.empty()) {
                std::string s = tokens_to_string(current);
                if (!s.empty()) sub_texts.push_back(s);
                current.clear();
            }
            sub_texts.push_back(token);
        } else {
            current.push_back(token);
        }
    }
    if (!current.empty()) sub_texts.push_back(tokens_to_string(current));
    std::string text;
    for (size_t i = 0; i < sub_texts.size(); ++i) text += (i ? " " : "") + sub_texts[i];
    return clean_up_ ? clean_up_tokenization(text) : text;
}

// ---- the ModelProto fields transformers 5 reads (sentencepiece_model.proto) ----

struct SpmProto {
    struct Piece {
        std::string piece;
        int type = 1;  // NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6
    };
    std::vector<Piece> pieces;         // ModelProto.pieces = 1
    int model_type = 1;                // TrainerSpec.model_type = 3: UNIGRAM 1, BPE 2
    bool byte_fallback = false;        // TrainerSpec.byte_fallback = 35
    std::string precompiled_charsmap;  // NormalizerSpec.precompiled_charsmap = 2
};

// Protobuf wire format: (field << 3 | wire type) keys, varints, length-delimited bytes.
class ProtoReader {
public:
    ProtoReader(std::string_view data, const std::string& path) : data_(data), path_(path) {}
    bool next(uint32_t& field, uint32_t& wire) {
        if (pos_ >= data_.size()) return false;
        const uint64_t key = varint();
        field = uint32_t(key >> 3);
        wire = uint32_t(key & 7);
        return true;
    }
    uint64_t varint() {
        uint64_t v = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            if (pos_ >= data_.size()) bad();
            const uint8_t b = uint8_t(data_[pos_++]);
            v |= uint64_t(b & 0x7F) << shift;
            if (!(b & 0x80)) return v;
        }
        bad();
    }
    std::string_view bytes() {
        const uint64_t n = varint();
        if (n > data_.size() - pos_) bad();
        std::string_view out = data_.substr(pos_, size_t(n));
        pos_ += size_t(n);
        return out;
    }
    void skip(uint32_t wire) {
        if (wire == 0) {
            varint();
        } else if (wire == 2) {
            bytes();
        } else if (wire == 1 || wire == 5) {
            const size_t n = wire == 1 ? 8 : 4;
            if (n > data_.size() - pos_) bad();
            pos_ += n;
        } else {
            bad();
        }
    }

private:
    [[noreturn]] void bad() const { fail(path_, "cannot load the SentencePiece model: malformed protobuf"); }
    std::string_view data_;
    const std::string& path_;
    size_t pos_ = 0;
};

SpmProto spm_proto_read(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) fail(path, "cannot open file");
    std::ostringstream ss;
    ss << f.rdbuf();
    const std::string data = ss.str();
    SpmProto proto;
    ProtoReader top(data, path);
    uint32_t field, wire;
    while (top.next(field, wire)) {
        if (field == 1 && wire == 2) {
            ProtoReader r(top.bytes(), path);
            SpmProto::Piece p;
            while (r.next(field, wire)) {
                if (field == 1 && wire == 2)
                    p.piece = std::string(r.bytes());
                else if (field == 3 && wire == 0)
                    p.type = int(r.varint());
                else
                    r.skip(wire);
            }
            proto.pieces.push_back(std::move(p));
        } else if (field == 2 && wire == 2) {
            ProtoReader r(top.bytes(), path);
            while (r.next(field, wire)) {
                if (field == 3 && wire == 0)
                    proto.model_type = int(r.varint());
                else if (field == 35 && wire == 0)
                    proto.byte_fallback = r.varint() != 0;
                else
                    r.skip(wire);
            }
        } else if (field == 3 && wire == 2) {
            ProtoReader r(top.bytes(), path);
            while (r.next(field, wire)) {
                if (field == 2 && wire == 2)
                    proto.precompiled_charsmap = std::string(r.bytes());
                else
                    r.skip(wire);
            }
        } else {
            top.skip(wire);
        }
    }
    if (proto.pieces.empty()) fail(path, "cannot load the SentencePiece model: no pieces");
    return proto;
}

}  // namespace

std::unique_ptr<Tokenizer> tokenizer_sentencepiece_load(const std::string& path, const HfConfig& config) {
    return std::make_unique<SentencePieceTokenizer>(path, config);
}

// transformers 5: SentencePieceExtractor.extract (vocab = pieces by id,
// merges = generate_merges: every split of a piece into two pieces, ranked by
// the piece's id, then by the left part's length) and, for the generic
// TokenizersBackend, SpmConverter.build_tokenizer_from_spm_proto (spaces
// become "▁", no prefix, Replace/ByteFallback/Fuse decoder). A LlamaTokenizer
// class then replaces normalizer, pre-tokenizer and decoder itself.
nlohmann::json sentencepiece_to_tokenizer_json(const std::string& path, const HfConfig& config) {
    using nlohmann::json;
    const SpmProto proto = spm_proto_read(path);
    if (proto.model_type != 2)
        fail(path, "transformers 5 conversion of a non-BPE SentencePiece model (model_type " +
                       std::to_string(proto.model_type) + ") is not supported (only BPE)");
    if (!proto.precompiled_charsmap.empty())
        fail(path, "transformers 5 would run this model's precompiled SentencePiece normalizer, which is not supported");
    const bool llama = config.transformers5_llama_class();

    json vocab = json::object();
    std::unordered_map<std::string, int32_t> ids;
    std::string unk;
    json added = json::array();
    for (size_t i = 0; i < proto.pieces.size(); ++i) {
        const SpmProto::Piece& p = proto.pieces[i];
        vocab[p.piece] = i;
        ids.emplace(p.piece, int32_t(i));
        if (p.type == 2 && unk.empty()) unk = p.piece;
        if (p.type == 3 || p.type == 4)  // control and user-defined pieces are added tokens
            added.push_back({{"id", i}, {"content", p.piece}, {"single_word", false}, {"lstrip", false},
                             {"rstrip", false}, {"normalized", false}, {"special", p.type == 3}});
    }
    json merges = json::array();
    for (size_t i = 0; i < proto.pieces.size(); ++i) {
        const std::string& piece = proto.pieces[i].piece;
        for (size_t cut = 1; cut < piece.size(); ++cut) {
            if ((uint8_t(piece[cut]) & 0xC0) == 0x80) continue;  // not a character boundary
            const std::string left = piece.substr(0, cut), right = piece.substr(cut);
            if (ids.count(left) && ids.count(right)) merges.push_back(json::array({left, right}));
        }
    }
    json model = {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}, {"fuse_unk", true},
                  {"byte_fallback", llama || proto.byte_fallback}};
    if (!llama && !unk.empty()) model["unk_token"] = unk;
    json doc = {{"added_tokens", added}, {"model", model}};
    if (!llama) {
        doc["normalizer"] = {{"type", "Sequence"},
                             {"normalizers", json::array({{{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpace}}})}};
        json decoders = json::array({{{"type", "Replace"}, {"pattern", {{"String", kSpace}}}, {"content", " "}}});
        if (proto.byte_fallback) {
            decoders.push_back({{"type", "ByteFallback"}});
            decoders.push_back({{"type", "Fuse"}});
        }
        doc["decoder"] = {{"type", "Sequence"}, {"decoders", decoders}};
    }
    return doc;
}

}  // namespace tessera::tok
