// LLaVA (HF LlavaForConditionalGeneration): CLIP vision tower -> feature
// layer and selection -> projector (linear, GELU, linear) -> LLaMA decoder
// with the image token expanded to the visual tokens actually passed on.
// Reads both hub folder layouts (transformers 4.x and 5.x weight names,
// single or sharded safetensors).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "io/llava_config.h"
#include "io/tokenizer.h"
#include "models/llama.h"
#include "models/vit.h"
#include "models/weights.h"

namespace tessera {

struct LlavaLoadOptions {
    // Dtype of the decoder's matrices while running: f32 copies, or the
    // file's bf16/f16 used in place (products accumulate in f32 either way).
    // "auto": f32 when the f32 copy fits comfortably in memory, else the file's.
    std::string dtype = "auto";  // auto | f32 | bf16 | f16
    bool load_tokenizer = true;
    // Read the weight files into the process's memory instead of mapping
    // them (SafeTensorsSet; `caption --no-mmap`).
    bool weights_in_memory = false;
};

struct LlavaModel {
    std::string dir;
    LlavaConfig cfg;
    ClipPreprocessConfig preprocess;
    std::unique_ptr<SafeTensorsSet> files;  // keeps the mapped weights alive
    WeightStore store;
    std::unique_ptr<Tokenizer> tokenizer;
    std::string layout;             // "transformers-4" | "transformers-5" (weight names)
    DType decoder_dtype = DType::f32;

    VitModel vision;                // the CLIP tower as a pre-norm ViT without head
    int vision_blocks = 0;          // blocks run: up to the feature layer
    WeightRef proj1, proj2;         // multi_modal_projector.linear_1 / linear_2
    const float* proj1_bias = nullptr;
    const float* proj2_bias = nullptr;
    LlamaModel text;

    int64_t parameters = 0;
    int64_t mapped_bytes = 0;       // weights used in place from the files
};

// Throws tessera::Error naming the file and problem (missing files or
// shards, shape mismatches, unsupported settings).
void llava_load(LlavaModel& model, const std::string& dir, const LlavaLoadOptions& options = {});

struct LlavaVisionState {
    VitState vit;
    float* features;   // [visual tokens, text hidden] projected
    float* selected;   // [visual tokens, vision hidden]
    float* hidden;     // [visual tokens, text hidden] projector's middle
    float* scratch;    // linear_w scratch
    // Slot of each visual token passed on in the unpruned layout (0 ..
    // visual_tokens_per_image - 1), from the token state's patch provenance.
    std::vector<int32_t> slots;
    Arena arena;
};
void llava_vision_state_init(LlavaVisionState& state, const LlavaModel& model);

// pixels: one preprocessed image [3, H, W]. Runs the tower up to the
// feature layer (stages at their hooks), selects (default: drops the
// prefix token) and projects. Returns the number of visual tokens in
// state.features.
int64_t llava_encode_image(const LlavaModel& model, LlavaVisionState& state, const float* pixels, Stage* const* stages,
                           int stage_count, Ledger* ledger);

// The LLaVA-1.5 conversation template around a user prompt.
std::string llava_prompt_text(const std::string& prompt);

// Token ids of a prompt holding exactly one image token, with that token
// repeated `visual_tokens` times (as transformers' LlavaProcessor expands it).
std::vector<int32_t> llava_prompt_ids(const LlavaModel& model, const std::string& text, int64_t visual_tokens);

// Decoder positions of a prompt: contiguous (0, 1, ...), or, with `slots`,
// the positions the tokens would have had with every visual token present
// (visual token k at image_start + slots[k], text after the image shifted).
void llava_prompt_positions(const LlavaModel& model, const std::vector<int32_t>& ids,
                            const std::vector<int32_t>* slots, int32_t* positions);

// Input embeddings: text rows from the embedding table, image-token rows
// filled with the visual features in order. out: [ids.size(), hidden].
void llava_embed_prompt(const LlavaModel& model, const std::vector<int32_t>& ids, const float* features,
                        int64_t visual_tokens, float* out);

}  // namespace tessera
