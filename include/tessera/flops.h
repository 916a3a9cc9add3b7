// The FLOPs ledger: every kernel adds the multiply-accumulates it performs,
// keyed by model component and by the stage that was active. Nothing is
// counted by hand elsewhere. MACs follow the papers' convention: matrix
// products and convolutions (attention scores and value products included);
// elementwise work excluded.
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <string>

namespace tessera {

enum class Component : uint8_t { patch_embed, attention, mlp, head, projector, decoder, other, count_ };
const char* component_name(Component c);

class Ledger {
public:
    void add(uint64_t macs) { add(component_, macs); }
    void add(Component c, uint64_t macs);

    uint64_t total() const;
    uint64_t by_component(Component c) const { return per_component_[size_t(c)]; }
    const std::map<std::string, uint64_t>& by_stage() const { return per_stage_; }
    // Zeroes every count. Stages booked to before stay listed, at 0, so that
    // the next forward pass books to them without allocating.
    void reset();

    Component component() const { return component_; }
    const std::string& stage() const { return *stage_; }

    // For work split across threads (kernels/row_shares.h): a helper ledger
    // books to what `parent` books to now, and the parent then absorbs its
    // counts, leaving it at zero.
    void book_as(const Ledger& parent) { component_ = parent.component_, stage_ = parent.stage_; }
    void absorb(Ledger& helper);

    // RAII: everything added inside the scope is booked to this component.
    class ComponentScope {
    public:
        ComponentScope(Ledger* l, Component c) : ledger_(l), saved_(l ? l->component_ : Component::other) { if (l) l->component_ = c; }
        ~ComponentScope() { if (ledger_) ledger_->component_ = saved_; }
        ComponentScope(const ComponentScope&) = delete;
        ComponentScope& operator=(const ComponentScope&) = delete;
    private:
        Ledger* ledger_;
        Component saved_;
    };
    // RAII: everything added inside the scope is also booked to this stage
    // (the base model's own work is booked to "model"). The name is not
    // copied (no allocation in a forward pass): it must outlive the scope,
    // as a stage's own name() does.
    class StageScope {
    public:
        StageScope(Ledger* l, const std::string& name) : ledger_(l), saved_(l ? l->stage_ : nullptr) {
            if (l) l->stage_ = &name;
        }
        ~StageScope() { if (ledger_) ledger_->stage_ = saved_; }
        StageScope(const StageScope&) = delete;
        StageScope& operator=(const StageScope&) = delete;
    private:
        Ledger* ledger_;
        const std::string* saved_;
    };

private:
    static const std::string& model_stage();

    std::array<uint64_t, size_t(Component::count_)> per_component_{};
    std::map<std::string, uint64_t> per_stage_;
    Component component_ = Component::other;
    const std::string* stage_ = &model_stage();
};

}  // namespace tessera
