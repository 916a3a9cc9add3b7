// model.safetensors.index.json beside two small valid shards: the index is the
// fuzzed input (shard names, tensor lists, metadata).
#include <cstring>
#include <string>

#include "fuzz_support.h"
#include "io/safetensors.h"
#include "tessera/error.h"

namespace {

// A valid safetensors file holding one f32 tensor `name` of shape [2].
std::string shard(const std::string& name) {
    const std::string header = "{\"" + name + "\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    std::string out(8, '\0');
    const uint64_t n = header.size();
    std::memcpy(out.data(), &n, 8);
    return out + header + std::string(8, '\0');
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const bool shards_written = [] {
        for (const char* s : {"a", "b"}) {
            const std::string bytes = shard(std::string("w.") + s);
            tessera::fuzz::put(std::string("model-0000") + (s[0] == 'a' ? "1" : "2") + "-of-00002.safetensors",
                               reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
        }
        return true;
    }();
    (void)shards_written;
    tessera::fuzz::put("model.safetensors.index.json", data, size);
    try {
        tessera::SafeTensorsSet set(tessera::fuzz::scratch_dir());
        (void)set.total_bytes();
    } catch (const tessera::Error&) {
    }
    return 0;
}
