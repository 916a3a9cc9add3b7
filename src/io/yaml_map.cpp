#include "io/yaml_map.h"

#include <cmath>

#include "tessera/error.h"

namespace tessera {

std::string yaml_where(const std::string& file, const YAML::Node& node) {
    const YAML::Mark mark = node.Mark();
    return mark.line >= 0 ? file + ":" + std::to_string(mark.line + 1) : file;
}

YAML::Node yaml_load_file(const std::string& path) {
    try {
        return YAML::LoadFile(path);
    } catch (const YAML::BadFile&) {
        fail(path, "cannot open file");
    } catch (const YAML::Exception& e) {
        fail(path + ":" + std::to_string(e.mark.line + 1), "invalid YAML: " + e.msg);
    }
}

YamlMap::YamlMap(const YAML::Node& node, std::string file, std::string context)
    : map_(node), file_(std::move(file)), context_(std::move(context)) {
    if (node && !node.IsNull() && !node.IsMap())
        fail(yaml_where(file_, node), (context_.empty() ? std::string("document") : "key '" + context_ + "'") +
                                          ": expected a mapping of settings");
}

bool YamlMap::has(const std::string& key) const { return map_.IsMap() && map_[key]; }

YAML::Node YamlMap::node(const std::string& key) {
    used_.insert(key);
    return map_.IsMap() ? map_[key] : YAML::Node();
}

void YamlMap::error(const std::string& key, const std::string& message) const {
    YAML::Node where = map_.IsMap() && map_[key] ? map_[key] : map_;
    fail(yaml_where(file_, where), "key '" + key_path(key) + "': " + message);
}

double YamlMap::number(const std::string& key, double fallback) {
    YAML::Node v = node(key);
    if (!v) return fallback;
    double x;
    if (!v.IsScalar() || !YAML::convert<double>::decode(v, x) || !std::isfinite(x))
        error(key, "expected a number, got '" + (v.IsScalar() ? v.Scalar() : std::string("a list or mapping")) + "'");
    return x;
}

int YamlMap::integer(const std::string& key, int fallback, int min, int max) {
    YAML::Node v = node(key);
    if (!v) return fallback;
    long long x;
    if (!v.IsScalar() || !YAML::convert<long long>::decode(v, x))
        error(key, "expected an integer, got '" + (v.IsScalar() ? v.Scalar() : std::string("a list or mapping")) + "'");
    if (x < min || x > max)
        error(key, "must be in " + std::to_string(min) + ".." + std::to_string(max) + ", got " + std::to_string(x));
    return int(x);
}

bool YamlMap::boolean(const std::string& key, bool fallback) {
    YAML::Node v = node(key);
    if (!v) return fallback;
    bool x;
    if (!v.IsScalar() || !YAML::convert<bool>::decode(v, x))
        error(key, "expected true or false, got '" + (v.IsScalar() ? v.Scalar() : std::string("a list or mapping")) + "'");
    return x;
}

std::string YamlMap::string(const std::string& key, const std::string& fallback) {
    YAML::Node v = node(key);
    if (!v) return fallback;
    if (!v.IsScalar()) error(key, "expected a string");
    return v.Scalar();
}

std::vector<int> YamlMap::integers(const std::string& key, const std::vector<int>& fallback, int min, int max) {
    YAML::Node v = node(key);
    if (!v) return fallback;
    if (!v.IsSequence()) error(key, "expected a list of integers");
    std::vector<int> out;
    for (const YAML::Node& item : v) {
        long long x;
        if (!item.IsScalar() || !YAML::convert<long long>::decode(item, x))
            error(key, "expected a list of integers, found '" + (item.IsScalar() ? item.Scalar() : std::string("a list or mapping")) + "'");
        if (x < min || x > max)
            error(key, "values must be in " + std::to_string(min) + ".." + std::to_string(max) + ", got " + std::to_string(x));
        out.push_back(int(x));
    }
    return out;
}

std::string yaml_key(const std::string& file, const YAML::Node& key, const std::string& context) {
    if (!key.IsScalar())
        fail(yaml_where(file, key), "a key in '" + (context.empty() ? std::string("the document") : context) +
                                        "' is not a plain name (a list, mapping or empty key)");
    return key.Scalar();
}

void YamlMap::finish() const {
    if (!map_.IsMap()) return;
    for (const auto& kv : map_) {
        const std::string key = yaml_key(file_, kv.first, context_);
        if (!used_.count(key)) fail(yaml_where(file_, kv.first), "unknown key '" + key_path(key) + "'");
    }
}

}  // namespace tessera
