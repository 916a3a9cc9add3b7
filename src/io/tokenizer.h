// The text tokenizer of a Hugging Face model folder, giving the same ids as
// transformers' AutoTokenizer.from_pretrained(DIR):
//  - tokenizer.json present: the `tokenizers` pipeline it describes (added
//    tokens -> normalizer -> pre-tokenizer -> BPE -> post-processor), what the
//    default (fast) tokenizer runs;
//  - else tokenizer.model: SentencePiece, wrapped the way transformers' slow
//    LlamaTokenizer wraps it (added-token splitting, `legacy`, BOS/EOS), or
//    converted to BPE the way transformers 5 does (TokenizerOptions).
// tokenizer_config.json, special_tokens_map.json and added_tokens.json supply
// the special tokens, add_bos_token/add_eos_token and extra added tokens.
// Every load problem is a tessera::Error naming the file (and key or type).
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tessera {

// Where transformers' major versions tokenize differently, which to mirror.
struct TokenizerOptions {
    // false: transformers 4 (tokenizer.json as written; a bare tokenizer.model
    // as the slow LlamaTokenizer runs it). true: transformers 5, which
    //  - for a LlamaTokenizer class it trusts (not for LLaVA model types, whose
    //    class it ignores), rebuilds normalizer, pre-tokenizer and decoder
    //    from `legacy` (default false) and `add_prefix_space`;
    //  - converts a bare tokenizer.model to BPE with merges ranked by piece id
    //    and, for LLaVA, no "▁" prefix at all;
    //  - adds BOS only where tokenizer.json or add_bos_token says so.
    bool transformers5 = false;
};

class Tokenizer {
public:
    virtual ~Tokenizer() = default;

    // Reads DIR/tokenizer.json, else DIR/tokenizer.model, with the config files
    // beside it. Throws "DIR: no tokenizer.json or tokenizer.model in DIR" when
    // neither is there.
    static std::unique_ptr<Tokenizer> load(const std::string& model_dir, const TokenizerOptions& options = {});

    // Ids of `text` (valid UTF-8, else an Error). Added tokens written in the
    // text ("<image>", "</s>") become their ids. add_special_tokens adds what
    // HF's add_special_tokens=True adds (BOS for LLaMA; EOS when configured).
    virtual std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const = 0;

    // Text of `ids`, like HF tokenizer.decode(ids, skip_special_tokens). Ids
    // outside the vocabulary are dropped. Incomplete UTF-8 (a lone byte-
    // fallback token) decodes to U+FFFD, as in HF.
    virtual std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const = 0;

    int32_t bos_id() const { return bos_id_; }  // -1 when the tokenizer has none
    int32_t eos_id() const { return eos_id_; }
    int32_t pad_id() const { return pad_id_; }
    int32_t unk_id() const { return unk_id_; }
    // Id of a vocabulary or added token written exactly, -1 if none.
    virtual int32_t token_id(std::string_view token) const = 0;
    // Ids lie in [0, vocab_size()): model vocabulary plus added tokens (HF
    // len(tokenizer)).
    virtual int64_t vocab_size() const = 0;
    // "tokenizer.json", "sentencepiece" (slow LlamaTokenizer) or
    // "sentencepiece-converted" (tokenizer.model as transformers 5 converts it).
    virtual std::string kind() const = 0;

protected:
    int32_t bos_id_ = -1, eos_id_ = -1, pad_id_ = -1, unk_id_ = -1;
};

// Incremental decoding for printing tokens as they are generated: push() returns
// the text the new id completes (possibly empty: a character split across
// byte tokens waits for its last byte), finish() whatever is left. The
// concatenated output equals tokenizer.decode(all ids).
class TokenStream {
public:
    TokenStream(const Tokenizer& tokenizer, bool skip_special_tokens);
    std::string push(int32_t id);
    std::string finish();

private:
    const Tokenizer& tokenizer_;
    bool skip_special_;
    std::vector<int32_t> window_;  // ids still needed as context, oldest first
    size_t printed_ids_ = 0;       // window_[0..printed_ids_) is fully printed
    std::string printed_text_;     // decode(window_[0..printed_ids_))
};

}  // namespace tessera
