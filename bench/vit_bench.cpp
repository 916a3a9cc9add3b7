// The ViT forward pass alone, timed like `tessera bench --format json`, in a
// binary that needs only oneDNN and OpenMP at run time (no OpenCV, no
// yaml-cpp): it can be copied to another machine, e.g. to measure an
// AVX-512 host against ONNX Runtime there (bench/device/run.sh).
//
//   build/tessera_vit_bench --model DIR [--dtype f32|bf16] [--threads T]
//                           [--batch B] [--iters N] [--warmup W] [--serve]
//
// Prints one JSON object: {ms_p50, ms_p90, gmacs, batch, threads, dtype,
// linear ("packed" or "onednn": how this CPU runs the linear layers), iters,
// model, peak_rss_mib, check}. The input is fixed pseudo-random pixels.
// check: the same model in f32 on the packed kernel (the path every parity
// test covers) run on the same input, and the largest |logit difference|
// from it relative to the largest |logit|, so a figure from another path
// (oneDNN, bf16) comes with evidence that it computes the same thing.
//
// --serve: after the warm-up and the check, print that object without the
// timings and then answer bench/paired.py: for each stdin line "W N", run W
// untimed and N timed forwards and print {"ms":[...]}; stop at end of input.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "models/vit.h"
#include "cli/serve.h"
#include "tessera/error.h"
#include "tessera/flops.h"
#include "tessera/memory.h"
#include "tessera/stats.h"
#include "tessera/threads.h"

int main(int argc, char** argv) {
    std::string model_dir, dtype = "f32";
    int threads = 0, batch = 1, iters = 50, warmup = 5;
    bool serve = false;
    try {
        for (int i = 1; i < argc; ++i) {
            const std::string k = argv[i];
            if (k == "--serve") {
                serve = true;
                continue;
            }
            if (i + 1 >= argc) throw std::runtime_error(k + " needs a value");
            const std::string v = argv[++i];
            auto number = [&](int lo, int hi) {
                char* end = nullptr;
                const long n = std::strtol(v.c_str(), &end, 10);
                if (v.empty() || *end || n < lo || n > hi)
                    throw std::runtime_error(k + ": expected an integer in " + std::to_string(lo) + ".." +
                                             std::to_string(hi) + ", got '" + v + "'");
                return int(n);
            };
            if (k == "--model") model_dir = v;
            else if (k == "--dtype") dtype = v;
            else if (k == "--threads") threads = number(0, 1024);
            else if (k == "--batch") batch = number(1, 4096);
            else if (k == "--iters") iters = number(1, 1000000);
            else if (k == "--warmup") warmup = number(0, 1000000);
            else throw std::runtime_error("unknown argument " + k);
        }
        if (model_dir.empty()) throw std::runtime_error("--model is required");

        tessera::threads_init(threads);
        tessera::VitModel model;
        tessera::vit_load(model, model_dir, tessera::vit_matrix_dtype(dtype, "--dtype"));
        tessera::VitState state;
        tessera::vit_state_init(state, model, batch);
        const size_t per_image = size_t(3) * size_t(model.hp.img_h) * size_t(model.hp.img_w);
        std::vector<float> pixels(per_image * size_t(batch));
        std::mt19937 rng(12345);
        std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
        for (float& p : pixels) p = dist(rng);
        std::vector<float> logits(size_t(batch) * size_t(std::max(1, model.hp.num_classes)) +
                                  size_t(batch) * size_t(model.hp.dim));
        tessera::Ledger ledger;
        auto forward = [&] {
            ledger.reset();
            tessera::vit_forward(model, state, pixels.data(), batch, nullptr, 0, &ledger, logits.data());
        };
        // Serving, one forward at least: the ledger then holds the MACs reported below.
        const std::vector<double> ms = serve ? time_calls(std::max(warmup, 1), 0, forward)
                                             : time_calls(warmup, iters, forward);
        const double peak_mib = double(tessera::peak_resident_bytes()) / double(1 << 20);  // before the check
        // The reference: f32 in panels (TESSERA_LINEAR=packed while it loads).
        double check = 0.0;
        {
            const char* chosen = std::getenv("TESSERA_LINEAR");
            const std::string saved = chosen ? chosen : "";
            setenv("TESSERA_LINEAR", "packed", 1);
            tessera::VitModel ref;
            tessera::vit_load(ref, model_dir, tessera::DType::f32);
            if (chosen) setenv("TESSERA_LINEAR", saved.c_str(), 1);
            else unsetenv("TESSERA_LINEAR");
            tessera::VitState ref_state;
            tessera::vit_state_init(ref_state, ref, batch);
            std::vector<float> ref_logits(logits.size());
            tessera::vit_forward(ref, ref_state, pixels.data(), batch, nullptr, 0, nullptr, ref_logits.data());
            tessera::vit_forward(model, state, pixels.data(), batch, nullptr, 0, nullptr, logits.data());
            double worst = 0.0, scale = 0.0;
            const size_t n = size_t(batch) * size_t(std::max(1, model.hp.num_classes));
            for (size_t i = 0; i < n; ++i) {
                worst = std::max(worst, double(std::abs(logits[i] - ref_logits[i])));
                scale = std::max(scale, double(std::abs(ref_logits[i])));
            }
            check = worst / std::max(scale, 1e-30);
        }
        const std::string facts = "\"gmacs\":" + std::to_string(double(ledger.total()) * 1e-9 / batch) +
                                  ",\"batch\":" + std::to_string(batch) +
                                  ",\"threads\":" + std::to_string(tessera::threads_count()) + ",\"dtype\":\"" +
                                  (model.matrix_dtype == tessera::DType::bf16 ? "bf16" : "f32") +
                                  "\",\"linear\":\"" + tessera::vit_linear_path(model) + "\",\"model\":\"" +
                                  model_dir + "\",\"peak_rss_mib\":" + std::to_string(peak_mib) + ",\"check\":";
        if (!serve) {
            std::printf("{\"ms_p50\":%.6f,\"ms_p90\":%.6f,\"iters\":%d,%s%.3g}\n", tessera::percentile(ms, 50),
                        tessera::percentile(ms, 90), iters, facts.c_str(), check);
            return 0;
        }
        std::printf("{%s%.3g}\n", facts.c_str(), check);
        serve_paired_blocks(forward);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tessera_vit_bench: error: %s\n", e.what());
        return 1;
    }
}
