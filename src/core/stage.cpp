#include "tessera/stage.h"

#include "tessera/error.h"

namespace tessera {

void stage_require_intact_grid(const AttentionView& view, const std::string& stage, const std::string& where) {
    const TokenState& ts = *view.state;
    if (view.tokens == ts.count && ts.is_intact_grid()) return;
    fail(where, "block " + std::to_string(view.block) + ": the sequence (" + std::to_string(ts.count) +
                    " tokens) is no longer the intact " + std::to_string(ts.grid_h) + "x" + std::to_string(ts.grid_w) +
                    " patch grid; " + stage + " must come before token-reducing stages at that block");
}

}  // namespace tessera
