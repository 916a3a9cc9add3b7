#include "models/weights.h"

#include <algorithm>
#include <cstring>

#include "tessera/error.h"

namespace tessera {

void* WeightStore::alloc_bytes(size_t bytes) {
    constexpr size_t block = size_t(64) << 20;
    const size_t need = bytes + 64;
    if (blocks_.empty() || blocks_.back().capacity() - blocks_.back().used() < need) {
        blocks_.emplace_back();
        blocks_.back().reserve(std::max(block, need));
    }
    bytes_ += bytes;
    return blocks_.back().alloc_bytes(bytes);
}

const SafeTensorsSet::Entry& WeightLoader::get(const std::string& name, const std::vector<int64_t>& shape) {
    const SafeTensorsSet::Entry* e = set_.find(name);
    if (!e) fail(set_.where(), "tensor '" + name + "' not found (config.json and the weights disagree)");
    if (e->info->shape != shape)
        fail(e->file->path(), "tensor '" + name + "' has shape " + shape_string(e->info->shape) + ", expected " +
                                  shape_string(shape) + " from config.json");
    if (!used_.insert(name).second)
        fail(e->file->path(), "tensor '" + name + "' is claimed twice (internal error)");
    parameters_ += e->info->numel();
    return *e;
}

void WeightLoader::convert(const SafeTensorsSet::Entry& e, DType dtype, void* dst) const {
    const size_t n = size_t(e.info->numel());
    if (dtype == DType::f32) {
        e.file->read_f32(e.info->name, e.info->shape, static_cast<float*>(dst));
        return;
    }
    auto* out = static_cast<uint16_t*>(dst);
    const auto* src = static_cast<const uint8_t*>(e.file->data(*e.info));
    if (e.info->dtype == dtype) {
        std::memcpy(out, src, n * sizeof(uint16_t));
        return;
    }
    // Through f32 in chunks (f32 -> 16-bit, or f16 <-> bf16).
    constexpr size_t chunk = 4096;
    std::vector<float> tmp(chunk);
    std::vector<uint16_t> staged(chunk);
    const size_t elem = dtype_size(e.info->dtype);
    for (size_t i = 0; i < n; i += chunk) {
        const size_t m = std::min(chunk, n - i);
        if (e.info->dtype == DType::f32) {
            std::memcpy(tmp.data(), src + i * elem, m * sizeof(float));
        } else {
            std::memcpy(staged.data(), src + i * elem, m * elem);
            convert_to_f32(e.info->dtype, staged.data(), tmp.data(), m);
        }
        for (size_t k = 0; k < m; ++k) out[i + k] = dtype == DType::bf16 ? f32_to_bf16(tmp[k]) : f32_to_f16(tmp[k]);
    }
}

const float* WeightLoader::f32(const std::string& name, const std::vector<int64_t>& shape) {
    const SafeTensorsSet::Entry& e = get(name, shape);
    float* dst = store_.alloc<float>(size_t(e.info->numel()));
    convert(e, DType::f32, dst);
    return dst;
}

const float* WeightLoader::f32_optional(const std::string& name, const std::vector<int64_t>& shape) {
    return has(name) ? f32(name, shape) : nullptr;
}

const float* WeightLoader::f32_concat(const std::vector<std::string>& names, const std::vector<int64_t>& sizes) {
    int64_t total = 0;
    for (int64_t s : sizes) total += s;
    float* dst = store_.alloc<float>(size_t(total));
    int64_t at = 0;
    for (size_t i = 0; i < names.size(); ++i) {
        convert(get(names[i], {sizes[i]}), DType::f32, dst + at);
        at += sizes[i];
    }
    return dst;
}

WeightRef WeightLoader::matrix(const std::string& name, int64_t out, int64_t in, DType dtype, bool pack) {
    if (dtype == DType::f32 && pack) {
        const PackedMatrix p = packed({name}, {{out, in}}, in);
        return {p.data, DType::f32, out, in, true, p.onednn_layout};
    }
    const SafeTensorsSet::Entry& e = get(name, {out, in});
    const void* src = e.file->data(*e.info);
    if (dtype != DType::f32 && e.info->dtype == dtype && reinterpret_cast<uintptr_t>(src) % 2 == 0) {
        mapped_bytes_ += int64_t(e.info->end - e.info->begin);
        return {src, dtype, out, in};
    }
    void* dst = store_.alloc_bytes(size_t(out * in) * dtype_size(dtype));
    convert(e, dtype, dst);
    return {dst, dtype, out, in};
}

PackedMatrix WeightLoader::packed(const std::vector<std::string>& names,
                                  const std::vector<std::vector<int64_t>>& shapes, int64_t in) {
    int64_t out = 0;
    for (const auto& shape : shapes) out += shape.empty() ? 0 : shape[0];
    std::vector<float> raw(static_cast<size_t>(out * in));
    int64_t row = 0;
    for (size_t i = 0; i < names.size(); ++i) {
        const SafeTensorsSet::Entry& e = get(names[i], shapes[i]);
        if (e.info->numel() != shapes[i][0] * in)
            fail(e.file->path(), "tensor '" + names[i] + "' is not a matrix of width " + std::to_string(in));
        convert(e, DType::f32, raw.data() + row * in);
        row += shapes[i][0];
    }
    const WeightPlan plan = plan_weights(out, in, DType::f32);
    return pack_weights(plan, raw.data(), store_.alloc_bytes(plan.bytes));
}

WeightRef WeightLoader::stacked(const std::vector<std::string>& names, const std::vector<int64_t>& outs, int64_t in,
                                DType dtype) {
    if (dtype == DType::f32) {
        std::vector<std::vector<int64_t>> shapes;
        for (int64_t o : outs) shapes.push_back({o, in});
        const PackedMatrix p = packed(names, shapes, in);
        return {p.data, DType::f32, p.out, in, true, p.onednn_layout};
    }
    int64_t total = 0;
    for (int64_t o : outs) total += o;
    auto* dst = static_cast<uint8_t*>(store_.alloc_bytes(size_t(total * in) * dtype_size(dtype)));
    int64_t row = 0;
    for (size_t i = 0; i < names.size(); ++i) {
        convert(get(names[i], {outs[i], in}), dtype, dst + size_t(row * in) * dtype_size(dtype));
        row += outs[i];
    }
    return {dst, dtype, total, in};
}

void WeightLoader::skip_prefix(const std::string& prefix) { skipped_prefixes_.push_back(prefix); }

void WeightLoader::check_all_used(const std::string& what) const {
    for (const auto& [name, e] : set_.entries()) {
        if (used_.count(name)) continue;
        bool skipped = false;
        for (const std::string& p : skipped_prefixes_) skipped |= name.rfind(p, 0) == 0;
        if (!skipped)
            fail(e.file->path(), "tensor '" + name + "' is not part of " + what +
                                     " (config.json and the weights disagree)");
    }
}

}  // namespace tessera
