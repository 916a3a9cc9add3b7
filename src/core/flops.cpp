#include "tessera/flops.h"

namespace tessera {

const char* component_name(Component c) {
    switch (c) {
        case Component::patch_embed: return "patch_embed";
        case Component::attention: return "attention";
        case Component::mlp: return "mlp";
        case Component::head: return "head";
        case Component::projector: return "projector";
        case Component::decoder: return "decoder";
        case Component::other: return "other";
        case Component::count_: break;
    }
    return "?";
}

const std::string& Ledger::model_stage() {
    static const std::string name = "model";
    return name;
}

void Ledger::add(Component c, uint64_t macs) {
    per_component_[size_t(c)] += macs;
    per_stage_[*stage_] += macs;
}

void Ledger::absorb(Ledger& helper) {
    for (size_t c = 0; c < per_component_.size(); ++c) per_component_[c] += helper.per_component_[c];
    for (auto& [name, macs] : helper.per_stage_)
        if (macs) per_stage_[name] += macs;
    helper.reset();
}

uint64_t Ledger::total() const {
    uint64_t t = 0;
    for (uint64_t v : per_component_) t += v;
    return t;
}

void Ledger::reset() {
    per_component_.fill(0);
    for (auto& [name, macs] : per_stage_) macs = 0;
}

}  // namespace tessera
