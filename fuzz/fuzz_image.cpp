// Image decode (JPEG, PNG, BMP, ...) and both preprocessing paths (timm
// eval transform, CLIP image processor), with a pixel limit so the fuzzer
// explores formats rather than allocation.
#include <omp.h>

#include <vector>

#include "fuzz_support.h"
#include "io/image.h"
#include "io/llava_config.h"
#include "io/preprocess.h"
#include "tessera/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    // One thread and small outputs: instrumented resize loops dominate otherwise
    // (0.5 s per input at 224/336); the resampling code paths are the same.
    omp_set_num_threads(1);
    tessera::ImageLimits limits;
    limits.max_pixels = 1 << 16;  // 256 x 256: decoding paths, not resize cost, are what the fuzzer should explore
    try {
        const tessera::Image image = tessera::image_decode_memory(data, size, "fuzz-input", limits);
        tessera::PreprocessConfig timm;
        timm.input_height = timm.input_width = 32;
        std::vector<float> out(static_cast<size_t>(3 * timm.input_height * timm.input_width));
        tessera::preprocess_image(image, timm, out.data());
        tessera::ClipPreprocessConfig clip;
        clip.shortest_edge = 40;
        clip.crop_height = clip.crop_width = 32;
        std::vector<float> clip_out(static_cast<size_t>(3) * size_t(clip.crop_height) * size_t(clip.crop_width));
        tessera::clip_preprocess_image(image, clip, clip_out.data());
    } catch (const tessera::Error&) {
    }
    return 0;
}
