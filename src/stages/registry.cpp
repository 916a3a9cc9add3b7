#include "stages/registry.h"

#include "stages/biformer_routing.h"
#include "stages/damro.h"
#include "stages/dyvte.h"
#include "stages/evit.h"
#include "stages/fastervlm.h"
#include "stages/fastv.h"
#include "stages/noop.h"
#include "stages/tome.h"
#include "stages/var.h"
#include "stages/vtc_cls.h"
#include "stages/window_attention.h"
#include "tessera/error.h"

namespace tessera {

namespace {

struct StageEntry {
    const char* name;
    std::unique_ptr<Stage> (*make)(YamlMap& params);
};

template <class T>
std::unique_ptr<Stage> make(YamlMap& params) {
    return std::make_unique<T>(params);
}

constexpr StageEntry registry[] = {
    {"noop", make<NoopStage>},
    {"evit", make<EvitStage>},
    {"tome", make<TomeStage>},
    {"biformer_routing", make<BiformerRoutingStage>},
    {"window_attention", make<WindowAttentionStage>},
    {"vtc_cls", make<VtcClsStage>},
    {"fastervlm", make<FasterVlmStage>},
    {"dyvte", make<DyvteStage>},
    {"fastv", make<FastvStage>},
    {"var", make<VarStage>},
    {"damro", make<DamroStage>},
};

}  // namespace

std::unique_ptr<Stage> stage_create(const std::string& name, YamlMap& params, const std::string& where) {
    for (const StageEntry& e : registry)
        if (name == e.name) {
            std::unique_ptr<Stage> stage = e.make(params);
            params.finish();
            return stage;
        }
    std::string known;
    for (const StageEntry& e : registry) known += (known.empty() ? "" : ", ") + std::string(e.name);
    fail(where, "unknown stage '" + name + "' (known: " + known + ")");
}

std::vector<std::string> stage_names() {
    std::vector<std::string> names;
    for (const StageEntry& e : registry) names.emplace_back(e.name);
    return names;
}

}  // namespace tessera
