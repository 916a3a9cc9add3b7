// The token state of one image: how many tokens the sequence holds, which
// leading tokens are protected (CLS), how many original patches each token
// stands for, and which token covers each original patch (provenance). Stages
// reorganize tokens only through remap(), so provenance stays exact however
// stages compose. Sized once; remap() never allocates.
#pragma once
#include <cstdint>
#include <vector>

namespace tessera {

// What a token is made of, for reports and visualizations.
enum class TokenKind : uint8_t {
    prefix,  // CLS (or another protected token)
    patch,   // one original patch
    merged,  // several tokens averaged together (ToMe)
    fused,   // the weighted sum of dropped tokens (EViT's extra token)
};

struct TokenState {
    int count = 0;   // tokens in the sequence, prefix included
    int prefix = 0;  // leading tokens no stage may drop or merge (CLS)
    int grid_h = 0, grid_w = 0;
    bool proportional_attention = false;  // add log(size) to attention logits (ToMe)

    std::vector<float> size;           // [capacity] original patches merged into each token
    std::vector<TokenKind> kind;       // [capacity]
    std::vector<int32_t> patch_owner;  // [grid_h * grid_w] token covering each patch, -1 once dropped
    // The last remap (old index -> new index, over last_map_count old tokens),
    // so the engine can carry per-token signals such as the CLS attention row
    // through a reorganization.
    std::vector<int32_t> last_map;
    int last_map_count = 0;
    // remap() scratch, sized by init()
    std::vector<float> old_size;
    std::vector<TokenKind> old_kind;
    std::vector<bool> arrived_scratch;

    // Fresh state: `prefix` protected tokens followed by one token per patch in raster order.
    void init(int prefix_tokens, int grid_height, int grid_width);
    int patches() const { return grid_h * grid_w; }
    int capacity() const { return int(size.size()); }

    // Applies a reorganization. old_to_new[t] is the new index of old token t,
    // or -1 when it was dropped; several old tokens may map to one new token
    // (a merge or fusion: sizes add, the kind becomes merged unless the stage
    // marks it fused afterwards). Prefix tokens must keep their indices.
    void remap(const int32_t* old_to_new, int new_count);

    // True while the sequence is still the prefix followed by every patch in
    // raster order (what grid-structured attention such as windows needs).
    bool is_intact_grid() const;

    // Original patch indices (raster order) covered by a token.
    std::vector<int32_t> patches_of(int token) const;
};

}  // namespace tessera
