#include "pipeline/visualize.h"

#include <algorithm>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "tessera/error.h"

namespace tessera {

namespace {

constexpr int kScale = 2;      // panel pixels per input pixel
constexpr int kCaption = 28;   // caption strip above each panel
constexpr int kLegend = 34;    // legend strip at the bottom
const cv::Scalar kFused(230, 120, 30);  // BGR

cv::Scalar group_colour(int token) {
    // Well-separated hues, stable per token index.
    static const cv::Scalar palette[] = {{60, 180, 75}, {48, 130, 245}, {180, 30, 145}, {240, 240, 70},
                                         {75, 25, 230}, {200, 130, 0},  {0, 128, 128},  {128, 0, 255},
                                         {60, 220, 220}, {255, 190, 230}};
    return palette[size_t(token) % (sizeof palette / sizeof palette[0])];
}

void caption(cv::Mat& canvas, int x, const std::string& text) {
    cv::putText(canvas, text, {x + 4, 19}, cv::FONT_HERSHEY_SIMPLEX, 0.5, cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
}

}  // namespace

void visualize_token_fates(const Image& crop, int grid_h, int grid_w, int patch, const std::vector<TokenTrace>& trace,
                           const std::string& path) {
    cv::Mat rgb(crop.height, crop.width, CV_8UC3, const_cast<uint8_t*>(crop.rgb.data()));
    cv::Mat bgr, base;
    cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
    cv::resize(bgr, base, {}, kScale, kScale, cv::INTER_NEAREST);
    const int pw = base.cols, ph = base.rows, cell = patch * kScale;
    const int panels = 1 + int(trace.size());
    cv::Mat canvas(kCaption + ph + kLegend, panels * pw + (panels - 1) * 8, CV_8UC3, cv::Scalar(255, 255, 255));

    base.copyTo(canvas(cv::Rect(0, kCaption, pw, ph)));
    caption(canvas, 0, "input " + std::to_string(grid_h * grid_w) + " patches");

    for (size_t e = 0; e < trace.size(); ++e) {
        const TokenTrace& t = trace[e];
        const int x0 = int(e + 1) * (pw + 8);
        cv::Mat panel = base.clone();
        for (int p = 0; p < grid_h * grid_w; ++p) {
            const cv::Rect r((p % grid_w) * cell, (p / grid_w) * cell, cell, cell);
            const int32_t owner = t.patch_owner[size_t(p)];
            cv::Mat roi = panel(r);
            if (owner < 0) {
                roi *= 0.2;  // dropped
            } else if (t.kind[size_t(owner)] == TokenKind::fused) {
                cv::addWeighted(roi, 0.45, cv::Mat(roi.size(), roi.type(), kFused), 0.55, 0, roi);
            } else if (t.kind[size_t(owner)] == TokenKind::merged) {
                cv::addWeighted(roi, 0.5, cv::Mat(roi.size(), roi.type(), group_colour(owner)), 0.5, 0, roi);
            }
        }
        // Outline merge groups: a line wherever neighbouring patches belong to different tokens.
        for (int y = 0; y < grid_h; ++y)
            for (int x = 0; x < grid_w; ++x) {
                const int32_t o = t.patch_owner[size_t(y * grid_w + x)];
                if (o < 0 || t.kind[size_t(o)] != TokenKind::merged) continue;
                auto differs = [&](int yy, int xx) {
                    return yy < 0 || xx < 0 || yy >= grid_h || xx >= grid_w || t.patch_owner[size_t(yy * grid_w + xx)] != o;
                };
                const cv::Scalar c = group_colour(o);
                const int px = x * cell, py = y * cell;
                if (differs(y - 1, x)) cv::line(panel, {px, py}, {px + cell - 1, py}, c, 2);
                if (differs(y + 1, x)) cv::line(panel, {px, py + cell - 1}, {px + cell - 1, py + cell - 1}, c, 2);
                if (differs(y, x - 1)) cv::line(panel, {px, py}, {px, py + cell - 1}, c, 2);
                if (differs(y, x + 1)) cv::line(panel, {px + cell - 1, py}, {px + cell - 1, py + cell - 1}, c, 2);
            }
        panel.copyTo(canvas(cv::Rect(x0, kCaption, pw, ph)));
        caption(canvas, x0, t.stage + " @ block " + std::to_string(t.block) + ": " + std::to_string(t.count) + " tokens");
    }

    // Legend
    const int y = kCaption + ph + 8;
    int x = 6;
    auto swatch = [&](const cv::Scalar& colour, const std::string& text) {
        cv::rectangle(canvas, cv::Rect(x, y, 18, 18), colour, cv::FILLED);
        cv::rectangle(canvas, cv::Rect(x, y, 18, 18), cv::Scalar(0, 0, 0), 1);
        cv::putText(canvas, text, {x + 24, y + 14}, cv::FONT_HERSHEY_SIMPLEX, 0.45, cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
        x += 34 + cv::getTextSize(text, cv::FONT_HERSHEY_SIMPLEX, 0.45, 1, nullptr).width;
    };
    swatch(cv::Scalar(255, 255, 255), "kept");
    swatch(group_colour(3), "merged (one colour per group)");
    swatch(kFused, "fused into one token");
    swatch(cv::Scalar(40, 40, 40), "dropped");
    if (!cv::imwrite(path, canvas)) fail(path, "cannot write the visualization");
}

}  // namespace tessera
