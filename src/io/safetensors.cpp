#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include "io/files.h"
#include "tessera/error.h"
#include "tessera/memory.h"

namespace tessera {

namespace {

using json = nlohmann::json;

// Tensor bytes are little-endian and are converted without byte swapping.
static_assert(std::endian::native == std::endian::little, "the safetensors reader assumes a little-endian host");

// Same cap as the reference implementation: anything larger is a corrupt length.
constexpr uint64_t max_header_bytes = 100'000'000;

std::string system_error(const char* what) {
    const int err = errno;  // before anything else can overwrite it
    return std::string(what) + ": " + std::strerror(err);
}

// A JSON value for an error message, cut short so a hostile header cannot
// produce a huge message.
std::string brief(const json& value) {
    std::string s = value.dump();
    constexpr size_t limit = 60;
    return s.size() <= limit ? s : s.substr(0, limit) + "...";
}

std::optional<DType> dtype_from_string(std::string_view s) {
    if (s == "F32") return DType::f32;
    if (s == "F16") return DType::f16;
    if (s == "BF16") return DType::bf16;
    return std::nullopt;
}

// Validates one header entry completely; `data_size` is the length of the data
// section. Overlaps between entries are checked by the caller.
TensorInfo parse_entry(const std::string& path, const std::string& name, const json& entry, uint64_t data_size) {
    auto bad = [&](const std::string& problem) { fail(path, "tensor '" + name + "': " + problem); };
    if (!entry.is_object()) bad("entry is not a JSON object (got " + brief(entry) + ")");
    auto field = [&](const char* key) -> const json& {
        auto it = entry.find(key);
        if (it == entry.end()) bad(std::string("missing '") + key + "'");
        return *it;
    };

    TensorInfo t;
    t.name = name;

    const json& dtype = field("dtype");
    if (!dtype.is_string()) bad("'dtype' is not a string (got " + brief(dtype) + ")");
    const auto& dtype_str = dtype.get_ref<const std::string&>();
    const auto parsed_dtype = dtype_from_string(dtype_str);
    if (!parsed_dtype) bad("unsupported dtype '" + dtype_str + "' (supported: F32, F16, BF16)");
    t.dtype = *parsed_dtype;

    const json& shape = field("shape");
    if (!shape.is_array()) bad("'shape' is not an array (got " + brief(shape) + ")");
    for (const json& dim : shape) {
        // nlohmann keeps non-negative integers unsigned and negative ones signed.
        if (dim.is_number_unsigned()) {
            const auto d = dim.get<uint64_t>();
            if (d > uint64_t(std::numeric_limits<int64_t>::max())) bad("dimension " + std::to_string(d) + " is too large");
            t.shape.push_back(int64_t(d));
        } else if (dim.is_number_integer()) {
            t.shape.push_back(dim.get<int64_t>());
        } else {
            bad("'shape' holds " + brief(dim) + ", which is not an integer");
        }
    }
    for (int64_t d : t.shape)
        if (d < 0) bad("negative dimension " + std::to_string(d) + " in shape " + shape_string(t.shape));
    int64_t numel = 1;
    for (int64_t d : t.shape)
        if (__builtin_mul_overflow(numel, d, &numel))
            bad("shape " + shape_string(t.shape) + " has too many elements (overflows 64 bits)");
    uint64_t nbytes = 0;
    if (__builtin_mul_overflow(uint64_t(numel), uint64_t(dtype_size(t.dtype)), &nbytes))
        bad("shape " + shape_string(t.shape) + " of " + dtype_str + " is too large (byte size overflows 64 bits)");

    const json& offsets = field("data_offsets");
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned())
        bad("'data_offsets' is not a pair of non-negative integers (got " + brief(offsets) + ")");
    t.begin = offsets[0].get<uint64_t>();
    t.end = offsets[1].get<uint64_t>();
    const std::string range = "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "]";
    if (t.begin > t.end) bad(range + " have begin > end");
    if (t.end - t.begin != nbytes)
        bad(range + " hold " + std::to_string(t.end - t.begin) + " bytes but shape " + shape_string(t.shape) +
            " of " + dtype_str + " needs " + std::to_string(nbytes));
    if (t.end > data_size)
        bad(range + " run past the end of the data section, which is only " + std::to_string(data_size) +
            " bytes (file truncated?)");
    return t;
}

}  // namespace

int64_t TensorInfo::numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

SafeTensors::SafeTensors(const std::string& path, bool in_memory) : path_(path) {
    // The destructor does not run when a constructor throws, so clean up here.
    try {
        open_file(in_memory);
        parse_header();
    } catch (...) {
        release();
        throw;
    }
}

SafeTensors::~SafeTensors() { release(); }

SafeTensors::SafeTensors(SafeTensors&& other) noexcept
    : path_(std::move(other.path_)),
      fd_(std::exchange(other.fd_, -1)),
      map_(std::exchange(other.map_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      data_start_(std::exchange(other.data_start_, 0)),
      tensors_(std::move(other.tensors_)),
      index_(std::move(other.index_)),
      metadata_(std::move(other.metadata_)) {}

SafeTensors& SafeTensors::operator=(SafeTensors&& other) noexcept {
    if (this != &other) {
        release();
        path_ = std::move(other.path_);
        fd_ = std::exchange(other.fd_, -1);
        map_ = std::exchange(other.map_, nullptr);
        size_ = std::exchange(other.size_, 0);
        data_start_ = std::exchange(other.data_start_, 0);
        tensors_ = std::move(other.tensors_);
        index_ = std::move(other.index_);
        metadata_ = std::move(other.metadata_);
    }
    return *this;
}

void SafeTensors::release() noexcept {
    if (map_) ::munmap(const_cast<uint8_t*>(map_), size_);
    if (fd_ >= 0) ::close(fd_);
    map_ = nullptr;
    fd_ = -1;
    size_ = 0;
    data_start_ = 0;
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22  // Linux 5.14; older headers lack it
#endif
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25  // Linux 6.1
#endif

void SafeTensors::open_file(bool in_memory) {
    fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) fail(path_, system_error("cannot open"));
    struct stat st {};
    if (::fstat(fd_, &st) != 0) fail(path_, system_error("cannot stat"));
    if (!S_ISREG(st.st_mode)) fail(path_, "not a regular file");
    const auto size = uint64_t(st.st_size);
    // Checked before mmap, which rejects an empty mapping.
    if (size < 8)
        fail(path_, "file is " + std::to_string(size) +
                        " bytes, too short for a safetensors file (the 8-byte header length is missing)");
    if (in_memory) return read_file(size);
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd_, 0);
    if (p == MAP_FAILED) fail(path_, system_error("cannot mmap"));
    // Ask for 2 MiB pages: where the kernel backs file pages with large folios
    // (they are chosen when the file is first read), the LLaVA decoder's
    // weights, read in place at every decode step, then cost a TLB entry per
    // 2 MiB instead of per 4 KiB: decode steps of LLaVA-7B took 0.28 s instead
    // of 1.2-2.2 s on a 2-core Zen 5 VM. Advisory; an error changes nothing.
    ::madvise(p, size, MADV_HUGEPAGE);
    // Map every page now rather than at first touch, as llama.cpp does: the
    // first forward pass otherwise faults page by page, about 0.3 s of a
    // LLaVA-7B prefill (VTC-CLS 64's prefill took 2.40-2.44 s instead of
    // 2.64-2.79 s in four alternating pairs, and the whole run's wall time
    // did not grow). Skipped for a file larger than the physical memory,
    // where pages would only evict each other; an error (a kernel before
    // 5.14) changes nothing.
    if (size <= memory_physical()) ::madvise(p, size, MADV_POPULATE_READ);
    map_ = static_cast<const uint8_t*>(p);
    size_ = size;
}

void SafeTensors::read_file(uint64_t size) {
    memory_check(path_, "reading the weights into memory (--no-mmap)", size, "map the file instead");
    // Anonymous pages, released by munmap like a mapped file's.
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) fail(path_, system_error("cannot allocate memory to read the file into"));
    map_ = static_cast<const uint8_t*>(p);  // release() frees it if reading fails
    size_ = size;
    ::madvise(p, size, MADV_HUGEPAGE);  // advisory, as for a mapping
    for (uint64_t done = 0; done < size;) {
        const size_t chunk = size_t(std::min<uint64_t>(size - done, uint64_t(1) << 30));
        const ssize_t n = ::pread(fd_, static_cast<uint8_t*>(p) + done, chunk, off_t(done));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) fail(path_, system_error("cannot read"));
        if (n == 0)
            fail(path_, "file ended after " + std::to_string(done) + " of " + std::to_string(size) +
                            " bytes while it was read (changed on disk?)");
        done += uint64_t(n);
    }
    // Reading a file this large fills the page cache while the buffer
    // faults in, and where memory runs short the kernel gives parts of the
    // buffer 4 KiB pages instead of 2 MiB ones (LLaVA-7B on the 23 GiB
    // 2-core Zen 5 VM: 7-100 MB of 13.8 GB). Collapse them now: after a
    // decode step has streamed the other weights, each 4 KiB page there
    // costs a slow page walk. Four alternated pairs of processes: median
    // decode steps 0.25-0.26 s collapsed, 0.26-0.72 s not. Best effort, as
    // the advice above: a kernel before 6.1 or without THP changes nothing.
    ::madvise(p, size, MADV_COLLAPSE);
}

void SafeTensors::parse_header() {
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = header_len << 8 | map_[i];
    if (header_len > max_header_bytes)
        fail(path_, "header length " + std::to_string(header_len) + " exceeds the limit of " +
                        std::to_string(max_header_bytes) + " bytes (corrupt file?)");
    if (header_len > size_ - 8)
        fail(path_, "header length " + std::to_string(header_len) + " runs past the end of the file (" +
                        std::to_string(size_) + " bytes, so at most " + std::to_string(size_ - 8) +
                        " bytes of header)");
    data_start_ = 8 + header_len;
    const uint64_t data_size = size_ - data_start_;

    // nlohmann keeps the last of duplicate keys silently; a callback sees every
    // top-level key so a duplicated tensor is reported instead.
    std::set<std::string> seen;
    std::string duplicate;
    auto watch_keys = [&](int depth, json::parse_event_t event, json& parsed) {
        if (depth == 1 && event == json::parse_event_t::key && duplicate.empty()) {
            const auto& key = parsed.get_ref<const std::string&>();
            if (!seen.insert(key).second) duplicate = key;
        }
        return true;
    };
    json header;
    try {
        const auto* text = reinterpret_cast<const char*>(map_ + 8);
        header = json::parse(text, text + header_len, watch_keys);
    } catch (const json::exception& e) {
        fail(path_, std::string("header is not valid JSON: ") + e.what());
    }
    if (!header.is_object()) fail(path_, "header is not a JSON object (got " + brief(header) + ")");
    if (!duplicate.empty()) fail(path_, "key '" + duplicate + "' appears twice in the header");

    for (const auto& [key, value] : header.items()) {
        if (key == "__metadata__") {
            if (!value.is_object()) fail(path_, "'__metadata__' is not a JSON object (got " + brief(value) + ")");
            for (const auto& [mkey, mvalue] : value.items()) {
                if (!mvalue.is_string())
                    fail(path_, "metadata '" + mkey + "' is not a string (got " + brief(mvalue) + ")");
                metadata_[mkey] = mvalue.get<std::string>();
            }
            continue;
        }
        tensors_.push_back(parse_entry(path_, key, value, data_size));
    }

    std::sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
        return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
    });
    // In offset order, with no overlap so far, a tensor overlaps an earlier one
    // exactly when it starts before the previous non-empty one ends.
    const TensorInfo* prev = nullptr;
    for (const TensorInfo& t : tensors_) {
        if (t.begin == t.end) continue;  // empty tensors occupy no bytes
        if (prev && t.begin < prev->end)
            fail(path_, "tensors '" + prev->name + "' (bytes " + std::to_string(prev->begin) + " to " +
                            std::to_string(prev->end) + ") and '" + t.name + "' (bytes " + std::to_string(t.begin) +
                            " to " + std::to_string(t.end) + ") overlap");
        prev = &t;
    }
    for (size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
}

const TensorInfo* SafeTensors::find(std::string_view name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& SafeTensors::get(std::string_view name) const {
    const TensorInfo* t = find(name);
    if (!t) fail(path_, "tensor '" + std::string(name) + "' not found");
    return *t;
}

const void* SafeTensors::data(const TensorInfo& t) const {
    assert(map_ && t.end <= size_ - data_start_);
    return map_ + data_start_ + t.begin;
}

void SafeTensors::read_f32(std::string_view name, const std::vector<int64_t>& expected_shape, float* dst) const {
    const TensorInfo& t = get(name);
    if (t.shape != expected_shape)
        fail(path_, "tensor '" + t.name + "' has shape " + shape_string(t.shape) + ", expected " +
                        shape_string(expected_shape));
    const auto n = size_t(t.numel());
    if (n == 0) return;
    const auto* src = static_cast<const uint8_t*>(data(t));
    // convert_to_f32 copies f32 with memcpy but reads f16/bf16 as uint16_t, and
    // the format allows any offset: stage misaligned halves through a buffer.
    if (t.dtype == DType::f32 || reinterpret_cast<uintptr_t>(src) % alignof(uint16_t) == 0) {
        convert_to_f32(t.dtype, src, dst, n);
        return;
    }
    constexpr size_t chunk = 4096;
    uint16_t staged[chunk];
    for (size_t i = 0; i < n; i += chunk) {
        const size_t m = std::min(chunk, n - i);
        std::memcpy(staged, src + i * sizeof(uint16_t), m * sizeof(uint16_t));
        convert_to_f32(t.dtype, staged, dst + i, m);
    }
}

}  // namespace tessera

// ---------------------------------------------------------------- sharded sets

#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/timm_config.h"

namespace tessera {

void SafeTensorsSet::add_file(const std::string& path, bool in_memory) {
    files_.push_back(std::make_unique<SafeTensors>(path, in_memory));
    const SafeTensors& f = *files_.back();
    for (const TensorInfo& t : f.tensors()) {
        auto [it, fresh] = entries_.emplace(t.name, Entry{&f, &t});
        if (!fresh)
            fail(path, "tensor '" + t.name + "' is also stored in " + it->second.file->path() +
                           " (a tensor must be in one shard)");
    }
}

SafeTensorsSet SafeTensorsSet::single_file(const std::string& path) {
    SafeTensorsSet set;
    set.where_ = path;
    set.add_file(path);
    return set;
}

SafeTensorsSet::SafeTensorsSet(const std::string& dir, bool in_memory) {
    namespace fs = std::filesystem;
    const std::string index_path = dir + "/model.safetensors.index.json";
    if (!path_exists(index_path)) {
        const std::string single = dir + "/model.safetensors";
        if (!path_exists(single))
            fail(dir, "no weights: neither model.safetensors nor model.safetensors.index.json");
        where_ = single;
        add_file(single, in_memory);
        return;
    }
    where_ = index_path;
    nlohmann::json index = json_read_file(index_path);
    auto map_it = index.is_object() ? index.find("weight_map") : index.end();
    if (map_it == index.end() || !map_it->is_object() || map_it->empty())
        fail(index_path, "key 'weight_map': expected a non-empty object of tensor name -> shard file");
    std::map<std::string, std::vector<std::string>> by_shard;
    for (auto it = map_it->begin(); it != map_it->end(); ++it) {
        if (!it->is_string()) fail(index_path, "key 'weight_map." + it.key() + "': expected a file name");
        const std::string shard = it->get<std::string>();
        if (shard.empty() || shard.find('/') != std::string::npos || shard.find('\\') != std::string::npos ||
            shard == "." || shard == "..")
            fail(index_path, "key 'weight_map." + it.key() + "': shard '" + shard +
                                 "' must be a file name inside the model folder");
        by_shard[shard].push_back(it.key());
    }
    for (const auto& [shard, names] : by_shard) {
        const std::string path = dir + "/" + shard;
        if (shard.size() > 255)
            fail(index_path, "shard name '" + shard.substr(0, 64) + "...' is longer than a file name can be");
        if (!path_exists(path))
            fail(index_path, "shard '" + shard + "' (holding '" + names.front() + "' and " +
                                 std::to_string(names.size() - 1) + " more) is missing from the folder");
        add_file(path, in_memory);
        for (const std::string& name : names) {
            const Entry* e = find(name);
            if (!e || e->file != files_.back().get())
                fail(path, "tensor '" + name + "' is listed in model.safetensors.index.json for this shard but "
                           "is not in it");
        }
    }
    for (const auto& [name, e] : entries_)
        if (!map_it->contains(name))
            fail(e.file->path(), "tensor '" + name + "' is not listed in model.safetensors.index.json");
}

const SafeTensorsSet::Entry* SafeTensorsSet::find(std::string_view name) const {
    auto it = entries_.find(name);
    return it == entries_.end() ? nullptr : &it->second;
}

uint64_t SafeTensorsSet::total_bytes() const {
    uint64_t n = 0;
    for (const auto& [name, e] : entries_) n += e.info->end - e.info->begin;
    return n;
}

}  // namespace tessera
