// safetensors reader: memory-maps the file, validates the header completely
// (JSON, dtypes, shapes, offsets, sizes, overlaps) before any tensor is used.
// Every problem is a tessera::Error naming the file and, where there is one,
// the tensor.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tessera/tensor.h"

namespace tessera {

struct TensorInfo {
    std::string name;
    DType dtype = DType::f32;
    std::vector<int64_t> shape;
    uint64_t begin = 0;  // byte offsets into the data section
    uint64_t end = 0;
    int64_t numel() const;
};

class SafeTensors {
public:
    // in_memory: the file is read into anonymous memory (2 MiB pages where
    // the kernel gives them) instead of mapped; see SafeTensorsSet.
    explicit SafeTensors(const std::string& path, bool in_memory = false);
    ~SafeTensors();
    SafeTensors(const SafeTensors&) = delete;
    SafeTensors& operator=(const SafeTensors&) = delete;
    SafeTensors(SafeTensors&& other) noexcept;
    SafeTensors& operator=(SafeTensors&& other) noexcept;

    const std::string& path() const { return path_; }
    // Sorted by data offset (the JSON header's key order carries no meaning).
    const std::vector<TensorInfo>& tensors() const { return tensors_; }
    const std::map<std::string, std::string>& metadata() const { return metadata_; }
    uint64_t file_size() const { return size_; }

    const TensorInfo* find(std::string_view name) const;  // nullptr when absent
    const TensorInfo& get(std::string_view name) const;   // throws "PATH: tensor 'NAME' not found"
    const void* data(const TensorInfo& t) const;          // start of the tensor's bytes

    // Converts a tensor to f32 into dst (numel floats). Throws, naming file and
    // tensor, when it is missing or its shape differs from expected_shape.
    void read_f32(std::string_view name, const std::vector<int64_t>& expected_shape, float* dst) const;

private:
    void open_file(bool in_memory);
    void read_file(uint64_t size);
    void parse_header();
    void release() noexcept;

    std::string path_;
    int fd_ = -1;
    const uint8_t* map_ = nullptr;
    uint64_t size_ = 0;
    uint64_t data_start_ = 0;  // 8 + header length
    std::vector<TensorInfo> tensors_;
    std::map<std::string, size_t, std::less<>> index_;
    std::map<std::string, std::string> metadata_;
};

}  // namespace tessera

namespace tessera {

// The weights of one model folder: DIR/model.safetensors, or the shards that
// DIR/model.safetensors.index.json lists (every listed tensor must be in the
// shard the index names; tensors are looked up across all shards).
class SafeTensorsSet {
public:
    // in_memory (llama.cpp's --no-mmap): each file is read into the
    // process's own memory instead of mapped. Loading takes longer and the
    // page cache is no longer shared between processes, but on a VM whose
    // file-backed pages read slowly (the 2-core Zen 5: 28-33 GB/s against
    // 70 for fresh memory) decode steps, which read every weight, run faster.
    explicit SafeTensorsSet(const std::string& dir, bool in_memory = false);
    // A single file (timm folders).
    static SafeTensorsSet single_file(const std::string& path);

    struct Entry {
        const SafeTensors* file;
        const TensorInfo* info;
    };
    const Entry* find(std::string_view name) const;  // nullptr when absent
    const std::map<std::string, Entry, std::less<>>& entries() const { return entries_; }
    const std::string& where() const { return where_; }  // index or file path, for messages
    uint64_t total_bytes() const;

private:
    SafeTensorsSet() = default;
    void add_file(const std::string& path, bool in_memory = false);

    std::string where_;
    std::vector<std::unique_ptr<SafeTensors>> files_;
    std::map<std::string, Entry, std::less<>> entries_;
};

}  // namespace tessera
