// safetensors header and data reader (single file): parse, then read every
// tensor small enough as f32.
#include <vector>

#include "fuzz_support.h"
#include "io/safetensors.h"
#include "tessera/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string path = tessera::fuzz::put("model.safetensors", data, size);
    try {
        tessera::SafeTensors file(path);
        for (const tessera::TensorInfo& t : file.tensors()) {
            if (t.numel() > (1 << 16)) continue;
            std::vector<float> out(static_cast<size_t>(t.numel()));
            file.read_f32(t.name, t.shape, out.data());
        }
    } catch (const tessera::Error&) {
    }
    return 0;
}
