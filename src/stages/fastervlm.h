// FasterVLM (a peer of VTC-CLS): keep the `keep` visual tokens the CLS token
// attends to most at the feature layer alone (head mean), in raster order,
// before the projector. VTC-CLS's selection with a single layer.
//
//   - fastervlm: {keep: 64}
#pragma once
#include "stages/vtc_cls.h"

namespace tessera {

class FasterVlmStage : public VtcClsStage {
public:
    explicit FasterVlmStage(YamlMap& params) : VtcClsStage(params, LastLayerOnly{}, "fastervlm") {}
};

}  // namespace tessera
