#include "stages/window_attention.h"

#include "tessera/error.h"

namespace tessera {

WindowAttentionStage::WindowAttentionStage(YamlMap& params) { fail(params.file(), "stage 'window_attention' is not implemented yet"); }

}  // namespace tessera
