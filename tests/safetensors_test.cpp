#include "io/safetensors.h"

#include <gmock/gmock.h>

#include <cmath>
#include <cctype>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "tessera/error.h"
#include "test_support.h"

namespace tessera {
namespace {

using nlohmann::ordered_json;
using test::temp_dir;
using test::write_file;
using testing::HasSubstr;
using testing::StartsWith;

// File bytes: little-endian u64 header length, header text, data section.
std::string pack(const std::string& header, const std::string& data, uint64_t header_len) {
    std::string out(8, '\0');
    for (int i = 0; i < 8; ++i) out[i] = char(header_len >> (8 * i) & 0xff);
    return out + header + data;
}
std::string pack(const std::string& header, const std::string& data) { return pack(header, data, header.size()); }

template <class T>
std::string bytes_of(const std::vector<T>& values) {
    std::string s(values.size() * sizeof(T), '\0');
    std::memcpy(s.data(), values.data(), s.size());
    return s;
}

uint32_t bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

// A well-formed file under construction: each malformed case is a small
// mutation of `header` or `data` before write().
struct Builder {
    ordered_json header = ordered_json::object();
    std::string data;

    Builder& add(const std::string& name, const std::string& dtype, const std::vector<int64_t>& shape,
                 const std::string& bytes) {
        header[name] = {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {data.size(), data.size() + bytes.size()}}};
        data += bytes;
        return *this;
    }
    std::string write(const std::string& header_padding = "") const {
        return write_file(temp_dir() + "/model.safetensors", pack(header.dump() + header_padding, data));
    }
};

// 'a': F32 [2, 3] at bytes [0, 24); 'b': F16 [4] at bytes [24, 32).
Builder two_tensors() {
    Builder b;
    b.add("a", "F32", {2, 3}, bytes_of(std::vector<float>{1, 2, 3, 4, 5, 6}));
    b.add("b", "F16", {4}, bytes_of(std::vector<uint16_t>{0x3C00, 0x4000, 0x4200, 0x4400}));
    return b;
}

template <class F>
void expect_error(F&& action, const std::string& path, const std::string& problem) {
    try {
        action();
        ADD_FAILURE() << "no error thrown; expected: " << problem;
    } catch (const Error& e) {
        EXPECT_THAT(e.what(), StartsWith(path + ": "));
        EXPECT_THAT(e.what(), HasSubstr(problem));
    }
}

void expect_load_error(const std::string& path, const std::string& problem) {
    expect_error([&] { SafeTensors st(path); }, path, problem);
}

// Loads `b` after `mutate` and expects `problem`.
template <class F>
void expect_mutation_error(F&& mutate, const std::string& problem) {
    Builder b = two_tensors();
    mutate(b);
    expect_load_error(b.write(), problem);
}

TEST(SafeTensors, ReadsF32F16Bf16Exactly) {
    const std::vector<float> f32 = {1.5f, -2.25f, 0.0f, -0.0f, std::numeric_limits<float>::max(),
                                    std::numeric_limits<float>::denorm_min(), INFINITY, 1.0f / 3.0f};
    const std::vector<uint16_t> f16 = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x8000, 0x7C00, 0x3555};
    const std::vector<float> f16_expected = {1.0f, -2.0f, 65504.0f, 5.9604644775390625e-08f, -0.0f, INFINITY,
                                             0.333251953125f};
    const std::vector<uint16_t> bf16 = {0x3F80, 0xC049, 0x3F00, 0x4380, 0xFF80, 0x0001};
    const std::vector<float> bf16_expected = {1.0f, -3.140625f, 0.5f, 256.0f, -INFINITY, std::ldexp(1.0f, -133)};

    Builder b;
    b.add("w.f32", "F32", {2, 4}, bytes_of(f32));
    b.add("w.f16", "F16", {7}, bytes_of(f16));
    b.add("w.bf16", "BF16", {1, 2, 3}, bytes_of(bf16));
    // JSON key order differs from offset order: metadata first, tensors reversed.
    ordered_json header = {{"__metadata__", {{"format", "pt"}, {"note", "made by the test"}}}};
    for (const char* name : {"w.bf16", "w.f16", "w.f32"}) header[name] = b.header[name];
    b.header = header;
    const std::string path = b.write();

    SafeTensors st(path);
    EXPECT_EQ(st.path(), path);
    EXPECT_EQ(st.file_size(), 8 + header.dump().size() + b.data.size());
    EXPECT_EQ(st.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"note", "made by the test"}}));
    ASSERT_EQ(st.tensors().size(), 3u);
    EXPECT_EQ(st.tensors()[0].name, "w.f32");  // sorted by offset
    EXPECT_EQ(st.tensors()[1].name, "w.f16");
    EXPECT_EQ(st.tensors()[2].name, "w.bf16");
    const TensorInfo& t = st.get("w.bf16");
    EXPECT_EQ(t.dtype, DType::bf16);
    EXPECT_EQ(t.shape, (std::vector<int64_t>{1, 2, 3}));
    EXPECT_EQ(t.numel(), 6);
    EXPECT_EQ(t.begin, 32 + 14u);
    EXPECT_EQ(t.end, 32 + 14 + 12u);
    EXPECT_EQ(st.find("nope"), nullptr);
    EXPECT_EQ(std::memcmp(st.data(st.get("w.f16")), f16.data(), 14), 0);

    auto check = [&](const std::string& name, const std::vector<int64_t>& shape, const std::vector<float>& expected) {
        std::vector<float> got(expected.size(), 42.0f);
        st.read_f32(name, shape, got.data());
        for (size_t i = 0; i < expected.size(); ++i)
            EXPECT_EQ(bits(got[i]), bits(expected[i])) << name << "[" << i << "] = " << got[i];
    };
    check("w.f32", {2, 4}, f32);
    check("w.f16", {7}, f16_expected);
    check("w.bf16", {1, 2, 3}, bf16_expected);
}

// The format requires no alignment: odd offsets, gaps, empty and scalar tensors load.
TEST(SafeTensors, AcceptsUnalignedOffsetsGapsAndEmptyTensors) {
    const std::vector<uint16_t> halves(5000, 0x3C00);  // more than one staging chunk
    for (const std::string padding : {"", " "}) {  // one of the two puts the halves at an odd address
        Builder b;
        b.data = "\x01";  // gap
        b.add("f32", "F32", {2}, bytes_of(std::vector<float>{7.0f, -8.0f}));
        b.add("empty", "F32", {0, 3}, "");
        b.add("f16", "F16", {5000}, bytes_of(halves));
        b.add("scalar", "BF16", {}, bytes_of(std::vector<uint16_t>{0x4040}));
        SafeTensors st(b.write(padding));
        std::vector<float> two(2), many(5000), one(1);
        st.read_f32("f32", {2}, two.data());
        EXPECT_EQ(two, (std::vector<float>{7.0f, -8.0f}));
        st.read_f32("empty", {0, 3}, nullptr);
        st.read_f32("f16", {5000}, many.data());
        EXPECT_EQ(many, std::vector<float>(5000, 1.0f));
        st.read_f32("scalar", {}, one.data());
        EXPECT_EQ(one[0], 3.0f);
        EXPECT_EQ(st.get("empty").numel(), 0);
    }
}

TEST(SafeTensors, MoveTransfersOwnership) {
    const std::string path = two_tensors().write();
    SafeTensors a(path);
    SafeTensors b(std::move(a));
    EXPECT_TRUE(a.tensors().empty());
    EXPECT_EQ(a.file_size(), 0u);
    SafeTensors c(two_tensors().write());
    c = std::move(b);
    EXPECT_EQ(c.path(), path);
    std::vector<float> v(6);
    c.read_f32("a", {2, 3}, v.data());
    EXPECT_EQ(v, (std::vector<float>{1, 2, 3, 4, 5, 6}));
}

// Resident pages of this process's mappings of `path`, in KiB, from
// /proc/self/smaps: pages mapped in its page tables, not merely cached.
int64_t mapped_kib(const std::string& path) {
    std::ifstream smaps("/proc/self/smaps");
    std::string line;
    bool in_file = false;
    int64_t kib = 0;
    while (std::getline(smaps, line)) {
        const bool header = !line.empty() && std::isxdigit(static_cast<unsigned char>(line[0])) &&
                            line.find('-') < line.find(' ');
        if (header) in_file = line.size() >= path.size() && line.compare(line.size() - path.size(), path.size(), path) == 0;
        else if (in_file && line.rfind("Rss:", 0) == 0) kib += std::stoll(line.substr(4));
    }
    return kib;
}

TEST(SafeTensors, MapsEveryPageWhenOpened) {
    // 8 MiB of data: the header read alone would map a few pages, far fewer.
    Builder b;
    b.add("big", "F32", {2048, 1024}, std::string(size_t(8) << 20, '\1'));
    const std::string path = b.write();
    SafeTensors st(path);
    EXPECT_GE(mapped_kib(path), int64_t(st.file_size() / 1024) - 4);
}

// Read into memory (--no-mmap): the same header and bytes as mapped, and the
// same checks; more than the memory available is refused before reading.
TEST(SafeTensors, ReadsIntoMemoryAsMapped) {
    Builder b = two_tensors();
    b.add("big", "F32", {1024, 1024}, std::string(size_t(4) << 20, '\3'));
    const std::string path = b.write();
    const SafeTensors mapped(path), read(path, true);
    EXPECT_EQ(read.file_size(), mapped.file_size());
    ASSERT_EQ(read.tensors().size(), 3u);
    for (const TensorInfo& t : mapped.tensors()) {
        const TensorInfo& r = read.get(t.name);
        EXPECT_EQ(r.shape, t.shape);
        EXPECT_EQ(r.dtype, t.dtype);
        EXPECT_EQ(std::memcmp(read.data(r), mapped.data(t), size_t(t.end - t.begin)), 0) << t.name;
    }
    std::vector<float> a(6);
    read.read_f32("a", {2, 3}, a.data());
    EXPECT_EQ(a, (std::vector<float>{1, 2, 3, 4, 5, 6}));

    Builder truncated = two_tensors();
    truncated.data.resize(28);
    const std::string bad = truncated.write();
    expect_error([&] { SafeTensors st(bad, true); }, bad, "run past the end of the data section");

    test::ScopedEnv limit("TESSERA_MEMORY_LIMIT", "1M");
    expect_error([&] { SafeTensors st(path, true); }, path,
                 "reading the weights into memory (--no-mmap) needs 4 MiB of memory, but only 1 MiB is "
                 "available; map the file instead");
}

TEST(SafeTensorsMalformed, FileTooShort) {
    for (const std::string& bytes : {std::string("abc"), std::string()}) {
        const std::string path = write_file(temp_dir() + "/short.safetensors", bytes);
        expect_load_error(path, "file is " + std::to_string(bytes.size()) +
                                    " bytes, too short for a safetensors file (the 8-byte header length is missing)");
    }
}

TEST(SafeTensorsMalformed, MissingFileOrDirectory) {
    const std::string dir = temp_dir();
    expect_load_error(dir + "/absent.safetensors", "cannot open: No such file or directory");
    expect_load_error(dir, "not a regular file");
}

TEST(SafeTensorsMalformed, HeaderLengthPastEndOfFile) {
    const std::string path = write_file(temp_dir() + "/m.safetensors", pack("{}", "", 1000));
    expect_load_error(path, "header length 1000 runs past the end of the file (10 bytes, so at most 2 bytes of header)");
}

TEST(SafeTensorsMalformed, HeaderLengthAbsurd) {
    const std::string path = write_file(temp_dir() + "/m.safetensors", pack("{}", "", uint64_t(1) << 40));
    expect_load_error(path, "header length 1099511627776 exceeds the limit of 100000000 bytes (corrupt file?)");
}

TEST(SafeTensorsMalformed, HeaderNotJsonObject) {
    const std::string dir = temp_dir();
    for (const std::string text : {"{\"a\": ", "{\"a\": 1,}", "{\"\xff\": {}}", ""}) {
        const std::string path = write_file(dir + "/m.safetensors", pack(text, ""));
        expect_load_error(path, "header is not valid JSON: ");
    }
    const std::string path = write_file(dir + "/array.safetensors", pack("[1, 2]", ""));
    expect_load_error(path, "header is not a JSON object (got [1,2])");
}

TEST(SafeTensorsMalformed, DuplicateKey) {
    Builder b = two_tensors();
    std::string text = b.header.dump();
    text.insert(1, "\"b\":" + b.header["b"].dump() + ",");  // second copy of 'b'
    const std::string path = write_file(temp_dir() + "/m.safetensors", pack(text, b.data));
    expect_load_error(path, "key 'b' appears twice in the header");
}

TEST(SafeTensorsMalformed, EntryFieldsMissingOrWrongType) {
    expect_mutation_error([](Builder& b) { b.header["a"] = 5; }, "tensor 'a': entry is not a JSON object (got 5)");
    expect_mutation_error([](Builder& b) { b.header["a"].erase("dtype"); }, "tensor 'a': missing 'dtype'");
    expect_mutation_error([](Builder& b) { b.header["b"].erase("shape"); }, "tensor 'b': missing 'shape'");
    expect_mutation_error([](Builder& b) { b.header["b"].erase("data_offsets"); },
                          "tensor 'b': missing 'data_offsets'");
    expect_mutation_error([](Builder& b) { b.header["a"]["dtype"] = 32; }, "tensor 'a': 'dtype' is not a string (got 32)");
    expect_mutation_error([](Builder& b) { b.header["a"]["shape"] = "2x3"; },
                          "tensor 'a': 'shape' is not an array (got \"2x3\")");
    expect_mutation_error([](Builder& b) { b.header["a"]["shape"] = {2, 1.5}; },
                          "tensor 'a': 'shape' holds 1.5, which is not an integer");
    expect_mutation_error([](Builder& b) { b.header["a"]["data_offsets"] = {0}; },
                          "tensor 'a': 'data_offsets' is not a pair of non-negative integers (got [0])");
    expect_mutation_error([](Builder& b) { b.header["a"]["data_offsets"] = {-8, 24}; },
                          "tensor 'a': 'data_offsets' is not a pair of non-negative integers (got [-8,24])");
}

TEST(SafeTensorsMalformed, UnsupportedDtype) {
    for (const char* dtype : {"F64", "I64", "f32"})
        expect_mutation_error([&](Builder& b) { b.header["b"]["dtype"] = dtype; },
                              std::string("tensor 'b': unsupported dtype '") + dtype + "' (supported: F32, F16, BF16)");
}

TEST(SafeTensorsMalformed, NegativeOrHugeDimensions) {
    expect_mutation_error([](Builder& b) { b.header["a"]["shape"] = {2, -3}; },
                          "tensor 'a': negative dimension -3 in shape [2, -3]");
    expect_mutation_error([](Builder& b) { b.header["a"]["shape"] = {uint64_t(1) << 32, uint64_t(1) << 32}; },
                          "tensor 'a': shape [4294967296, 4294967296] has too many elements (overflows 64 bits)");
    expect_mutation_error([](Builder& b) { b.header["a"]["shape"] = {uint64_t(1) << 62}; },
                          "tensor 'a': shape [4611686018427387904] of F32 is too large (byte size overflows 64 bits)");
    expect_mutation_error([](Builder& b) { b.header["a"]["shape"] = {std::numeric_limits<uint64_t>::max()}; },
                          "tensor 'a': dimension 18446744073709551615 is too large");
}

TEST(SafeTensorsMalformed, BeginAfterEnd) {
    expect_mutation_error([](Builder& b) { b.header["a"]["data_offsets"] = {24, 0}; },
                          "tensor 'a': data_offsets [24, 0] have begin > end");
}

TEST(SafeTensorsMalformed, TruncatedDataSection) {
    expect_mutation_error([](Builder& b) { b.data.resize(28); },
                          "tensor 'b': data_offsets [24, 32] run past the end of the data section, which is only "
                          "28 bytes (file truncated?)");
}

TEST(SafeTensorsMalformed, SizeDoesNotMatchShape) {
    expect_mutation_error([](Builder& b) { b.header["a"]["shape"] = {2, 4}; },
                          "tensor 'a': data_offsets [0, 24] hold 24 bytes but shape [2, 4] of F32 needs 32");
    expect_mutation_error([](Builder& b) { b.header["b"]["dtype"] = "F32"; },
                          "tensor 'b': data_offsets [24, 32] hold 8 bytes but shape [4] of F32 needs 16");
}

TEST(SafeTensorsMalformed, OverlappingTensors) {
    expect_mutation_error([](Builder& b) { b.header["b"]["data_offsets"] = {20, 28}; },
                          "tensors 'a' (bytes 0 to 24) and 'b' (bytes 20 to 28) overlap");
    expect_mutation_error([](Builder& b) { b.header["a"]["data_offsets"] = {24, 48}; b.data.resize(48); },
                          "tensors 'b' (bytes 24 to 32) and 'a' (bytes 24 to 48) overlap");
}

TEST(SafeTensorsMalformed, BadMetadata) {
    expect_mutation_error([](Builder& b) { b.header["__metadata__"] = {{"format", 1}}; },
                          "metadata 'format' is not a string (got 1)");
    expect_mutation_error([](Builder& b) { b.header["__metadata__"] = "pt"; },
                          "'__metadata__' is not a JSON object (got \"pt\")");
}

TEST(SafeTensorsMalformed, MissingTensorAndShapeMismatch) {
    Builder b = two_tensors();
    b.header["blocks.0.attn.qkv.weight"] = b.header["a"];
    b.header.erase("a");
    const std::string path = b.write();
    SafeTensors st(path);
    std::vector<float> buf(64);
    expect_error([&] { st.get("x"); }, path, "tensor 'x' not found");
    expect_error([&] { st.read_f32("a", {2, 3}, buf.data()); }, path, "tensor 'a' not found");
    expect_error([&] { st.read_f32("blocks.0.attn.qkv.weight", {2, 4}, buf.data()); }, path,
                 "tensor 'blocks.0.attn.qkv.weight' has shape [2, 3], expected [2, 4]");
    expect_error([&] { st.read_f32("b", {1, 4}, buf.data()); }, path, "tensor 'b' has shape [4], expected [1, 4]");
}

TEST(SafeTensorsReal, VitTinyWeights) {
    TESSERA_REQUIRE_SHARED();
    const std::string path =
        test::shared_dir() + "/models/vit_tiny_patch16_224.augreg_in21k_ft_in1k/model.safetensors";
    SafeTensors st(path);
    EXPECT_EQ(st.tensors().size(), 152u);
    EXPECT_EQ(st.get("blocks.0.attn.qkv.weight").shape, (std::vector<int64_t>{576, 192}));
    EXPECT_EQ(st.get("cls_token").shape, (std::vector<int64_t>{1, 1, 192}));
    for (size_t i = 1; i < st.tensors().size(); ++i) EXPECT_LE(st.tensors()[i - 1].end, st.tensors()[i].begin);

    std::vector<float> bias(1000, NAN);
    st.read_f32("head.bias", {1000}, bias.data());
    for (float v : bias) ASSERT_TRUE(std::isfinite(v));

    std::vector<float> qkv(576 * 193);
    expect_error([&] { st.read_f32("blocks.0.attn.qkv.weight", {576, 193}, qkv.data()); }, path,
                 "tensor 'blocks.0.attn.qkv.weight' has shape [576, 192], expected [576, 193]");
}

}  // namespace
}  // namespace tessera
