// Element types and plain tensor views. Tensors never own memory: weights live
// in the model's buffer, activations in an Arena.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace tessera {

enum class DType : uint8_t { f32, f16, bf16 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);

// IEEE half / bfloat16 <-> float, exact for every finite value.
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
inline float bf16_to_f32(uint16_t b) {
    uint32_t u = uint32_t(b) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
// Round to nearest even (NaN stays NaN).
uint16_t f32_to_bf16(float f);

// Convert n elements of type `src_type` at `src` to float at `dst`.
void convert_to_f32(DType src_type, const void* src, float* dst, size_t n);

// A view: dtype, row-major shape, data pointer. Up to 4 dims.
struct Tensor {
    DType dtype = DType::f32;
    int ndim = 0;
    int64_t shape[4] = {0, 0, 0, 0};
    void* data = nullptr;

    int64_t numel() const;
    size_t nbytes() const { return size_t(numel()) * dtype_size(dtype); }
    float* f32() const { return static_cast<float*>(data); }
};

std::string shape_string(const std::vector<int64_t>& shape);

}  // namespace tessera
