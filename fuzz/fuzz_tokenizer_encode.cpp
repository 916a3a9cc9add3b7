// The encoders on arbitrary text: the fuzzed bytes are the text, tokenized
// with the fixtures' byte-level BPE (tokenizer.json) and SentencePiece
// tokenizers, then decoded; the streaming decoder sees the ids one by one.
#include <string>
#include <string_view>
#include <vector>

#include "io/tokenizer.h"
#include "tessera/error.h"

#ifndef TESSERA_SOURCE_DIR
#error "TESSERA_SOURCE_DIR must name the source tree"
#endif

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const auto bpe = tessera::Tokenizer::load(TESSERA_SOURCE_DIR "/tests/fixtures/llava/tiny-llava-gqa");
    static const auto sp = tessera::Tokenizer::load(TESSERA_SOURCE_DIR "/tests/fixtures/llava/tiny-llava-mha");
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    for (const auto* tok : {bpe.get(), sp.get()}) {
        try {
            const std::vector<int32_t> ids = tok->encode(text, true);
            (void)tok->decode(ids, true);
            tessera::TokenStream stream(*tok, true);
            for (int32_t id : ids) (void)stream.push(id);
            (void)stream.finish();
        } catch (const tessera::Error&) {
        }
    }
    return 0;
}
