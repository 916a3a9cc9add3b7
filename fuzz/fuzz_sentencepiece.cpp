// The SentencePiece path: a fuzzed tokenizer.model beside a fixed
// tokenizer_config.json, loaded and used.
#include <string>
#include <vector>

#include "fuzz_support.h"
#include "io/tokenizer.h"
#include "tessera/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const bool config_written = [] {
        const std::string cfg = "{\"tokenizer_class\": \"LlamaTokenizer\", \"legacy\": false, \"add_bos_token\": true}";
        tessera::fuzz::put("tokenizer_config.json", reinterpret_cast<const uint8_t*>(cfg.data()), cfg.size());
        return true;
    }();
    (void)config_written;
    tessera::fuzz::put("tokenizer.model", data, size);
    try {
        const auto tok = tessera::Tokenizer::load(tessera::fuzz::scratch_dir());
        const std::vector<int32_t> ids = tok->encode("USER: <image>\nHello world ASSISTANT:", true);
        (void)tok->decode(ids, false);
    } catch (const tessera::Error&) {
    }
    return 0;
}
