#include "tessera/classifier.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "io/image.h"
#include "models/vit.h"
#include "io/preprocess.h"
#include "pipeline/config.h"
#include "pipeline/visualize.h"
#include "tessera/error.h"
#include "tessera/threads.h"

namespace tessera {

struct Classifier::Impl {
    VitModel model;
    VitState state;
    std::vector<std::unique_ptr<Stage>> stages;
    std::vector<Stage*> stage_ptrs;
    std::vector<float> logits;
    Ledger ledger;
    int max_batch = 1;
};

namespace {
PipelineSpec spec_of(const ClassifierOptions& options) {
    PipelineSpec spec;
    if (!options.pipeline.empty()) spec = pipeline_read(options.pipeline);
    if (!options.model.empty()) spec.model = options.model;
    if (spec.model.empty())
        fail(options.pipeline.empty() ? std::string("classifier") : options.pipeline,
             "no model given (use --model or a 'model' key)");
    if (!options.dtype.empty()) spec.dtype = options.dtype, spec.dtype_from = "--dtype";
    return spec;
}
}  // namespace

Classifier::Classifier(const ClassifierOptions& options)
    : Classifier(spec_of(options), options.threads, options.max_batch) {}

Classifier::Classifier(const PipelineSpec& spec, int threads, int max_batch) : impl_(std::make_unique<Impl>()) {
    threads_init(threads > 0 ? threads : spec.threads);
    impl_->max_batch = max_batch > 0 ? max_batch : spec.batch;
    vit_load(impl_->model, model_resolve(spec.model), vit_matrix_dtype(spec.dtype, spec.dtype_from));
    impl_->stages = stages_build(spec.stages, impl_->model.encoder_shape(), nullptr);
    for (auto& s : impl_->stages) impl_->stage_ptrs.push_back(s.get());
    vit_state_init(impl_->state, impl_->model, impl_->max_batch);
    impl_->logits.resize(size_t(impl_->max_batch) * size_t(std::max(1, impl_->model.hp.num_classes)));
}

Classifier::~Classifier() = default;
const char* Classifier::dtype() const { return impl_->model.matrix_dtype == DType::bf16 ? "bf16" : "f32"; }
const char* Classifier::linear_path() const { return vit_linear_path(impl_->model); }
Classifier::Classifier(Classifier&&) noexcept = default;
Classifier& Classifier::operator=(Classifier&&) noexcept = default;

void Classifier::load_image(const std::string& path, float* pixels) const {
    preprocess_image(image_decode_file(path), impl_->model.preprocess, pixels);
}

int64_t Classifier::input_floats() const { return int64_t(3) * impl_->model.hp.img_h * impl_->model.hp.img_w; }

std::vector<Classification> Classifier::classify(const float* pixels, int batch, int top_k) {
    Impl& m = *impl_;
    const int classes = m.model.hp.num_classes;
    if (classes == 0) fail(m.model.dir, "model has no classification head (num_classes 0)");
    m.ledger.reset();
    auto start = std::chrono::steady_clock::now();
    vit_forward(m.model, m.state, pixels, batch, m.stage_ptrs.data(), int(m.stage_ptrs.size()), &m.ledger,
                m.logits.data());
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();

    std::vector<Classification> out(static_cast<size_t>(batch));
    std::vector<int> order(static_cast<size_t>(classes));
    std::vector<double> probs(static_cast<size_t>(classes));
    const int k = std::min(top_k, classes);
    for (int b = 0; b < batch; ++b) {
        const float* z = m.logits.data() + int64_t(b) * classes;
        double zmax = *std::max_element(z, z + classes), sum = 0.0;
        for (int i = 0; i < classes; ++i) sum += probs[size_t(i)] = std::exp(double(z[i]) - zmax);
        std::iota(order.begin(), order.end(), 0);
        // Highest logit first; ties to the lower class index.
        std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int a, int c) {
            return z[a] > z[c] || (z[a] == z[c] && a < c);
        });
        Classification& c = out[size_t(b)];
        for (int i = 0; i < k; ++i) c.top.push_back({order[size_t(i)], float(probs[size_t(order[size_t(i)])] / sum)});
        c.macs = m.ledger.total() / uint64_t(batch);
        c.ms = ms / batch;
        c.tokens = m.state.tokens_entering_block;
        c.logits.assign(z, z + classes);
    }
    return out;
}

Classification Classifier::classify_file(const std::string& path, int top_k) {
    std::vector<float> pixels(static_cast<size_t>(input_floats()));
    load_image(path, pixels.data());
    return classify(pixels.data(), 1, top_k)[0];
}

Classification Classifier::classify_file_visualized(const std::string& path, int top_k, const std::string& png_path) {
    const Image image = image_decode_file(path);
    std::vector<float> pixels(static_cast<size_t>(input_floats()));
    preprocess_image(image, impl_->model.preprocess, pixels.data());
    impl_->state.record_trace = true;
    Classification c = classify(pixels.data(), 1, top_k)[0];
    impl_->state.record_trace = false;
    const VitHparams& hp = impl_->model.hp;
    visualize_token_fates(preprocess_geometry(image, impl_->model.preprocess), hp.grid_h(), hp.grid_w(), hp.patch,
                          impl_->state.trace[0], png_path);
    return c;
}

const std::string& Classifier::model_dir() const { return impl_->model.dir; }
const std::string& Classifier::architecture() const { return impl_->model.architecture; }
int Classifier::num_classes() const { return impl_->model.hp.num_classes; }
int Classifier::max_batch() const { return impl_->max_batch; }
int Classifier::depth() const { return impl_->model.hp.depth; }
int64_t Classifier::parameters() const { return impl_->model.parameters; }
int64_t Classifier::tensor_count() const { return impl_->model.tensor_count; }
int Classifier::threads() const { return threads_count(); }
const Ledger& Classifier::last_ledger() const { return impl_->ledger; }

}  // namespace tessera
