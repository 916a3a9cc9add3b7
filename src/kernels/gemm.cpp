#include "kernels/gemm.h"

#include <array>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include <oneapi/dnnl/dnnl.hpp>

namespace tessera {

namespace {

using dnnl::memory;

dnnl::engine& cpu_engine() {
    static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
    return engine;
}

// Everything that distinguishes one primitive from another.
struct GemmKey {
    std::array<int64_t, 15> v;
    bool operator==(const GemmKey& o) const { return v == o.v; }
};
struct GemmKeyHash {
    size_t operator()(const GemmKey& k) const {
        size_t h = 1469598103934665603ull;
        for (int64_t x : k.v) h = (h ^ size_t(x)) * 1099511628211ull;
        return h;
    }
};

GemmKey key_of(const GemmDesc& d) {
    int32_t alpha_bits;
    static_assert(sizeof(alpha_bits) == sizeof(d.alpha));
    std::memcpy(&alpha_bits, &d.alpha, 4);
    return {{d.batch, d.m, d.k, d.n, d.a_stride[0], d.a_stride[1], d.a_stride[2], d.b_stride[0], d.b_stride[1],
             d.b_stride[2], d.c_stride[0], d.c_stride[1], d.c_stride[2],
             int64_t(alpha_bits), int64_t(d.bias) | int64_t(d.epilogue) << 1}};
}

struct GemmPrimitive {
    dnnl::matmul matmul;
    memory::desc a, b, bias, c;
};

std::mutex cache_mutex;
std::unordered_map<GemmKey, GemmPrimitive, GemmKeyHash> cache;
int64_t created = 0;

GemmPrimitive make_primitive(const GemmDesc& d) {
    auto dims3 = [](int64_t b, int64_t r, int64_t c) { return memory::dims{b, r, c}; };
    auto strides3 = [](const int64_t* s) { return memory::dims{s[0], s[1], s[2]}; };
    GemmPrimitive p;
    p.a = memory::desc(dims3(d.batch, d.m, d.k), memory::data_type::f32, strides3(d.a_stride));
    p.b = memory::desc(dims3(d.batch, d.k, d.n), memory::data_type::f32, strides3(d.b_stride));
    p.c = memory::desc(dims3(d.batch, d.m, d.n), memory::data_type::f32, strides3(d.c_stride));
    if (d.bias) p.bias = memory::desc(dims3(1, 1, d.n), memory::data_type::f32, memory::format_tag::abc);

    dnnl::primitive_attr attr;
    dnnl::post_ops ops;
    if (d.epilogue == Epilogue::gelu_erf) ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_gelu_erf, 0.0f, 0.0f);
    if (d.epilogue == Epilogue::residual) ops.append_sum(1.0f);
    attr.set_post_ops(ops);
    if (d.alpha != 1.0f) attr.set_output_scales(0, {d.alpha});

    dnnl::matmul::desc desc = d.bias ? dnnl::matmul::desc(p.a, p.b, p.bias, p.c) : dnnl::matmul::desc(p.a, p.b, p.c);
    p.matmul = dnnl::matmul(dnnl::matmul::primitive_desc(desc, attr, cpu_engine()));
    return p;
}

const GemmPrimitive& primitive_for(const GemmDesc& d) {
    GemmKey key = key_of(d);
    std::lock_guard lock(cache_mutex);
    auto it = cache.find(key);
    if (it == cache.end()) {
        it = cache.emplace(key, make_primitive(d)).first;
        ++created;
    }
    return it->second;
}

}  // namespace

void gemm(Ledger* ledger, const GemmDesc& d, const float* a, const float* b, const float* bias, float* c) {
    const GemmPrimitive& p = primitive_for(d);
    dnnl::engine& engine = cpu_engine();
    // One stream per thread: callers may run products from parallel regions.
    thread_local dnnl::stream stream(engine);
    std::unordered_map<int, memory> args = {
        {DNNL_ARG_SRC, memory(p.a, engine, const_cast<float*>(a))},
        {DNNL_ARG_WEIGHTS, memory(p.b, engine, const_cast<float*>(b))},
        {DNNL_ARG_DST, memory(p.c, engine, c)},
    };
    if (d.bias) args.emplace(DNNL_ARG_BIAS, memory(p.bias, engine, const_cast<float*>(bias)));
    p.matmul.execute(stream, args);
    stream.wait();
    if (ledger) ledger->add(uint64_t(d.batch * d.m * d.k * d.n));
}

void linear(Ledger* ledger, float* y, const float* x, const float* weight, const float* bias, int64_t rows,
            int64_t in, int64_t out, Epilogue epilogue) {
    GemmDesc d;
    d.m = rows;
    d.k = in;
    d.n = out;
    d.a_stride[0] = rows * in, d.a_stride[1] = in, d.a_stride[2] = 1;
    d.b_stride[0] = in * out, d.b_stride[1] = 1, d.b_stride[2] = in;  // W^T without a copy
    d.c_stride[0] = rows * out, d.c_stride[1] = out, d.c_stride[2] = 1;
    d.bias = bias != nullptr;
    d.epilogue = epilogue;
    gemm(ledger, d, x, weight, bias, y);
}

int64_t gemm_primitives_created() {
    std::lock_guard lock(cache_mutex);
    return created;
}

}  // namespace tessera
