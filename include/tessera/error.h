// Errors users can meet: one exception type whose message names the file (or
// setting) and the problem. Invariant violations inside the engine use assert.
#pragma once
#include <stdexcept>
#include <string>

namespace tessera {

class Error : public std::runtime_error {
public:
    explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// "PATH: message" — the shape every load/config error takes.
[[noreturn]] void fail(const std::string& where, const std::string& message);

}  // namespace tessera
