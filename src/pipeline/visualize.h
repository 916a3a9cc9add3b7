// Pictures of what a stage chain did to an image's patches: one panel per
// reorganization (stage and block), each patch shaded by its fate there —
// kept (clear), merged (a colour per merge group, outlined), fused into
// EViT's extra token (blue), dropped (dark).
#pragma once
#include <string>
#include <vector>

#include "io/image.h"
#include "models/vit.h"

namespace tessera {

// crop: the model-input image (after resize and crop), grid_h x grid_w
// patches of `patch` pixels. Writes a PNG.
void visualize_token_fates(const Image& crop, int grid_h, int grid_w, int patch,
                           const std::vector<TokenTrace>& trace, const std::string& path);

}  // namespace tessera
