#include "kernels/onednn_linear.h"

#include <cassert>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "kernels/onednn_engine.h"
#include "kernels/primitive_cache.h"

#include "kernels/packed_gemm.h"
#include "tessera/error.h"

namespace tessera {

namespace {

using dnnl::memory;

memory::data_type onednn_type(DType dtype) { return dtype == DType::bf16 ? memory::data_type::bf16 : memory::data_type::f32; }

// Rows the weights layout is chosen for. oneDNN's blocked weight formats
// depend on k, n, the data type and the ISA, not on the row count; every
// product then runs on the stored layout whatever its rows.
constexpr int64_t layout_rows = 256;

std::mutex mutex;
std::deque<memory::desc> layouts;  // every layout handed out; deque: stable addresses

const memory::desc* keep_layout(const memory::desc& d) {
    for (const memory::desc& kept : layouts)
        if (kept == d) return &kept;
    layouts.push_back(d);
    return &layouts.back();
}

dnnl::matmul::primitive_desc matmul_desc(int64_t rows, int64_t in, int64_t out, DType dtype, const memory::desc& weights,
                                         bool bias, Epilogue epilogue, DType dst_type = DType::f32) {
    const memory::desc src({rows, in}, onednn_type(dtype), memory::format_tag::ab);
    const memory::desc dst({rows, out}, onednn_type(dst_type), memory::format_tag::ab);
    dnnl::primitive_attr attr = onednn_attr();
    dnnl::post_ops ops;
    if (epilogue == Epilogue::gelu_erf) ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_gelu_erf, 0.0f, 0.0f);
    if (epilogue == Epilogue::residual) ops.append_sum(1.0f);
    attr.set_post_ops(ops);
    const memory::desc bias_md({1, out}, memory::data_type::f32, memory::format_tag::ab);
    const dnnl::matmul::desc desc = bias ? dnnl::matmul::desc(src, weights, bias_md, dst) : dnnl::matmul::desc(src, weights, dst);
    return dnnl::matmul::primitive_desc(desc, attr, onednn_engine());
}

// A matmul whose implementation is oneDNN's reference code is far slower
// than the packed kernel: not worth choosing.
bool fast_implementation(const dnnl::matmul::primitive_desc& pd) {
    const std::string impl = pd.impl_info_str();
    return impl.find("ref") == std::string::npos;
}

struct Product {
    dnnl::matmul matmul;
    memory::desc src, weights, bias, dst;
    bool convert_src = false;  // bf16 weights, f32 x: x -> bf16 first
    dnnl::reorder to_bf16;
    memory::desc src_f32;
};

using ProductKey = std::tuple<int64_t, int64_t, int64_t, int, int, bool, const void*>;
struct ProductKeyHash {
    size_t operator()(const ProductKey& k) const {
        size_t h = 1469598103934665603ull;
        auto mix = [&](size_t v) { h = (h ^ v) * 1099511628211ull; };
        mix(size_t(std::get<0>(k))), mix(size_t(std::get<1>(k))), mix(size_t(std::get<2>(k)));
        mix(size_t(std::get<3>(k))), mix(size_t(std::get<4>(k))), mix(size_t(std::get<5>(k)));
        mix(reinterpret_cast<size_t>(std::get<6>(k)));
        return h;
    }
};
PrimitiveCache<ProductKey, Product, ProductKeyHash> products(onednn_primitive_cache_capacity);

Product make_product(int64_t rows, int64_t in, int64_t out, DType dtype, const memory::desc* weights, bool bias,
                     Epilogue epilogue, DType src_type, DType dst_type) {
    Product p;
    p.weights = *weights;
    const auto pd = matmul_desc(rows, in, out, dtype, p.weights, bias, epilogue, dst_type);
    p.matmul = dnnl::matmul(pd);
    p.src = pd.src_desc();
    p.dst = pd.dst_desc();
    if (bias) p.bias = memory::desc({1, out}, memory::data_type::f32, memory::format_tag::ab);
    p.convert_src = dtype == DType::bf16 && src_type == DType::f32;
    if (p.convert_src) {
        p.src_f32 = memory::desc({rows, in}, memory::data_type::f32, memory::format_tag::ab);
        p.to_bf16 = dnnl::reorder(
            dnnl::reorder::primitive_desc(onednn_engine(), p.src_f32, onednn_engine(), p.src, onednn_attr()));
    }
    return p;
}

// The product for `rows` rows against weights in layout `weights` (a kept
// descriptor: its address identifies it), from the bounded cache; hold it
// while it runs. Throws dnnl::error where oneDNN has no matmul for it.
std::shared_ptr<const Product> product_for(int64_t rows, int64_t in, int64_t out, DType dtype,
                                           const memory::desc* weights, bool bias, Epilogue epilogue,
                                           DType src_type = DType::f32, DType dst_type = DType::f32) {
    const int io = int(epilogue) | int(src_type) << 4 | int(dst_type) << 8;
    const ProductKey key{rows, in, out, int(dtype), io, bias, weights};
    return products.get(key, [&] { return make_product(rows, in, out, dtype, weights, bias, epilogue, src_type, dst_type); });
}

// y = x · W^T + bias, epilogue, with product p: x converted to bf16 first
// where the product's weights are bf16 and x is f32.
void run_product(const Product& p, void* y, const void* x, const void* weights, const float* bias, int64_t rows,
                 int64_t in) {
    if (p.convert_src) {
        thread_local std::vector<uint16_t> x_bf16;  // grows to the largest product, then stays
        if (x_bf16.size() < size_t(rows * in)) x_bf16.resize(size_t(rows * in));
        onednn_execute(p.to_bf16, {{DNNL_ARG_FROM, &p.src_f32, x}, {DNNL_ARG_TO, &p.src, x_bf16.data()}});
        x = x_bf16.data();
    }
    onednn_execute(p.matmul, {{DNNL_ARG_SRC, &p.src, x},
                              {DNNL_ARG_WEIGHTS, &p.weights, weights},
                              {DNNL_ARG_DST, &p.dst, y},
                              {DNNL_ARG_BIAS, &p.bias, bias}});
}

}  // namespace

bool onednn_linear_chosen(DType dtype) {
    if (const char* force = std::getenv("TESSERA_LINEAR")) {
        const std::string f = force;
        if (f == "packed") return false;
        if (f == "onednn" || f == "onednn-f32") return true;
        if (!f.empty()) fail("TESSERA_LINEAR", "expected packed, onednn or onednn-f32, got '" + f + "'");
    }
    using isa = dnnl::cpu_isa;
    const isa best = dnnl::get_effective_cpu_isa();
    const bool avx512 = best == isa::avx512_core || best == isa::avx512_core_vnni || best == isa::avx512_core_bf16 ||
                        best == isa::avx512_core_amx;
    const bool bf16 = best == isa::avx512_core_bf16 || best == isa::avx512_core_amx;
    return dtype == DType::bf16 ? bf16 : avx512;
}

namespace {

// The fastest of 6 runs each of oneDNN's f32 and bf16 matmuls (inputs in
// that type, f32 output) on a ViT-B layer's shape [256 x 768] x [768 x 768],
// alternating, in milliseconds; 1e30 both where oneDNN has no such matmul.
struct BothMatmuls {
    double f32_ms = 1e30, bf16_ms = 1e30;
};
BothMatmuls time_both_matmuls() {
    constexpr int64_t rows = 256, in = 768, out = 768;
    constexpr int runs = 6;
    struct One {
        OnednnLayout layout;
        std::vector<uint8_t> storage, src;
        void* weights = nullptr;  // in storage, 64-byte aligned
        std::shared_ptr<const Product> product;
    } one[2];
    std::vector<float> w(size_t(out * in)), x(size_t(rows * in)), y(size_t(rows * out));
    for (size_t i = 0; i < w.size(); ++i) w[i] = float(int(i % 13) - 6) * 0.01f;
    for (size_t i = 0; i < x.size(); ++i) x[i] = float(int(i % 7) - 3) * 0.1f;
    for (int d = 0; d < 2; ++d) {
        const DType dtype = d == 0 ? DType::f32 : DType::bf16;
        One& o = one[d];
        o.layout = onednn_weights_layout(out, in, dtype);
        if (!o.layout.desc) return {};
        o.storage.resize(o.layout.bytes + 64);
        o.weights = o.storage.data() + (64 - reinterpret_cast<uintptr_t>(o.storage.data()) % 64) % 64;
        onednn_reorder_weights(w.data(), out, in, o.layout, o.weights);
        o.product = product_for(rows, in, out, dtype, static_cast<const memory::desc*>(o.layout.desc), false,
                                Epilogue::none, dtype, DType::f32);
        o.src.resize(size_t(rows * in) * (dtype == DType::f32 ? 4 : 2));
        if (dtype == DType::f32) std::memcpy(o.src.data(), x.data(), o.src.size());
        else
            for (size_t i = 0; i < x.size(); ++i) reinterpret_cast<uint16_t*>(o.src.data())[i] = f32_to_bf16(x[i]);
    }
    BothMatmuls best;
    for (int r = 0; r <= runs; ++r)
        for (int d = 0; d < 2; ++d) {
            const One& o = one[d];
            const auto start = std::chrono::steady_clock::now();
            onednn_execute(o.product->matmul, {{DNNL_ARG_SRC, &o.product->src, o.src.data()},
                                               {DNNL_ARG_WEIGHTS, &o.product->weights, o.weights},
                                               {DNNL_ARG_DST, &o.product->dst, y.data()}});
            const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
            if (r == 0) continue;  // the first run of each creates its kernels
            double& kept = d == 0 ? best.f32_ms : best.bf16_ms;
            kept = std::min(kept, ms);
        }
    return best;
}

}  // namespace

bool onednn_bf16_products_pay() {
    if (const char* force = std::getenv("TESSERA_LINEAR")) {
        const std::string f = force;
        if (f == "onednn") return true;
        if (f == "onednn-f32" || f == "packed") return false;
    }
    if (!onednn_linear_chosen(DType::bf16)) return false;
    if (onednn_bf16_on_amx()) return true;
    static const bool pays = [] {
        try {
            const BothMatmuls t = time_both_matmuls();
            return t.bf16_ms < onednn_bf16_pays_below * t.f32_ms;
        } catch (const dnnl::error&) {
            return false;  // no bf16 matmul after all
        }
    }();
    return pays;
}

bool onednn_bf16_on_amx() { return dnnl::get_effective_cpu_isa() == dnnl::cpu_isa::avx512_core_amx; }

OnednnLayout onednn_weights_layout(int64_t out, int64_t in, DType dtype) {
    // One query per shape and dtype: a model's blocks repeat the same shapes,
    // and loading asks once to size the weights and once to pack them.
    static std::unordered_map<ProductKey, OnednnLayout, ProductKeyHash> asked;
    const ProductKey key{0, in, out, int(dtype), 0, false, nullptr};
    {
        std::lock_guard lock(mutex);
        if (auto it = asked.find(key); it != asked.end()) return it->second;
    }
    OnednnLayout layout;
    try {
        const memory::desc any({in, out}, onednn_type(dtype), memory::format_tag::any);
        const auto pd = matmul_desc(layout_rows, in, out, dtype, any, true, Epilogue::none);
        if (fast_implementation(pd)) {
            const memory::desc chosen = pd.weights_desc();
            std::lock_guard lock(mutex);
            layout = {keep_layout(chosen), chosen.get_size()};
        }
    } catch (const dnnl::error&) {
        // no matmul for this dtype on this CPU: the packed kernel it is
    }
    std::lock_guard lock(mutex);
    asked.emplace(key, layout);
    return layout;
}

void onednn_reorder_weights(const float* w, int64_t out, int64_t in, const OnednnLayout& layout, void* dst) {
    // W^T [in, out] read in place from PyTorch's [out, in]: format "ba".
    const memory::desc plain({in, out}, memory::data_type::f32, memory::format_tag::ba);
    const memory::desc& target = *static_cast<const memory::desc*>(layout.desc);
    memory from(plain, onednn_engine(), const_cast<float*>(w)), to(target, onednn_engine(), dst);
    dnnl::stream stream(onednn_engine());
    dnnl::reorder(from, to).execute(stream, from, to);
    stream.wait();
}

void onednn_linear(Ledger* ledger, float* y, const float* x, const PackedMatrix& w, const float* bias, int64_t rows,
                   Epilogue epilogue) {
    if (rows > 0) {
        const auto* layout = static_cast<const memory::desc*>(w.onednn_layout);
        const auto p = product_for(rows, w.in, w.out, w.dtype, layout, bias != nullptr, epilogue);
        run_product(*p, y, x, w.data, bias, rows, w.in);
    }
    if (ledger) ledger->add(uint64_t(rows * w.in * w.out));
}

void onednn_linear_bf16_io(Ledger* ledger, void* y, DType y_type, const uint16_t* x, const PackedMatrix& w,
                           const float* bias, int64_t rows, Epilogue epilogue) {
    assert(w.onednn_layout && w.dtype == DType::bf16 && "bf16 activations need bf16 weights on oneDNN");
    if (rows > 0) {
        const auto* layout = static_cast<const memory::desc*>(w.onednn_layout);
        const auto p =
            product_for(rows, w.in, w.out, DType::bf16, layout, bias != nullptr, epilogue, DType::bf16, y_type);
        run_product(*p, y, x, w.data, bias, rows, w.in);
    }
    if (ledger) ledger->add(uint64_t(rows * w.in * w.out));
}

bool onednn_linear_bf16_in_place(float* y, const float* x, const uint16_t* w, int64_t out, int64_t in,
                                 const float* bias, int64_t rows, Epilogue epilogue) {
    if (rows <= 0) return true;
    const memory::desc* plain;
    {
        // W^T [in, out] read in place from PyTorch's [out, in]: format "ba",
        // made once per shape (a descriptor's dims live on the heap: a
        // warm prefill allocates nothing).
        static std::map<std::pair<int64_t, int64_t>, const memory::desc*> plain_of;
        std::lock_guard lock(mutex);
        const auto found = plain_of.find({in, out});
        if (found != plain_of.end()) plain = found->second;
        else
            plain = plain_of[{in, out}] = keep_layout(memory::desc({in, out}, memory::data_type::bf16, memory::format_tag::ba));
    }
    // Shapes oneDNN has no matmul for are remembered, not retried (whatever
    // the row count: what it lacks is an implementation for the types).
    static std::unordered_map<ProductKey, bool, ProductKeyHash> unavailable;
    const ProductKey key{0, in, out, int(DType::bf16), int(epilogue), bias != nullptr, plain};
    {
        std::lock_guard lock(mutex);
        if (unavailable.count(key)) return false;
    }
    std::shared_ptr<const Product> p;
    try {
        p = product_for(rows, in, out, DType::bf16, plain, bias != nullptr, epilogue);
    } catch (const dnnl::error&) {
        std::lock_guard lock(mutex);
        unavailable.emplace(key, true);
        return false;
    }
    run_product(*p, y, x, w, bias, rows, in);
    return true;
}

int64_t onednn_products_cached() { return int64_t(products.size()); }

}  // namespace tessera
