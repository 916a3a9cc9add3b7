// Image decoding (every bad input gets a clear error naming the file) and the
// Pillow-exact resize, checked against Pillow itself on real ImageNet images.
#include "io/image.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "tessera/error.h"
#include "test_support.h"

// The tests encode their own JPEG/BMP/grey PNG inputs with a private copy of
// stb_image_write (third-party code: its warnings are not ours).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#define STBI_WRITE_NO_STDIO
#if __has_include(<stb/stb_image_write.h>)
#include <stb/stb_image_write.h>
#else
#include <stb_image_write.h>
#endif
#pragma GCC diagnostic pop

namespace fs = std::filesystem;

namespace tessera {
namespace {

// A smooth gradient with deterministic noise, so resampling has real work.
Image make_image(int width, int height, uint32_t seed) {
    Image image{width, height, std::vector<uint8_t>(size_t(width) * size_t(height) * 3)};
    uint32_t state = seed;
    for (int y = 0; y < height; ++y)
        for (int x = 0; x < width; ++x)
            for (int c = 0; c < 3; ++c) {
                state = state * 1664525u + 1013904223u;
                const int base = c == 0 ? x * 255 / width : c == 1 ? y * 255 / height : (x + y) * 127 / (width + height);
                image.rgb[(size_t(y) * size_t(width) + size_t(x)) * 3 + size_t(c)] =
                    uint8_t(std::clamp(base + int(state >> 28) - 8, 0, 255));
            }
    return image;
}

// Bytes from one of stb_image_write's encoders.
std::string encode(const std::function<int(stbi_write_func*, void*)>& writer) {
    std::string bytes;
    auto append = [](void* context, void* data, int size) {
        static_cast<std::string*>(context)->append(static_cast<const char*>(data), size_t(size));
    };
    EXPECT_TRUE(writer(append, &bytes));
    return bytes;
}

std::string encode_jpeg(const Image& image, int quality) {
    return encode([&](stbi_write_func* f, void* c) {
        return stbi_write_jpg_to_func(f, c, image.width, image.height, 3, image.rgb.data(), quality);
    });
}

// The message of the tessera::Error that decoding `path` throws ("" if none).
std::string decode_error(const std::string& path, const ImageLimits& limits = {}) {
    try {
        image_decode_file(path, limits);
    } catch (const Error& e) {
        std::cout << "  error: " << e.what() << "\n";
        return e.what();
    }
    return "";
}

void expect_error(const std::string& path, const std::string& problem, const ImageLimits& limits = {}) {
    const std::string message = decode_error(path, limits);
    EXPECT_EQ(message.rfind(path + ": ", 0), 0u) << "message should start with the path: " << message;
    EXPECT_NE(message.find(problem), std::string::npos) << "expected '" << problem << "' in: " << message;
}

using test::append_be32;
using test::bmp_header_only;
using test::png_header_only;

// SOI + a baseline frame header (SOF0, 3 components) claiming width x height + EOI.
std::string jpeg_header_only(uint32_t width, uint32_t height) {
    std::string jpeg = "\xFF\xD8\xFF\xC0";
    append_be32(jpeg, (17u << 16) | (8u << 8) | (height >> 8));  // length 17, 8-bit, height (high byte)
    jpeg.push_back(char(height & 0xFF));
    jpeg.push_back(char(width >> 8));
    jpeg.push_back(char(width & 0xFF));
    jpeg.push_back(3);
    for (char id = 1; id <= 3; ++id) jpeg += std::string{id, '\x11', '\x00'};
    return jpeg + "\xFF\xD9";
}

std::string first_real_jpeg() {
    const fs::path dir = fs::path(test::shared_dir()) / "data/imagenet-val1300/images";
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir))
        if (entry.path().extension() == ".JPEG") names.push_back(entry.path().string());
    std::sort(names.begin(), names.end());
    return names.empty() ? "" : names.front();
}

// ------------------------------------------------------------------ decoding

TEST(ImageDecode, PngRoundTripIsExact) {
    const Image image = make_image(37, 23, 1);
    const std::string path = test::temp_dir() + "/image.png";
    image_write_png(path, image);
    const Image back = image_decode_file(path);
    EXPECT_EQ(back.width, 37);
    EXPECT_EQ(back.height, 23);
    EXPECT_EQ(back.rgb, image.rgb);
}

TEST(ImageDecode, BmpIsExact) {
    const Image image = make_image(29, 17, 2);  // odd width: rows carry padding
    const std::string bmp = encode([&](stbi_write_func* f, void* c) {
        return stbi_write_bmp_to_func(f, c, image.width, image.height, 3, image.rgb.data());
    });
    const Image back = image_decode_file(test::write_file(test::temp_dir() + "/image.bmp", bmp));
    EXPECT_EQ(back.width, 29);
    EXPECT_EQ(back.height, 17);
    EXPECT_EQ(back.rgb, image.rgb);
}

TEST(ImageDecode, GreyAndAlphaBecomeRgb) {
    // Pillow's convert("RGB"): grey is replicated, alpha is dropped.
    const int w = 5, h = 3;
    for (int channels : {1, 2, 4}) {
        std::vector<uint8_t> pixels(size_t(w * h * channels));
        for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = uint8_t(i * 17 + 3);
        const std::string png = encode([&](stbi_write_func* f, void* c) {
            return stbi_write_png_to_func(f, c, w, h, channels, pixels.data(), w * channels);
        });
        const std::string path = test::write_file(test::temp_dir() + "/image.png", png);
        const Image image = image_decode_file(path);
        ASSERT_EQ(image.rgb.size(), size_t(w * h * 3));
        for (int i = 0; i < w * h; ++i) {
            const uint8_t* px = &pixels[size_t(i * channels)];
            const uint8_t expected[3] = {px[0], channels >= 3 ? px[1] : px[0], channels >= 3 ? px[2] : px[0]};
            for (int c = 0; c < 3; ++c) EXPECT_EQ(image.rgb[size_t(i * 3 + c)], expected[c]) << channels << " channels";
        }
    }
}

TEST(ImageDecode, JpegDecodes) {
    const Image image = make_image(64, 48, 3);
    const Image back = image_decode_file(test::write_file(test::temp_dir() + "/image.jpg", encode_jpeg(image, 95)));
    ASSERT_EQ(back.width, 64);
    ASSERT_EQ(back.height, 48);
    double diff = 0;
    for (size_t i = 0; i < image.rgb.size(); ++i) diff += std::abs(int(image.rgb[i]) - int(back.rgb[i]));
    EXPECT_LT(diff / double(image.rgb.size()), 6.0);  // lossy, but the same picture
}

TEST(ImageDecode, TruncatedJpegIsRejected) {
    const std::string jpeg = encode_jpeg(make_image(128, 96, 4), 90);
    const std::string dir = test::temp_dir();
    expect_error(test::write_file(dir + "/half.jpg", jpeg.substr(0, jpeg.size() / 2)), "truncated JPEG");
    // Only the end-of-image marker missing: all the pixels are there, but the
    // file is still incomplete.
    expect_error(test::write_file(dir + "/no_eoi.jpg", jpeg.substr(0, jpeg.size() - 2)), "truncated JPEG");
    // Bytes after the end marker (some cameras append data) are fine.
    EXPECT_NO_THROW(image_decode_file(test::write_file(dir + "/trailer.jpg", jpeg + "trailing bytes")));
}

TEST(ImageDecode, TruncatedRealJpegIsRejected) {
    TESSERA_REQUIRE_SHARED();
    const std::string source = first_real_jpeg();
    ASSERT_FALSE(source.empty());
    const std::string jpeg = test::read_file(source);
    EXPECT_NO_THROW(image_decode_file(source));
    expect_error(test::write_file(test::temp_dir() + "/half.jpg", jpeg.substr(0, jpeg.size() / 2)), "truncated JPEG");
}

TEST(ImageDecode, EveryPrefixOfAnImageIsRejected) {
    // Cut at every length, each format must fail with an error (never crash,
    // never hand back a partly filled image). The one exception: stb_image
    // stops at the PNG end chunk's type and never reads its CRC, so cutting
    // only those last 4 bytes still gives the complete image.
    const Image image = make_image(24, 16, 11);
    const std::string png_path = test::temp_dir() + "/image.png";
    image_write_png(png_path, image);
    const std::string files[] = {
        encode_jpeg(image, 90),
        test::read_file(png_path),
        encode([&](stbi_write_func* f, void* c) {
            return stbi_write_bmp_to_func(f, c, image.width, image.height, 3, image.rgb.data());
        }),
    };
    for (const std::string& file : files) {
        EXPECT_NO_THROW(image_decode_memory(reinterpret_cast<const uint8_t*>(file.data()), file.size(), "whole"));
        const size_t unread_tail = &file == &files[1] ? 4 : 0;
        for (size_t n = 1; n < file.size() - unread_tail; ++n)
            EXPECT_THROW(image_decode_memory(reinterpret_cast<const uint8_t*>(file.data()), n, "prefix"), Error)
                << "prefix of " << n << " of " << file.size() << " bytes decoded";
    }
}

TEST(ImageDecode, CorruptJpegIsAClearError) {
    std::string jpeg = encode_jpeg(make_image(64, 48, 5), 90);
    // The frame header (SOF0) says 12-bit samples: the 8-bit decoder refuses it.
    const size_t sof = jpeg.find("\xFF\xC0");
    ASSERT_NE(sof, std::string::npos);
    jpeg[sof + 4] = 12;
    expect_error(test::write_file(test::temp_dir() + "/bad.jpg", jpeg), "corrupt JPEG data");
}

TEST(ImageDecode, OversizedHuffmanTableIsRejected) {
    // A Huffman table claiming 16 x 20 = 320 codes: stb_image 2.27 would write
    // past its 256-entry arrays; the header check refuses it first.
    std::string jpeg = encode_jpeg(make_image(64, 48, 12), 90);
    const size_t dht = jpeg.find("\xFF\xC4");
    ASSERT_NE(dht, std::string::npos);
    for (size_t k = 0; k < 16; ++k) jpeg[dht + 5 + k] = 20;  // after marker, length and class/id
    expect_error(test::write_file(test::temp_dir() + "/dht.jpg", jpeg), "corrupt JPEG: invalid Huffman table");
}

TEST(ImageDecode, TruncatedPngIsRejected) {
    const Image image = make_image(64, 48, 6);
    const std::string path = test::temp_dir() + "/image.png";
    image_write_png(path, image);
    const std::string png = test::read_file(path);
    expect_error(test::write_file(path, png.substr(0, png.size() / 2)), "corrupt or truncated image data (stb_image: ");
}

TEST(ImageDecode, TruncatedBmpIsRejected) {
    const Image image = make_image(40, 30, 7);
    const std::string bmp = encode([&](stbi_write_func* f, void* c) {
        return stbi_write_bmp_to_func(f, c, image.width, image.height, 3, image.rgb.data());
    });
    expect_error(test::write_file(test::temp_dir() + "/half.bmp", bmp.substr(0, bmp.size() / 2)), "truncated BMP");
}

TEST(ImageDecode, EmptyFileIsRejected) {
    expect_error(test::write_file(test::temp_dir() + "/empty.jpg", ""), "empty file");
}

TEST(ImageDecode, MissingFileIsRejected) {
    expect_error(test::temp_dir() + "/does-not-exist.png", "cannot open: No such file or directory");
    expect_error(test::temp_dir(), "cannot open: is a directory");
}

TEST(ImageDecode, NonImagesAreRejected) {
    const std::string dir = test::temp_dir();
    std::string noise(4096, '\0');
    uint32_t state = 42;
    for (char& c : noise) c = char((state = state * 1103515245u + 12345u) >> 24);
    noise[0] = 'x';  // keep the noise from starting with a format signature by chance
    expect_error(test::write_file(dir + "/noise.jpg", noise), "not a JPEG, PNG or BMP image");
    expect_error(test::write_file(dir + "/notes.png", "just some text, not a picture\n"), "not a JPEG, PNG or BMP image");
    expect_error(test::write_file(dir + "/anim.gif", "GIF89a\x01\x00\x01\x00"), "not a JPEG, PNG or BMP image");
}

TEST(ImageDecode, AbsurdDimensionsFailBeforeDecoding) {
    const std::string dir = test::temp_dir();
    struct Crafted {
        const char* name;
        std::string bytes;
        const char* problem;
    };
    const Crafted crafted[] = {
        {"huge.png", png_header_only(100000, 100000), "image is 100000x100000 pixels, more than the limit of 268435456 pixels"},
        {"huge.bmp", bmp_header_only(100000, 100000), "image is 100000x100000 pixels, more than the limit of 268435456 pixels"},
        {"huge.jpg", jpeg_header_only(65535, 65535), "image is 65535x65535 pixels, more than the limit of 268435456 pixels"},
        {"zero.png", png_header_only(0, 10), "corrupt image header: it gives 0x10 pixels"},
    };
    for (const Crafted& c : crafted) {
        const auto start = std::chrono::steady_clock::now();
        expect_error(test::write_file(dir + "/" + c.name, c.bytes), c.problem);
        EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 0.5);
    }
    // The check uses the caller's limit, before any pixel is decoded.
    const std::string path = dir + "/small.png";
    image_write_png(path, make_image(64, 48, 8));
    ImageLimits tight;
    tight.max_pixels = 1000;
    expect_error(path, "image is 64x48 pixels, more than the limit of 1000 pixels", tight);
}

TEST(ImageDecode, FileSizeLimit) {
    const std::string path = test::temp_dir() + "/image.png";
    image_write_png(path, make_image(64, 48, 9));
    ImageLimits tight;
    tight.max_file_bytes = 100;
    expect_error(path, "bytes, more than the limit of 100", tight);
}

// ------------------------------------------------------------------ resize

TEST(ImageResize, NameParsing) {
    EXPECT_EQ(resample_from_name("nearest", "cfg"), Resample::nearest);
    EXPECT_EQ(resample_from_name("bilinear", "cfg"), Resample::bilinear);
    EXPECT_EQ(resample_from_name("bicubic", "cfg"), Resample::bicubic);
    try {
        resample_from_name("lanczos", "model.json: interpolation");
        ADD_FAILURE() << "lanczos accepted";
    } catch (const Error& e) {
        EXPECT_STREQ(e.what(),
                     "model.json: interpolation: unknown interpolation 'lanczos' (expected nearest, bilinear or bicubic)");
    }
}

TEST(ImageResize, SameSizeIsACopyAndBadSizesThrow) {
    const Image image = make_image(20, 10, 10);
    EXPECT_EQ(image_resize_pillow(image, 20, 10, Resample::bicubic).rgb, image.rgb);
    EXPECT_THROW(image_resize_pillow(image, 0, 10, Resample::bicubic), Error);
    EXPECT_THROW(image_resize_pillow(Image{}, 5, 5, Resample::bilinear), Error);
}

TEST(ImageResize, NearestSamplesPixelCentres) {
    // 4 -> 2 samples x = 1, 3 (centres 1.0, 3.0); 2 -> 4 samples 0, 0, 1, 1.
    Image row{4, 1, {10, 10, 10, 20, 20, 20, 30, 30, 30, 40, 40, 40}};
    EXPECT_EQ(image_resize_pillow(row, 2, 1, Resample::nearest).rgb, (std::vector<uint8_t>{20, 20, 20, 40, 40, 40}));
    Image pair{2, 1, {1, 2, 3, 4, 5, 6}};
    EXPECT_EQ(image_resize_pillow(pair, 4, 1, Resample::nearest).rgb,
              (std::vector<uint8_t>{1, 2, 3, 1, 2, 3, 4, 5, 6, 4, 5, 6}));
}

TEST(ImageResize, BilinearUpscaleOfTwoPixels) {
    // Pillow's support is 1 at scale 0.5, centres at 0.25, 0.75, 1.25, 1.75:
    // weights (1, 0), (0.75, 0.25), (0.25, 0.75), (0, 1) after clamping to the edge.
    Image pair{2, 1, {0, 0, 0, 200, 200, 200}};
    const Image out = image_resize_pillow(pair, 4, 1, Resample::bilinear);
    EXPECT_EQ(out.rgb, (std::vector<uint8_t>{0, 0, 0, 50, 50, 50, 150, 150, 150, 200, 200, 200}));
}

// Parity with Pillow's Image.resize on the first 20 real ImageNet images.
TEST(ImageResize, MatchesPillowOnRealImages) {
    TESSERA_REQUIRE_SHARED();
    TESSERA_REQUIRE_PYTHON();
    const fs::path images_dir = fs::path(test::shared_dir()) / "data/imagenet-val1300/images";
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(images_dir))
        if (entry.path().extension() == ".JPEG") names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    names.resize(std::min<size_t>(names.size(), 20));
    ASSERT_EQ(names.size(), 20u);

    struct Size {
        int width, height;
        const char* method;
    };
    const std::vector<Size> sizes = {{248, 248, "bicubic"}, {256, 256, "bicubic"}, {300, 170, "bicubic"},
                                     {100, 333, "bilinear"}, {57, 91, "bicubic"},  {500, 400, "bicubic"},
                                     {224, 224, "bilinear"}, {57, 91, "bilinear"}, {123, 77, "nearest"},
                                     {500, 400, "nearest"}};
    struct Stats {
        double abs_sum[3] = {0, 0, 0};
        int max_diff = 0;
        int64_t differing = 0, pixels = 0;
    };
    std::vector<Stats> stats(sizes.size());

    // One reference run for every image and size.
    const std::string dir = test::temp_dir();
    std::vector<Image> images;
    std::string command = test::reference_python() + " '" + test::source_path("tools/pillow_reference.py") + "' resize";
    for (size_t i = 0; i < names.size(); ++i) {
        images.push_back(image_decode_file((images_dir / names[i]).string()));
        const std::string png = dir + "/" + std::to_string(i) + ".png";
        image_write_png(png, images.back());
        for (size_t s = 0; s < sizes.size(); ++s)
            command += " '" + png + "' " + std::to_string(sizes[s].width) + " " + std::to_string(sizes[s].height) + " " +
                       sizes[s].method + " '" + dir + "/" + std::to_string(i) + "-" + std::to_string(s) + ".raw'";
    }
    const test::CommandResult run = test::run_command(command);
    ASSERT_EQ(run.exit_code, 0) << run.err;

    for (size_t i = 0; i < names.size(); ++i) {
        for (size_t s = 0; s < sizes.size(); ++s) {
            const Image ours = image_resize_pillow(images[i], sizes[s].width, sizes[s].height,
                                                   resample_from_name(sizes[s].method, "test"));
            const std::string theirs = test::read_file(dir + "/" + std::to_string(i) + "-" + std::to_string(s) + ".raw");
            ASSERT_EQ(theirs.size(), ours.rgb.size()) << names[i];
            Stats& st = stats[s];
            for (size_t p = 0; p < ours.rgb.size() / 3; ++p) {
                bool differs = false;
                for (int c = 0; c < 3; ++c) {
                    const int d = std::abs(int(ours.rgb[3 * p + size_t(c)]) - int(uint8_t(theirs[3 * p + size_t(c)])));
                    st.abs_sum[c] += d;
                    st.max_diff = std::max(st.max_diff, d);
                    differs |= d != 0;
                }
                st.differing += differs;
                ++st.pixels;
            }
        }
    }

    std::cout << "Pillow parity over " << names.size() << " images (differences in units of 1/255):\n";
    for (size_t s = 0; s < sizes.size(); ++s) {
        const Stats& st = stats[s];
        double mean[3];
        for (int c = 0; c < 3; ++c) mean[c] = st.abs_sum[c] / double(st.pixels);
        std::printf("  %4dx%-4d %-8s mean |diff| R %.6f G %.6f B %.6f  max %d  differing pixels %lld of %lld\n",
                    sizes[s].width, sizes[s].height, sizes[s].method, mean[0], mean[1], mean[2], st.max_diff,
                    static_cast<long long>(st.differing), static_cast<long long>(st.pixels));
        for (int c = 0; c < 3; ++c) ASSERT_LE(mean[c], 1.0) << "requirement: mean difference at most 1/255";
        ASSERT_LE(st.max_diff, 1);
        EXPECT_EQ(st.differing, 0) << "not bit-exact for " << sizes[s].width << "x" << sizes[s].height << " "
                                   << sizes[s].method;
    }
}

// JPEG decoding gives the pixels Pillow gives (the same libjpeg-turbo), so
// preprocessing starts from identical data.
TEST(ImageDecode, JpegPixelsMatchPillowOnRealImages) {
    TESSERA_REQUIRE_SHARED();
    TESSERA_REQUIRE_PYTHON();
    const fs::path images_dir = fs::path(test::shared_dir()) / "data/imagenet-val1300/images";
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(images_dir))
        if (entry.path().extension() == ".JPEG") names.push_back(entry.path().string());
    std::sort(names.begin(), names.end());
    names.resize(std::min<size_t>(names.size(), 50));
    const std::string dir = test::temp_dir();
    std::string command = test::reference_python() + " '" + test::source_path("tools/pillow_reference.py") + "' decode";
    for (size_t i = 0; i < names.size(); ++i) command += " '" + names[i] + "' '" + dir + "/" + std::to_string(i) + ".raw'";
    const test::CommandResult run = test::run_command(command);
    ASSERT_EQ(run.exit_code, 0) << run.err;
    int64_t differing = 0;
    for (size_t i = 0; i < names.size(); ++i) {
        const Image ours = image_decode_file(names[i]);
        const std::string theirs = test::read_file(dir + "/" + std::to_string(i) + ".raw");
        const std::string dims = std::to_string(ours.width) + "x" + std::to_string(ours.height) + "\n";
        ASSERT_EQ(theirs.substr(0, dims.size()), dims) << names[i];
        ASSERT_EQ(theirs.size() - dims.size(), ours.rgb.size()) << names[i];
        for (size_t p = 0; p < ours.rgb.size(); ++p) differing += ours.rgb[p] != uint8_t(theirs[dims.size() + p]);
    }
    EXPECT_EQ(differing, 0) << "decoded JPEG values differing from Pillow's over " << names.size() << " images";
}

}  // namespace
}  // namespace tessera
