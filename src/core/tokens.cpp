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
    kind.assign(size_t(count), TokenKind::patch);
    std::fill(kind.begin(), kind.begin() + prefix, TokenKind::prefix);
    old_size.assign(size_t(count), 0.0f);
    old_kind.assign(size_t(count), TokenKind::patch);
    arrived_scratch.assign(size_t(count), false);
    last_map.assign(size_t(count), 0);
    last_map_count = 0;
    patch_owner.resize(size_t(patches()));
    for (int p = 0; p < patches(); ++p) patch_owner[size_t(p)] = prefix + p;
}

void TokenState::remap(const int32_t* old_to_new, int new_count) {
    assert(new_count <= count);
    for (int t = 0; t < prefix; ++t) assert(old_to_new[t] == t);
    // Old values are read from copies: a kept token may move to a higher index.
    std::copy(size.begin(), size.begin() + count, old_size.begin());
    std::copy(kind.begin(), kind.begin() + count, old_kind.begin());
    std::fill(size.begin(), size.begin() + new_count, 0.0f);
    std::vector<bool>& arrived = arrived_scratch;
    std::fill(arrived.begin(), arrived.begin() + new_count, false);
    for (int t = 0; t < count; ++t) {
        const int32_t to = old_to_new[t];
        if (to < 0) continue;
        assert(to < new_count);
        size[size_t(to)] += old_size[size_t(t)];
        if (!arrived[size_t(to)]) {
            kind[size_t(to)] = old_kind[size_t(t)];
            arrived[size_t(to)] = true;
        } else if (kind[size_t(to)] != TokenKind::fused) {
            kind[size_t(to)] = TokenKind::merged;
        }
    }
    for (int32_t& owner : patch_owner)
        if (owner >= 0) owner = old_to_new[owner];
    std::copy(old_to_new, old_to_new + count, last_map.begin());
    last_map_count = count;
    count = new_count;
}

bool TokenState::is_intact_grid() const {
    if (count != prefix + patches()) return false;
    for (int p = 0; p < patches(); ++p)
        if (patch_owner[size_t(p)] != prefix + p) return false;
    return true;
}

std::vector<int32_t> TokenState::patches_of(int token) const {
    std::vector<int32_t> out;
    for (int p = 0; p < patches(); ++p)
        if (patch_owner[size_t(p)] == token) out.push_back(p);
    return out;
}

}  // namespace tessera
