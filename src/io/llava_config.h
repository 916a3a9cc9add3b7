// A Hugging Face LLaVA folder's configuration: config.json (vision_config,
// text_config, feature selection, image token), the image processor (4.x:
// preprocessor_config.json; 5.x: processor_config.json with the image
// processor nested) and generation_config.json (stop tokens). Absent keys
// take transformers' defaults (CLIPVisionConfig, LlamaConfig, LlavaConfig),
// so hub files that list only what differs read correctly.
#pragma once
#include <string>
#include <vector>

#include "io/image.h"

namespace tessera {

struct ClipVisionConfig {
    int hidden = 1024, intermediate = 4096, layers = 24, heads = 16;
    int image_size = 336, patch = 14, channels = 3;
    float layer_norm_eps = 1e-5f;
    std::string act = "quick_gelu";  // "quick_gelu" | "gelu"
};

struct RopeConfig {
    std::string type = "default";  // default | linear | llama3
    double theta = 10000.0;
    double factor = 1.0;
    // llama3 only
    double low_freq_factor = 1.0, high_freq_factor = 4.0;
    int original_max_positions = 8192;
};

struct LlamaConfig {
    int vocab = 32000, hidden = 4096, intermediate = 11008, layers = 32, heads = 32, kv_heads = 32;
    int head_dim = 128;
    int max_positions = 2048;
    float rms_norm_eps = 1e-6f;
    RopeConfig rope;
    bool attention_bias = false, mlp_bias = false, tie_embeddings = false;
};

struct LlavaConfig {
    std::string path;  // config.json
    ClipVisionConfig vision;
    LlamaConfig text;
    int image_token_id = 32000;
    std::vector<int> feature_layers = {-2};  // vision_feature_layer (a list concatenates features)
    std::string select_strategy = "default";  // "default" drops CLS, "full" keeps it
    std::string projector_act = "gelu";
    bool projector_bias = true;
    std::string dtype = "float32";  // torch_dtype / dtype as written (informational)
    std::vector<int> eos_ids;       // generation_config.json eos_token_id, else text_config's
    int bos_id = 1, pad_id = -1;

    // Hidden-state index (0 = embeddings, k = after k blocks) of each feature layer.
    std::vector<int> feature_indices() const;
    int visual_tokens_per_image() const;  // before any stage
};

// CLIPImageProcessor: shortest-edge resize (Pillow resampling), center crop,
// rescale, normalize.
struct ClipPreprocessConfig {
    std::string path;
    bool do_resize = true, do_center_crop = true, do_rescale = true, do_normalize = true;
    int shortest_edge = 336;
    int crop_height = 336, crop_width = 336;
    Resample resample = Resample::bicubic;
    double rescale_factor = 1.0 / 255.0;
    float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
    float std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
};

// Reads DIR/config.json (+ DIR/generation_config.json when present). Throws
// tessera::Error naming the file and key for malformed or unsupported values.
LlavaConfig llava_config_read(const std::string& dir);

// DIR/preprocessor_config.json (4.x), else the "image_processor" object of
// DIR/processor_config.json (5.x); neither -> error naming DIR.
ClipPreprocessConfig clip_preprocess_read(const std::string& dir);

// Geometry as CLIPImageProcessor: shorter side to shortest_edge (the longer
// side int(edge * long / short)), then a center crop at floor offsets.
Image clip_preprocess_geometry(const Image& image, const ClipPreprocessConfig& cfg);

// Full pipeline into CHW floats (3 * crop_height * crop_width).
void clip_preprocess_image(const Image& image, const ClipPreprocessConfig& cfg, float* out);

}  // namespace tessera
