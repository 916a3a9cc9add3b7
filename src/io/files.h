// File-system queries that never throw: a path a user (or a hostile file)
// names may be too long or unreadable, and std::filesystem's throwing
// overloads would turn that into an unclear exception instead of the
// caller's error naming the file.
#pragma once
#include <filesystem>
#include <string>
#include <system_error>

namespace tessera {

// False when the path does not exist or cannot be examined.
inline bool path_exists(const std::string& path) noexcept {
    std::error_code ec;
    return std::filesystem::exists(path, ec) && !ec;
}

}  // namespace tessera
