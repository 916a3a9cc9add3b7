#include "tessera/tokens.h"

#include <algorithm>
#include <cassert>

namespace tessera {

void TokenState::init(int prefix_tokens, int grid_height, int grid_width) {
    prefix = prefix_tokens;
    grid_h = grid_height;
    grid_w = grid_width;
    count = prefix + grid_h * grid_w;
    proportional_attention = false;
    size.assign(size_t(count), 1.0f);
    remap_scratch.assign(size_t(count), 0);
    patch_owner.resize(size_t(patches()));
    for (int p = 0; p < patches(); ++p) patch_owner[size_t(p)] = prefix + p;
}

void TokenState::remap(const int32_t* old_to_new, int new_count) {
    assert(new_count <= count);
    for (int t = 0; t < prefix; ++t) assert(old_to_new[t] == t);
    // New sizes are sums over the old tokens that map to each new token.
    float* new_size = reinterpret_cast<float*>(remap_scratch.data());
    static_assert(sizeof(float) == sizeof(int32_t));
    std::fill(new_size, new_size + new_count, 0.0f);
    for (int t = 0; t < count; ++t)
        if (old_to_new[t] >= 0) new_size[old_to_new[t]] += size[size_t(t)];
    std::copy(new_size, new_size + new_count, size.begin());
    for (int32_t& owner : patch_owner)
        if (owner >= 0) owner = old_to_new[owner];
    count = new_count;
}

std::vector<int32_t> TokenState::patches_of(int token) const {
    std::vector<int32_t> out;
    for (int p = 0; p < patches(); ++p)
        if (patch_owner[size_t(p)] == token) out.push_back(p);
    return out;
}

}  // namespace tessera
