// Public API: image captioning / visual question answering with a LLaVA-style
// model (Hugging Face LLaVA folder) and an optional stage chain on its
// vision tower.
//
//   tessera::Captioner cap({.model = "path/to/llava"});
//   tessera::Caption c = cap.caption_file("scene.png", {.prompt = "Describe the image."},
//                                         [](const std::string& piece) { std::cout << piece << std::flush; });
//   // c.text, c.token_ids, c.visual_tokens, c.macs_prefill, c.ms_first_token, ...
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace tessera {

struct PipelineSpec;

// The model `tessera caption` uses when none is given: Tessera's own demo
// LLaVA, trained on ShapeScenes (models/shapescenes-llava, docs/shapescenes.md).
inline constexpr const char* default_caption_model = "shapescenes-llava";

struct CaptionOptions {
    std::string model;     // LLaVA folder (or a name model_resolve finds); "" with no pipeline model: the demo model
    std::string pipeline;  // pipeline YAML whose stages act on the vision tower and the decoder, or ""
    int threads = 0;       // 0: the pipeline's setting, else OMP_NUM_THREADS, else all cores
    std::string dtype = "";  // decoder matrices: auto | f32 | bf16 | f16; "": the pipeline's dtype, else auto
    // Read the weight files into this process's memory instead of mapping
    // them (llama.cpp's --no-mmap): slower to load, not shared with other
    // processes through the page cache, faster decode where file-backed
    // pages read slowly (docs/performance.md).
    bool no_mmap = false;
};

struct GenerateOptions {
    std::string prompt = "Describe the image.";  // placed in the LLaVA-1.5 template
    int max_new_tokens = 64;
    float temperature = 0.0f;  // 0: greedy
    int top_k = 0;
    float top_p = 1.0f;
    uint64_t seed = 0;
    bool stop_at_eos = true;
};

struct Caption {
    std::string text;
    std::vector<int32_t> token_ids;  // generated tokens (a stop token included when one ended it)
    std::string stop_reason;         // "eos" | "max_new_tokens" | "context_full"
    int64_t prompt_tokens = 0;       // decoder input, visual tokens included
    int64_t visual_tokens = 0;       // visual tokens passed to the decoder
    std::vector<std::pair<int32_t, float>> first_logits_top5;  // after any contrast
    // Prefill: tokens and visual tokens entering each decoder layer (decoder
    // stages may drop visual tokens part-way).
    std::vector<int64_t> decoder_tokens, decoder_visual_tokens;
    int64_t contrast_visual_tokens = 0;  // visual tokens of a contrastive stream (DAMRO), 0 without one
    uint64_t macs_vision = 0, macs_projector = 0, macs_prefill = 0, macs_decode = 0;
    double ms_preprocess = 0, ms_vision = 0, ms_prefill = 0, ms_decode = 0, ms_first_token = 0, ms_total = 0;
};

class Captioner {
public:
    explicit Captioner(const CaptionOptions& options);
    // From an already-read pipeline (e.g. one pipeline of a report).
    Captioner(const PipelineSpec& spec, int threads, const std::string& dtype = "", bool no_mmap = false);
    ~Captioner();
    Captioner(Captioner&&) noexcept;
    Captioner& operator=(Captioner&&) noexcept;

    // on_text receives the caption as it is generated, in complete UTF-8 pieces.
    Caption caption_file(const std::string& image_path, const GenerateOptions& options,
                         const std::function<void(const std::string&)>& on_text = {});
    // pixels: one image preprocessed as the model's image processor does.
    Caption caption_pixels(const float* pixels, const GenerateOptions& options,
                           const std::function<void(const std::string&)>& on_text = {});
    // Several prompts about one image: encode it once, then generate for each
    // prompt (a caption's ms and GMACs still include the encoding).
    void encode_pixels(const float* pixels);
    Caption generate(const GenerateOptions& options, const std::function<void(const std::string&)>& on_text = {});
    void load_image(const std::string& path, float* pixels) const;
    int64_t input_floats() const;

    // Several stage chains on one loaded model (a report's pipelines, or
    // `caption --requests` lines that name pipelines): add_stages builds the
    // stages of another pipeline and returns its chain's index, use_stages
    // makes that chain act on the requests that follow (chain 0: the
    // constructor's pipeline). A pipeline naming another model, or a dtype or
    // thread count other than this run's, is an error. Switching chains
    // forgets the encoded image (the stages act in the vision tower).
    int add_stages(const PipelineSpec& pipeline);
    void use_stages(int chain);
    int stage_chains() const;

    const std::string& model_dir() const;
    std::string description() const;  // one line: shapes, dtype, layout, tokenizer
    int threads() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace tessera
