// config.json readers: timm (and the ViT hyper-parameters it implies, block
// attention plans included) and Hugging Face LLaVA (config.json, and the same
// bytes as preprocessor_config.json).
#include "fuzz_support.h"
#include "io/llava_config.h"
#include "io/timm_config.h"
#include "models/vit.h"
#include "tessera/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string path = tessera::fuzz::put("config.json", data, size);
    try {
        const tessera::TimmConfig cfg = tessera::timm_config_read(path);
        (void)tessera::vit_hparams_from_timm(cfg);
    } catch (const tessera::Error&) {
    }
    try {
        (void)tessera::llava_config_read(tessera::fuzz::scratch_dir());
    } catch (const tessera::Error&) {
    }
    tessera::fuzz::put("preprocessor_config.json", data, size);
    try {
        (void)tessera::clip_preprocess_read(tessera::fuzz::scratch_dir());
    } catch (const tessera::Error&) {
    }
    return 0;
}
