// Image decoding (stb_image for PNG and BMP; libjpeg-turbo through OpenCV for
// JPEG, the decoder Pillow uses, so JPEG pixels match timm's bit for bit) and
// PNG writing with stb_image_write. Resizing is in resample.cpp.
#include "io/image.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstring>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "tessera/error.h"

// stb is compiled into this file, privately (static functions) and limited to
// the three formats we accept, so behaviour does not depend on the version or
// configuration of the system's shared libstb. The code is third-party: its
// warnings are not ours to fix.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
// stb_image copies a zero-length first IDAT chunk into a PNG buffer it has
// not allocated yet: memcpy(nullptr, src, 0), undefined behaviour that UBSan
// reports (fuzz_image found it). Its memcpy calls go through a null-safe copy;
// <cstring> is already included, so the macro cannot touch its declaration.
namespace {
inline void* stb_memcpy(void* dst, const void* src, size_t n) { return n ? std::memcpy(dst, src, n) : dst; }
}  // namespace
#define memcpy(dst, src, n) stb_memcpy(dst, src, n)
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_NO_STDIO
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#define STBI_WRITE_NO_STDIO
#if __has_include(<stb/stb_image.h>)
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>
#else
#include <stb_image.h>
#include <stb_image_write.h>
#endif
#undef memcpy
#pragma GCC diagnostic pop

// Pillow computes its filter weights in plain IEEE double arithmetic (its
// builds do not fuse multiply-adds); a fused a*b+c rounds differently and can
// move a fixed-point weight by one, so contraction stays off in this file.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace tessera {

namespace {

// ---------------------------------------------------------------- decoding

enum class Format { unknown, jpeg, png, bmp };

Format sniff_format(const uint8_t* p, size_t n) {
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    if (n >= 3 && p[0] == 0xFF && p[1] == 0xD8 && p[2] == 0xFF) return Format::jpeg;
    if (n >= 8 && std::memcmp(p, png_sig, 8) == 0) return Format::png;
    if (n >= 2 && p[0] == 'B' && p[1] == 'M') return Format::bmp;
    return Format::unknown;
}

uint32_t read_be16(const uint8_t* p) { return uint32_t(p[0]) << 8 | p[1]; }
uint32_t read_be32(const uint8_t* p) { return read_be16(p) << 16 | read_be16(p + 2); }
uint32_t read_le16(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8; }
uint32_t read_le32(const uint8_t* p) { return read_le16(p) | read_le16(p + 2) << 16; }

// The image size as the header states it, read here rather than through
// stbi_info: that applies stb's own caps first (a PNG over 2^30 bytes) and
// then reports every failure as "unknown image type".
struct Header {
    bool has_size = false;
    int64_t width = 0, height = 0;
    bool complete = true;  // JPEG: the stream reaches its end-of-image marker
    bool huffman_ok = true;  // JPEG: Huffman tables that stb_image can hold
};

// A DHT segment's payload: tables of (class/id, 16 code counts, symbols). The
// stb_image shipped in Debian 12 (2.27) trusts the counts and overflows its
// 256-entry tables on a crafted file, so they are checked here first.
bool jpeg_huffman_tables_fit(const uint8_t* p, size_t length) {
    size_t i = 0;
    while (i < length) {
        if (length - i < 17 || (p[i] >> 4) > 1 || (p[i] & 15) > 3) return false;
        size_t symbols = 0;
        for (int k = 1; k <= 16; ++k) symbols += p[i + size_t(k)];
        if (symbols > 256 || length - i - 17 < symbols) return false;
        i += 17 + symbols;
    }
    return true;
}

// Walks the JPEG marker structure (skipping segment payloads, which may hold
// an EXIF thumbnail with its own end marker) and the entropy-coded scans:
// takes the size from the frame header (SOFn) and checks that the stream
// reaches its end-of-image marker. stb_image decodes a cut-off JPEG without
// complaint and fills the missing part with grey, so this is what catches
// incomplete downloads and copies.
Header read_jpeg_header(const uint8_t* p, size_t n) {
    Header h;
    h.complete = false;
    size_t i = 2;  // past SOI
    bool in_scan = false;
    while (i < n) {
        if (p[i] != 0xFF) {
            if (in_scan) {  // entropy-coded bytes: jump to the next 0xFF
                const void* ff = std::memchr(p + i, 0xFF, n - i);
                if (!ff) break;
                i = size_t(static_cast<const uint8_t*>(ff) - p);
            } else {
                ++i;  // stray bytes between segments, tolerated as libjpeg does
            }
            continue;
        }
        while (i < n && p[i] == 0xFF) ++i;  // fill bytes
        if (i >= n) break;
        const uint8_t marker = p[i++];
        if (marker == 0xD9) {  // EOI
            h.complete = true;
            break;
        }
        if (marker == 0x00 || (marker >= 0xD0 && marker <= 0xD7)) continue;  // stuffed 0xFF, RSTn
        if (marker == 0xD8 || marker == 0x01) continue;                   // SOI, TEM: no payload
        if (n - i < 2) break;
        const size_t length = read_be16(p + i);
        if (length < 2) break;
        const bool frame = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
        if (frame && !h.has_size && length >= 7 && n - i >= 7) {  // length, precision, height, width
            h.has_size = true;
            h.height = read_be16(p + i + 3);
            h.width = read_be16(p + i + 5);
        }
        if (marker == 0xC4 && n - i >= length && !jpeg_huffman_tables_fit(p + i + 2, length - 2)) h.huffman_ok = false;
        i += length;
        in_scan = marker == 0xDA;  // SOS: entropy-coded data follows its header
    }
    return h;
}

// PNG: the signature, then the IHDR chunk (length, "IHDR", width, height).
Header read_png_header(const uint8_t* p, size_t n) {
    Header h;
    if (n >= 24 && std::memcmp(p + 12, "IHDR", 4) == 0) {
        h.has_size = true;
        h.width = read_be32(p + 16);
        h.height = read_be32(p + 20);
    }
    return h;
}

// BMP: file header, then an OS/2 core header (16-bit sizes) or a Windows info
// header (32-bit, height negative for top-down rows). stb_image reads zeros
// past the end of a BMP, so a cut-off file would decode as a partly black
// image: for the uncompressed layouts (BI_RGB, BI_BITFIELDS; stb rejects RLE)
// check that all pixel rows are present.
Header read_bmp_header(const uint8_t* p, size_t n) {
    Header h;
    if (n < 30) return h;
    const uint32_t data_offset = read_le32(p + 10);
    const uint32_t header_size = read_le32(p + 14);
    const bool core = header_size == 12;
    h.has_size = true;
    h.width = core ? int64_t(read_le16(p + 18)) : int64_t(int32_t(read_le32(p + 18)));
    h.height = core ? int64_t(read_le16(p + 20)) : std::abs(int64_t(int32_t(read_le32(p + 22))));
    const uint32_t bits = core ? read_le16(p + 24) : read_le16(p + 28);
    const uint32_t compression = core || n < 34 ? 0 : read_le32(p + 30);
    if ((compression == 0 || compression == 3) && h.width > 0 && h.height > 0 && bits > 0) {
        const int64_t row_bytes = (h.width * bits + 31) / 32 * 4;
        const int64_t last_row_bytes = (h.width * bits + 7) / 8;  // some writers drop the final padding
        const int64_t available = int64_t(n) - int64_t(data_offset);
        // available >= row_bytes * (height - 1) + last_row_bytes, without overflow
        h.complete = available >= last_row_bytes && h.height - 1 <= (available - last_row_bytes) / row_bytes;
    }
    return h;
}

std::string reason() {
    const char* r = stbi_failure_reason();
    return r ? r : "unknown error";
}

// Reads a whole file, refusing more than max_bytes.
std::vector<uint8_t> read_file_limited(const std::string& path, int64_t max_bytes) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
    struct Closer {
        int fd;
        ~Closer() { ::close(fd); }
    } closer{fd};
    struct stat st {};
    if (::fstat(fd, &st) != 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
    if (S_ISDIR(st.st_mode)) fail(path, "cannot open: is a directory");
    auto too_big = [&](int64_t size) {
        fail(path, "file is " + std::to_string(size) + " bytes, more than the limit of " + std::to_string(max_bytes));
    };
    if (S_ISREG(st.st_mode) && st.st_size > max_bytes) too_big(st.st_size);

    // One spare byte lets a regular file's final read see the end at once;
    // pipes and the like grow the buffer as they go.
    std::vector<uint8_t> bytes(S_ISREG(st.st_mode) ? size_t(st.st_size) + 1 : size_t(1) << 16);
    size_t used = 0;
    for (;;) {
        if (used == bytes.size()) {
            if (int64_t(used) > max_bytes) too_big(int64_t(used));
            bytes.resize(size_t(std::min<int64_t>(int64_t(used) * 2, max_bytes + 1)));
        }
        const ssize_t got = ::read(fd, bytes.data() + used, bytes.size() - used);
        if (got < 0) {
            if (errno == EINTR) continue;
            fail(path, std::string("cannot read: ") + std::strerror(errno));
        }
        if (got == 0) break;
        used += size_t(got);
    }
    if (int64_t(used) > max_bytes) too_big(int64_t(used));
    bytes.resize(used);
    return bytes;
}

// stb_image's IDCT and colour conversion differ from libjpeg's by up to 3
// levels on 9% of pixels, enough to flip a few ImageNet top-1s against
// timm; libjpeg-turbo (what Pillow links) gives identical pixels. EXIF
// orientation is ignored, as Pillow's Image.open does.
Image decode_jpeg(const uint8_t* bytes, size_t size, const std::string& name) {
    const cv::Mat encoded(1, int(size), CV_8UC1, const_cast<uint8_t*>(bytes));
    cv::Mat bgr;
    try {
        bgr = cv::imdecode(encoded, cv::IMREAD_COLOR | cv::IMREAD_IGNORE_ORIENTATION);
    } catch (const cv::Exception& e) {
        fail(name, std::string("corrupt JPEG data (libjpeg: ") + e.what() + ")");
    }
    if (bgr.empty() || bgr.type() != CV_8UC3) fail(name, "corrupt JPEG data (libjpeg could not decode it)");
    Image image{bgr.cols, bgr.rows, {}};
    image.rgb.resize(size_t(bgr.cols) * size_t(bgr.rows) * 3);
    cv::Mat rgb(bgr.rows, bgr.cols, CV_8UC3, image.rgb.data());
    cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
    return image;
}

}  // namespace

Image image_decode_memory(const uint8_t* bytes, size_t size, const std::string& name, const ImageLimits& limits) {
    if (size == 0) fail(name, "empty file");
    const Format format = sniff_format(bytes, size);
    if (format == Format::unknown) fail(name, "not a JPEG, PNG or BMP image");
    if (size > size_t(INT_MAX)) fail(name, "file is " + std::to_string(size) + " bytes, too large for the image decoder");

    // Header first: refuse absurd dimensions before anything is allocated.
    const Header header = format == Format::jpeg ? read_jpeg_header(bytes, size)
                          : format == Format::png ? read_png_header(bytes, size)
                                                  : read_bmp_header(bytes, size);
    if (!header.has_size) fail(name, "corrupt or truncated image data (the header holds no image size)");
    const std::string dims = std::to_string(header.width) + "x" + std::to_string(header.height);
    if (header.width <= 0 || header.height <= 0) fail(name, "corrupt image header: it gives " + dims + " pixels");
    if (header.width > limits.max_pixels / header.height)
        fail(name, "image is " + dims + " pixels, more than the limit of " + std::to_string(limits.max_pixels) + " pixels");
    if (!header.huffman_ok) fail(name, "corrupt JPEG: invalid Huffman table");
    if (!header.complete && format == Format::jpeg)
        fail(name, "truncated JPEG: the data ends before the end-of-image marker (incomplete file?)");
    if (!header.complete)
        fail(name, "truncated BMP: the file is shorter than its " + dims + " pixels need");

    if (format == Format::jpeg) return decode_jpeg(bytes, size, name);
    // req_comp = 3: grey is replicated and alpha dropped, as Pillow's convert("RGB").
    int width = 0, height = 0, channels = 0;
    stbi_uc* pixels = stbi_load_from_memory(bytes, int(size), &width, &height, &channels, 3);
    if (!pixels) fail(name, "corrupt or truncated image data (stb_image: " + reason() + ")");
    Image image{width, height, {}};
    image.rgb.assign(pixels, pixels + size_t(width) * size_t(height) * 3);
    stbi_image_free(pixels);
    return image;
}

Image image_decode_file(const std::string& path, const ImageLimits& limits) {
    const std::vector<uint8_t> bytes = read_file_limited(path, limits.max_file_bytes);
    return image_decode_memory(bytes.data(), bytes.size(), path, limits);
}

void image_write_png(const std::string& path, const Image& image) {
    assert(image.width > 0 && image.height > 0 && image.rgb.size() == size_t(image.width) * size_t(image.height) * 3);
    std::string png;
    auto append = [](void* context, void* data, int size) {
        static_cast<std::string*>(context)->append(static_cast<const char*>(data), size_t(size));
    };
    if (!stbi_write_png_to_func(append, &png, image.width, image.height, 3, image.rgb.data(), image.width * 3))
        fail(path, "cannot encode PNG");
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) fail(path, std::string("cannot create: ") + std::strerror(errno));
    size_t done = 0;
    while (done < png.size()) {
        const ssize_t put = ::write(fd, png.data() + done, png.size() - done);
        if (put < 0 && errno == EINTR) continue;
        if (put <= 0) {
            const int err = errno;
            ::close(fd);
            fail(path, std::string("cannot write: ") + std::strerror(err));
        }
        done += size_t(put);
    }
    if (::close(fd) != 0) fail(path, std::string("cannot write: ") + std::strerror(errno));
}

}  // namespace tessera
