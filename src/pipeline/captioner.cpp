#include "tessera/captioner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>

#include "io/image.h"
#include "models/llava.h"
#include "models/sampling.h"
#include "pipeline/config.h"
#include "tessera/error.h"
#include "tessera/threads.h"

namespace tessera {

namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Index of the first image token in a prompt.
int64_t image_start_of(const std::vector<int32_t>& ids, int32_t image_token) {
    const auto it = std::find(ids.begin(), ids.end(), image_token);
    return it == ids.end() ? 0 : int64_t(it - ids.begin());
}

}  // namespace

struct Captioner::Impl {
    LlavaModel model;
    DecoderShape decoder_shape;  // what decoder stages are built for
    std::vector<std::vector<std::unique_ptr<Stage>>> chains;
    std::vector<Stage*> stage_ptrs;  // the active chain's
    LlavaVisionState vision;
    LlamaState decoder;
    std::vector<float> embeds;
    std::vector<int32_t> positions;
    // A contrastive decoding stream (DAMRO): its own cache and prompt.
    LlamaState contrast;
    std::vector<float> contrast_embeds, contrast_features;
    std::vector<int32_t> contrast_positions;
    std::vector<float> mixed_logits;
    // The last encoded image.
    bool encoded = false;
    int64_t visual = 0;
    uint64_t macs_vision = 0, macs_projector = 0;
    double ms_vision = 0;
    int threads = 1;
};

namespace {

PipelineSpec spec_of(const CaptionOptions& options) {
    PipelineSpec spec;
    if (!options.pipeline.empty()) spec = pipeline_read(options.pipeline);
    if (!options.model.empty()) spec.model = options.model;
    return spec;
}

}  // namespace

Captioner::Captioner(const CaptionOptions& options)
    : Captioner(spec_of(options), options.threads, options.dtype, options.no_mmap) {}

Captioner::Captioner(const PipelineSpec& given, int threads, const std::string& dtype, bool no_mmap)
    : impl_(std::make_unique<Impl>()) {
    PipelineSpec spec = given;
    if (!spec.model.empty()) spec.model = model_resolve(spec.model);
    // The embedded default: the demo model trained on ShapeScenes (models/).
    if (spec.model.empty()) spec.model = model_resolve(default_caption_model);
    threads_init(threads > 0 ? threads : spec.threads);
    impl_->threads = threads_count();
    llava_load(impl_->model, spec.model,
               {.dtype = !dtype.empty() ? dtype : !spec.dtype.empty() ? spec.dtype : "auto",
                .weights_in_memory = no_mmap});
    impl_->decoder_shape = llama_decoder_shape(impl_->model.text);
    impl_->decoder_shape.model_dir = impl_->model.dir;
    impl_->chains.push_back(stages_build(spec.stages, impl_->model.vision.encoder_shape(), &impl_->decoder_shape));
    use_stages(0);
    llava_vision_state_init(impl_->vision, impl_->model);
}

int Captioner::add_stages(const PipelineSpec& pipeline) {
    Impl& im = *impl_;
    const std::string& where = pipeline.file.empty() ? std::string("pipeline") : pipeline.file;
    if (!pipeline.model.empty()) {
        const std::string model = model_resolve(pipeline.model);
        std::error_code ec;
        if (!std::filesystem::equivalent(model, im.model.dir, ec))
            fail(where, "names model " + model + ", but this run loaded " + im.model.dir);
    }
    if (!pipeline.dtype.empty() && pipeline.dtype != "auto" && pipeline.dtype != dtype_name(im.model.decoder_dtype))
        fail(where, "sets dtype " + pipeline.dtype + ", but this run has dtype " + dtype_name(im.model.decoder_dtype));
    if (pipeline.threads > 0 && pipeline.threads != im.threads)
        fail(where, "sets threads " + std::to_string(pipeline.threads) + ", but this run has threads " +
                        std::to_string(im.threads));
    im.chains.push_back(stages_build(pipeline.stages, im.model.vision.encoder_shape(), &im.decoder_shape));
    return int(im.chains.size()) - 1;
}

void Captioner::use_stages(int chain) {
    Impl& im = *impl_;
    if (chain < 0 || chain >= int(im.chains.size()))
        fail("caption", "no stage chain " + std::to_string(chain) + " (" + std::to_string(im.chains.size()) + " built)");
    im.stage_ptrs.clear();
    for (auto& s : im.chains[size_t(chain)]) im.stage_ptrs.push_back(s.get());
    im.encoded = false;
}

int Captioner::stage_chains() const { return int(impl_->chains.size()); }

Captioner::~Captioner() = default;
Captioner::Captioner(Captioner&&) noexcept = default;
Captioner& Captioner::operator=(Captioner&&) noexcept = default;

int64_t Captioner::input_floats() const {
    return 3 * int64_t(impl_->model.preprocess.crop_height) * impl_->model.preprocess.crop_width;
}

void Captioner::load_image(const std::string& path, float* pixels) const {
    clip_preprocess_image(image_decode_file(path), impl_->model.preprocess, pixels);
}

Caption Captioner::caption_file(const std::string& image_path, const GenerateOptions& options,
                                const std::function<void(const std::string&)>& on_text) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<float> pixels(static_cast<size_t>(input_floats()));
    load_image(image_path, pixels.data());
    const double preprocess = ms_since(t0);
    Caption c = caption_pixels(pixels.data(), options, on_text);
    c.ms_preprocess = preprocess;
    c.ms_total += preprocess;
    return c;
}

void Captioner::encode_pixels(const float* pixels) {
    Impl& im = *impl_;
    const auto t0 = std::chrono::steady_clock::now();
    Ledger vision_ledger;
    im.visual = llava_encode_image(im.model, im.vision, pixels, im.stage_ptrs.data(), int(im.stage_ptrs.size()),
                                   &vision_ledger);
    im.macs_projector = vision_ledger.by_component(Component::projector);
    im.macs_vision = vision_ledger.total() - im.macs_projector;
    im.ms_vision = ms_since(t0);
    im.encoded = true;
}

Caption Captioner::caption_pixels(const float* pixels, const GenerateOptions& o,
                                  const std::function<void(const std::string&)>& on_text) {
    encode_pixels(pixels);
    return generate(o, on_text);
}

Caption Captioner::generate(const GenerateOptions& o, const std::function<void(const std::string&)>& on_text) {
    Impl& im = *impl_;
    const LlavaModel& m = im.model;
    const LlamaConfig& tc = m.cfg.text;
    if (!im.encoded) fail("caption", "no image encoded before generate()");
    if (o.max_new_tokens < 1) fail("caption", "--max-new-tokens must be at least 1");
    Sampler sampler({o.temperature, o.top_k, o.top_p, o.seed}, tc.vocab);
    Caption c;
    // Times count from the image's encoding, as if this request had encoded it.
    const auto t_start = std::chrono::steady_clock::now();
    const double vision_ms = im.ms_vision;
    auto since_start = [&] { return vision_ms + ms_since(t_start); };
    for (Stage* st : im.stage_ptrs) st->begin_request();
    const int64_t visual = im.visual;
    c.visual_tokens = visual;
    c.macs_projector = im.macs_projector;
    c.macs_vision = im.macs_vision;
    c.ms_vision = vision_ms;

    // Prompt: the image token expanded to the visual tokens passed on.
    const std::vector<int32_t> ids = llava_prompt_ids(m, llava_prompt_text(o.prompt), visual);
    const int64_t T = int64_t(ids.size());
    c.prompt_tokens = T;
    const int64_t capacity = std::min<int64_t>(T + o.max_new_tokens, tc.max_positions);
    if (T >= capacity)
        fail("caption", "the prompt (" + std::to_string(T) + " tokens) leaves no room in the model's context of " +
                            std::to_string(tc.max_positions));
    if (im.decoder.capacity < capacity || im.decoder.max_step < T) llama_state_init(im.decoder, m.text, capacity, T);
    llama_state_reset(im.decoder);
    im.embeds.resize(size_t(T * tc.hidden));
    llava_embed_prompt(m, ids, im.vision.features, visual, im.embeds.data());
    im.positions.resize(size_t(T));
    bool original = false;
    for (Stage* st : im.stage_ptrs) original |= st->keeps_original_positions();
    llava_prompt_positions(m, ids, original ? &im.vision.slots : nullptr, im.positions.data());
    const int32_t next_position = im.positions.back() + 1;

    const auto t_prefill = std::chrono::steady_clock::now();
    Ledger prefill_ledger;
    DecoderRun run;
    run.stages = im.stage_ptrs.data(), run.stage_count = int(im.stage_ptrs.size());
    run.prefill = true, run.image_start = image_start_of(ids, m.cfg.image_token_id), run.image_count = visual;
    llama_forward(m.text, im.decoder, im.embeds.data(), im.positions.data(), T, &prefill_ledger, &run);
    run.prefill = false, run.image_start = run.image_count = 0;
    c.decoder_tokens = im.decoder.prefill_tokens;
    c.decoder_visual_tokens = im.decoder.prefill_visual;

    // A contrastive stream: the prompt with only the stage's chosen visual
    // tokens (contiguous positions), its own cache, run alongside.
    const ContrastiveDecoding* contrast = nullptr;
    for (Stage* st : im.stage_ptrs)
        if (!contrast) contrast = st->contrastive_decoding();
    if (contrast) {
        const int64_t d = tc.hidden;
        im.contrast_features.clear();
        // A visual token's slot is its first patch, shifted by the CLS token when it is passed on too.
        const int32_t cls_shift = m.cfg.select_strategy == "default" ? 0 : m.vision.hp.prefix();
        for (int32_t patch : contrast->visual_patches) {  // those still passed on after any pruning
            const auto at = std::find(im.vision.slots.begin(), im.vision.slots.end(), patch + cls_shift);
            if (at == im.vision.slots.end()) continue;
            const float* row = im.vision.features + (at - im.vision.slots.begin()) * d;
            im.contrast_features.insert(im.contrast_features.end(), row, row + d);
        }
        const int64_t kept = int64_t(im.contrast_features.size()) / d;
        if (kept == 0) fail("damro", "none of the outlier tokens reached the decoder (pruned by an earlier stage)");
        const std::vector<int32_t> cids = llava_prompt_ids(m, llava_prompt_text(o.prompt), kept);
        const int64_t cT = int64_t(cids.size());
        const int64_t ccap = std::min<int64_t>(cT + o.max_new_tokens, tc.max_positions);
        if (im.contrast.capacity < ccap || im.contrast.max_step < cT) llama_state_init(im.contrast, m.text, ccap, cT);
        llama_state_reset(im.contrast);
        im.contrast_embeds.resize(size_t(cT * d));
        llava_embed_prompt(m, cids, im.contrast_features.data(), kept, im.contrast_embeds.data());
        im.contrast_positions.resize(size_t(cT));
        llava_prompt_positions(m, cids, nullptr, im.contrast_positions.data());
        llama_forward(m.text, im.contrast, im.contrast_embeds.data(), im.contrast_positions.data(), cT, &prefill_ledger);
        im.mixed_logits.resize(size_t(tc.vocab));
        c.contrast_visual_tokens = kept;
    }
    auto step_logits = [&]() -> const float* {
        if (!contrast) return im.decoder.logits;
        contrastive_logits(im.decoder.logits, im.contrast.logits, tc.vocab, contrast->alpha, contrast->beta,
                        im.mixed_logits.data());
        return im.mixed_logits.data();
    };
    c.macs_prefill = prefill_ledger.total();
    c.first_logits_top5 = top_logits(step_logits(), tc.vocab, 5);
    c.ms_prefill = ms_since(t_prefill);

    // Decode: one token per step until a stop token, the budget or the context ends.
    const auto t_decode = std::chrono::steady_clock::now();
    Ledger decode_ledger;
    std::vector<float> embed(static_cast<size_t>(tc.hidden));
    TokenStream stream(*m.tokenizer, true);
    c.stop_reason = "max_new_tokens";
    for (int step = 0; step < o.max_new_tokens; ++step) {
        const int32_t next = sampler.next(step_logits());
        c.token_ids.push_back(next);
        if (step == 0) c.ms_first_token = since_start();
        const bool stop = o.stop_at_eos && std::find(m.cfg.eos_ids.begin(), m.cfg.eos_ids.end(), next) != m.cfg.eos_ids.end();
        if (on_text && !stop) {
            const std::string piece = stream.push(next);
            if (!piece.empty()) on_text(piece);
        }
        if (stop) {
            c.stop_reason = "eos";
            break;
        }
        if (step + 1 == o.max_new_tokens) break;
        if (T + step + 1 > capacity) {  // only when max_position_embeddings clipped the budget
            c.stop_reason = "context_full";
            break;
        }
        llama_embed(m.text, &next, 1, embed.data());
        const int32_t pos = next_position + step;
        llama_forward(m.text, im.decoder, embed.data(), &pos, 1, &decode_ledger, &run);
        if (contrast) {
            const int32_t cpos = im.contrast_positions.back() + 1 + step;
            llama_forward(m.text, im.contrast, embed.data(), &cpos, 1, &decode_ledger);
        }
    }
    c.macs_decode = decode_ledger.total();
    c.ms_decode = ms_since(t_decode);
    c.text = m.tokenizer->decode(c.token_ids, true);
    if (on_text) {
        const std::string rest = stream.finish();
        if (!rest.empty()) on_text(rest);
    }
    c.ms_total = since_start();
    return c;
}

const std::string& Captioner::model_dir() const { return impl_->model.dir; }
int Captioner::threads() const { return impl_->threads; }

std::string Captioner::description() const {
    const LlavaModel& m = impl_->model;
    const LlavaConfig& c = m.cfg;
    return "LLaVA: CLIP " + std::to_string(c.vision.layers) + "x" + std::to_string(c.vision.hidden) + " /" +
           std::to_string(c.vision.patch) + " @" + std::to_string(c.vision.image_size) + " (runs " +
           std::to_string(m.vision_blocks) + " blocks) -> LLaMA " + std::to_string(c.text.layers) + "x" +
           std::to_string(c.text.hidden) + " heads " + std::to_string(c.text.heads) + "/" +
           std::to_string(c.text.kv_heads) + ", decoder " + dtype_name(m.decoder_dtype) + ", " +
           std::to_string(m.parameters) + " parameters, tokenizer " + m.tokenizer->kind() + ", names " + m.layout;
}

}  // namespace tessera
