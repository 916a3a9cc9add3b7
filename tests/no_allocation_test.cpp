// The forward passes allocate nothing once warm: every buffer they use lives
// in the state made beforehand (an Arena) or was sized on the first call.
// This binary's operator new counts the allocations made while a test asks
// it to, on every thread, and tells Tessera's own from those oneDNN makes
// inside its execute() (its argument maps, on every call: not ours to
// remove).
#include <gtest/gtest.h>

#include <dlfcn.h>
#include <execinfo.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "models/llava.h"
#include "models/vit.h"
#include "pipeline/config.h"
#include "stages/evit.h"
#include "stages/tome.h"
#include "tessera/flops.h"
#include "test_support.h"

namespace {

std::atomic<bool> counting{false};
std::atomic<int64_t> ours{0}, onednns{0};
thread_local bool in_hook = false;  // backtrace() may allocate itself

// Whether a frame of the calling stack lies in oneDNN's library.
bool called_from_onednn() {
    void* frames[48];
    const int n = backtrace(frames, 48);
    for (int i = 0; i < n; ++i) {
        Dl_info info;
        if (dladdr(frames[i], &info) && info.dli_fname && std::strstr(info.dli_fname, "libdnnl")) return true;
    }
    return false;
}

void* allocate(std::size_t n, std::size_t alignment) {
    if (counting.load(std::memory_order_relaxed) && !in_hook) {
        in_hook = true;
        (called_from_onednn() ? onednns : ours).fetch_add(1, std::memory_order_relaxed);
        in_hook = false;
    }
    if (n == 0) n = 1;
    if (alignment <= alignof(std::max_align_t)) return std::malloc(n);
    return std::aligned_alloc(alignment, (n + alignment - 1) / alignment * alignment);
}

}  // namespace

void* operator new(std::size_t n) {
    if (void* p = allocate(n, 0)) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return allocate(n, 0); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return allocate(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) {
    if (void* p = allocate(n, std::size_t(a))) return p;
    throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) { return operator new(n, a); }
// GCC pairs these frees with the library's operator new, not the one above,
// and warns of a mismatch (-Wmismatched-new-delete) that is not there.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace tessera {
namespace {

// Allocations made by f outside oneDNN (and, in *inside, within it).
int64_t allocations_in(const std::function<void()>& f, int64_t* inside = nullptr) {
    ours = 0, onednns = 0;
    counting = true;
    f();
    counting = false;
    if (inside) *inside = onednns.load();
    return ours.load();
}

TEST(NoAllocation, CounterSeesAnAllocation) {
    EXPECT_EQ(allocations_in([] {
                  std::vector<float> v(1000);
                  EXPECT_EQ(v.size(), 1000u);
              }),
              1);
}

// The ViT's linear layers as this CPU chooses them, and forced onto oneDNN
// (what AVX-512/AMX hosts run: oneDNN's products and attention form).
struct VitCase {
    DType dtype;
    bool onednn;
};

class VitForwardAllocates : public ::testing::TestWithParam<VitCase> {};

TEST_P(VitForwardAllocates, NothingOnceWarmWithOrWithoutStages) {
    const test::ScopedEnv onednn("TESSERA_LINEAR", GetParam().onednn ? "onednn" : std::getenv("TESSERA_LINEAR"));
    const std::string dir = test::temp_dir() + "/noalloc-vit";
    test::write_tiny_vit(dir, test::TinyVit{64, 8, 32, 4, 2, 10, 11});
    VitModel model;
    vit_load(model, dir, GetParam().dtype);
    VitState state;
    vit_state_init(state, model, 2);
    const auto pixels = test::random_values(2 * 3 * 64 * 64, 12);
    std::vector<float> logits(2 * 10);

    YamlMap evit_params(YAML::Load("{blocks: [1, 2], keep_rate: 0.5}"), "test.yaml", "stages[0].evit");
    EvitStage evit(evit_params);
    // ToMe: proportional attention (a key bias and token sizes per block) and
    // its matching product through oneDNN.
    YamlMap tome_params(YAML::Load("{r: 6}"), "test.yaml", "stages[0].tome");
    TomeStage tome(tome_params);
    struct Chain {
        const char* name;
        std::vector<Stage*> stages;
    };
    const Chain chains[] = {{"no stage", {}}, {"evit", {&evit}}, {"tome", {&tome}}, {"tome, evit", {&tome, &evit}}};
    for (const Chain& chain : chains) {
        for (Stage* s : chain.stages) s->check(model.encoder_shape());
        Ledger ledger;
        auto forward = [&] {
            ledger.reset();
            vit_forward(model, state, pixels.data(), 2, chain.stages.data(), int(chain.stages.size()), &ledger,
                        logits.data());
        };
        forward();  // warm: first-use buffers, primitives, thread teams
        forward();
        int64_t in_onednn = 0;
        EXPECT_EQ(allocations_in(forward, &in_onednn), 0) << chain.name << " (and " << in_onednn << " inside oneDNN)";
        EXPECT_GT(ledger.total(), 0u);
    }
}

INSTANTIATE_TEST_SUITE_P(Paths, VitForwardAllocates,
                         ::testing::Values(VitCase{DType::f32, false}, VitCase{DType::bf16, false},
                                           VitCase{DType::f32, true}, VitCase{DType::bf16, true}),
                         [](const auto& info) {
                             return std::string(dtype_name(info.param.dtype)) + (info.param.onednn ? "_onednn" : "");
                         });

// The LLaVA decoder: a prefill and decode steps on a warm cache, f32 and
// 16-bit weights read in place.
TEST(DecoderAllocates, NothingInPrefillOrDecodeOnceWarm) {
    for (const char* dtype : {"f32", "bf16"}) {
        LlavaModel m;
        llava_load(m, test::source_path("tests/fixtures/llava/tiny-llava-gqa"), {.dtype = dtype, .load_tokenizer = false});
        const int64_t T = 23, d = m.cfg.text.hidden;
        std::vector<int32_t> ids(T), pos(T);
        for (int64_t i = 0; i < T; ++i) ids[size_t(i)] = int32_t((i * 37 + 5) % 600), pos[size_t(i)] = int32_t(i);
        std::vector<float> embeds(static_cast<size_t>(T * d));
        llama_embed(m.text, ids.data(), T, embeds.data());
        LlamaState state;
        llama_state_init(state, m.text, T + 8, T);
        Ledger ledger;
        auto run = [&] {
            llama_state_reset(state);
            ledger.reset();
            llama_forward(m.text, state, embeds.data(), pos.data(), T - 3, &ledger);  // prefill
            for (int64_t t = T - 3; t < T; ++t)                                       // decode steps
                llama_forward(m.text, state, embeds.data() + t * d, pos.data() + t, 1, &ledger);
        };
        run();
        run();
        int64_t in_onednn = 0;
        EXPECT_EQ(allocations_in(run, &in_onednn), 0) << dtype << " (and " << in_onednn << " inside oneDNN)";
        EXPECT_GT(ledger.total(), 0u);
    }
}

}  // namespace
}  // namespace tessera
