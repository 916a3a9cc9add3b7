// Strict reading of YAML mappings: every key must be known, every value of
// the right type and range; errors read "FILE:LINE: key 'PATH': problem".
#pragma once
#include <yaml-cpp/yaml.h>

#include <set>
#include <string>
#include <vector>

namespace tessera {

// "FILE:LINE" of a node (1-based line).
std::string yaml_where(const std::string& file, const YAML::Node& node);

// A mapping key as a name; throws "FILE:LINE: key in 'CONTEXT': expected a
// plain name" for keys that are lists, mappings, null or tagged non-strings.
std::string yaml_key(const std::string& file, const YAML::Node& key, const std::string& context);

// Loads a YAML file; syntax errors name the file and line.
YAML::Node yaml_load_file(const std::string& path);

class YamlMap {
public:
    // `context` prefixes key names in messages (e.g. "stages[0].evit").
    YamlMap(const YAML::Node& node, std::string file, std::string context);

    bool has(const std::string& key) const;
    YAML::Node node(const std::string& key);  // marks the key as used
    double number(const std::string& key, double fallback);
    int integer(const std::string& key, int fallback, int min, int max);
    bool boolean(const std::string& key, bool fallback);
    std::string string(const std::string& key, const std::string& fallback);
    std::vector<int> integers(const std::string& key, const std::vector<int>& fallback, int min, int max);

    // Throws naming the key: "FILE:LINE: key 'ctx.key': message".
    [[noreturn]] void error(const std::string& key, const std::string& message) const;
    // Throws for the first key that was never read.
    void finish() const;

    const std::string& file() const { return file_; }
    std::string key_path(const std::string& key) const { return context_.empty() ? key : context_ + "." + key; }

private:
    YAML::Node map_;
    std::string file_, context_;
    std::set<std::string> used_;
};

}  // namespace tessera
