// Hands a model its tensors out of a SafeTensorsSet. Vectors (norms, biases)
// are always f32 copies; matrices come in the dtype the run asks for: f32
// copies, or 16-bit weights used straight from the memory-mapped file (no
// copy) when the file already holds that type. Every shape is checked and
// every tensor must be claimed (used, or skipped on purpose), so config.json
// and the weights cannot silently disagree.
#pragma once
#include <set>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "kernels/gemm.h"
#include "kernels/packed_gemm.h"
#include "tessera/arena.h"

namespace tessera {

// Owned weight memory: arenas added as needed (loading only, never while running).
class WeightStore {
public:
    void* alloc_bytes(size_t bytes);
    template <class T> T* alloc(size_t count) { return static_cast<T*>(alloc_bytes(count * sizeof(T))); }
    size_t bytes() const { return bytes_; }

private:
    std::vector<Arena> blocks_;
    size_t bytes_ = 0;
};

class WeightLoader {
public:
    WeightLoader(const SafeTensorsSet& set, WeightStore& store) : set_(set), store_(store) {}

    bool has(const std::string& name) const { return set_.find(name) != nullptr; }
    const float* f32(const std::string& name, const std::vector<int64_t>& shape);
    const float* f32_optional(const std::string& name, const std::vector<int64_t>& shape);
    // Vectors concatenated (e.g. q|k|v biases).
    const float* f32_concat(const std::vector<std::string>& names, const std::vector<int64_t>& sizes);
    // A [out, in] matrix in `dtype`.
    // f32 matrices are packed for linear_packed unless `pack` is false (a
    // matrix read by rows, such as the token embedding).
    WeightRef matrix(const std::string& name, int64_t out, int64_t in, DType dtype, bool pack = true);
    // Matrices stacked by rows into one [sum outs, in] matrix (fused q|k|v, gate|up).
    WeightRef stacked(const std::vector<std::string>& names, const std::vector<int64_t>& outs, int64_t in,
                      DType dtype);
    // f32 matrices stacked by rows (one name: a single matrix) and packed for
    // linear_packed. `in` is the width of each; a tensor may be stored with
    // more dimensions (a conv weight [out, 3, p, p]) as long as they multiply to in.
    PackedMatrix packed(const std::vector<std::string>& names, const std::vector<std::vector<int64_t>>& shapes,
                        int64_t in);
    // Tensors under `prefix` that are deliberately not loaded.
    void skip_prefix(const std::string& prefix);
    void check_all_used(const std::string& what) const;

    int64_t parameters() const { return parameters_; }
    int64_t mapped_bytes() const { return mapped_bytes_; }  // used in place from the file

private:
    const SafeTensorsSet::Entry& get(const std::string& name, const std::vector<int64_t>& shape);
    // Converts the tensor's elements into dst (dtype elements).
    void convert(const SafeTensorsSet::Entry& e, DType dtype, void* dst) const;

    const SafeTensorsSet& set_;
    WeightStore& store_;
    std::set<std::string, std::less<>> used_;
    std::vector<std::string> skipped_prefixes_;
    int64_t parameters_ = 0;
    int64_t mapped_bytes_ = 0;
};

}  // namespace tessera
