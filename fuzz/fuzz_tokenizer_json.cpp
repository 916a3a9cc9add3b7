// tokenizer.json reader, then encode and decode with whatever it built.
#include <string>
#include <vector>

#include "fuzz_support.h"
#include "io/tokenizer.h"
#include "tessera/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    tessera::fuzz::put("tokenizer.json", data, size);
    try {
        const auto tok = tessera::Tokenizer::load(tessera::fuzz::scratch_dir());
        for (const char* text : {"USER: <image>\nDescribe the image. ASSISTANT:", "héllo  wörld 123 \xF0\x9F\x98\x80", ""}) {
            const std::vector<int32_t> ids = tok->encode(text, true);
            (void)tok->decode(ids, false);
        }
        const std::vector<int32_t> some = {0, 1, 2, 3, 100, -1, 1 << 30};
        (void)tok->decode(some, true);
    } catch (const tessera::Error&) {
    }
    return 0;
}
