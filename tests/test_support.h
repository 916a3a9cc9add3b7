// Helpers shared by the tests: where the real weights and images live, and
// temporary files.
#pragma once
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tessera::test {

// Folder with the real models and data: $TESSERA_SHARED, else ../shared next
// to the source tree. Empty when neither exists.
std::string shared_dir();

// Absolute path inside the repository.
std::string source_path(const std::string& relative);

// A fresh, empty temporary folder for this test (removed at exit).
std::string temp_dir();

// Writes bytes to a file, returns the path.
std::string write_file(const std::string& path, const std::string& bytes);
std::string read_file(const std::string& path);

// Runs a shell command, returns its exit code; stdout and stderr captured.
struct CommandResult {
    int exit_code = -1;
    std::string out;
    std::string err;
};
CommandResult run_command(const std::string& command);

// The Debian python3 with numpy and Pillow, or "" when not available.
std::string reference_python();

}  // namespace tessera::test

// Skips the current test, with the reason, when ../shared is not present.
#define TESSERA_REQUIRE_SHARED()                                                                     \
    do {                                                                                             \
        if (::tessera::test::shared_dir().empty())                                                   \
            GTEST_SKIP() << "real weights/images not found: set TESSERA_SHARED or provide ../shared"; \
    } while (0)

#define TESSERA_REQUIRE_PYTHON()                                                                  \
    do {                                                                                          \
        if (::tessera::test::reference_python().empty())                                          \
            GTEST_SKIP() << "python3 with numpy and Pillow not found (run scripts/setup.sh)";     \
    } while (0)
