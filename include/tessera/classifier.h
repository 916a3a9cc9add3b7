// Public API: an image classifier (timm ViT / DeiT) with a stage chain.
//
//   tessera::Classifier clf({.model = "path/to/vit_tiny", .pipeline = "pipelines/noop.yaml"});
//   tessera::Classification c = clf.classify_file("cat.jpg", 5);
//   // c.top[0].class_index, c.top[0].prob, c.macs, c.tokens
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tessera/flops.h"

namespace tessera {

struct PipelineSpec;

struct ClassifierOptions {
    std::string model;     // model folder (or name, see model_resolve); overrides the pipeline's
    std::string pipeline;  // pipeline YAML, or "" for the plain model
    int threads = 0;       // 0: the pipeline's setting, else OMP_NUM_THREADS, else all cores
    int max_batch = 0;     // 0: the pipeline's batch setting
    std::string dtype = "";  // weight matrices: f32 or bf16; "": the pipeline's setting, else f32
};

struct Prediction {
    int class_index = -1;
    float prob = 0.0f;
};

struct Classification {
    std::vector<Prediction> top;  // best first
    uint64_t macs = 0;            // multiply-accumulates of this image's forward pass
    double ms = 0.0;              // forward time (batch time / batch), decode and preprocessing excluded
    std::vector<int> tokens;      // token count entering each encoder block
    std::vector<float> logits;    // [num_classes], the head's raw output (multi-label heads read these)
};

class Classifier {
public:
    explicit Classifier(const ClassifierOptions& options);
    // From an already-read pipeline (e.g. the pipeline part of a run config).
    Classifier(const PipelineSpec& spec, int threads, int max_batch);
    ~Classifier();
    Classifier(Classifier&&) noexcept;
    Classifier& operator=(Classifier&&) noexcept;

    // Decodes and preprocesses an image file (the model's pretrained_cfg) into
    // input_floats() floats.
    void load_image(const std::string& path, float* pixels) const;
    int64_t input_floats() const;

    // pixels: batch consecutive preprocessed images.
    std::vector<Classification> classify(const float* pixels, int batch, int top_k);
    Classification classify_file(const std::string& path, int top_k);
    // Like classify_file, and writes a PNG showing each stage's effect on the
    // image's patches (kept, merged, fused, dropped).
    Classification classify_file_visualized(const std::string& path, int top_k, const std::string& png_path);

    const std::string& model_dir() const;
    const std::string& architecture() const;
    int num_classes() const;
    int max_batch() const;
    int depth() const;
    int64_t parameters() const;
    int64_t tensor_count() const;
    int threads() const;
    const char* dtype() const;  // of the weight matrices: "f32" or "bf16"
    // How the linear layers run on this CPU: "onednn" (oneDNN's reordered
    // layout: AVX-512/AMX hosts) or "packed" (the AVX2 panels).
    const char* linear_path() const;
    const Ledger& last_ledger() const;  // MACs of the last classify() call, whole batch

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace tessera
