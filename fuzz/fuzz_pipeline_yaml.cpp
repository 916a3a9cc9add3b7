// Pipeline YAML: parse, then build the stage chain against a ViT encoder and
// a LLaMA decoder shape (every stage's settings validation runs).
#include "fuzz_support.h"
#include "pipeline/config.h"
#include "tessera/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string path = tessera::fuzz::put("pipeline.yaml", data, size);
    try {
        const tessera::PipelineSpec spec = tessera::pipeline_read(path);
        const tessera::EncoderShape encoder{12, 3, 192, 1, 14, 14};
        tessera::DecoderShape decoder;
        decoder.layers = 6, decoder.heads = 4, decoder.kv_heads = 4, decoder.head_dim = 64, decoder.hidden = 256;
        decoder.model_dir = tessera::fuzz::scratch_dir();
        (void)tessera::stages_build(spec.stages, encoder, &decoder);
        (void)tessera::stages_build(spec.stages, encoder, nullptr);
    } catch (const tessera::Error&) {
    }
    return 0;
}
