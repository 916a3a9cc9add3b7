#include "test_support.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;

namespace tessera::test {

std::string shared_dir() {
    if (const char* env = std::getenv("TESSERA_SHARED"); env && *env) return fs::is_directory(env) ? env : "";
    fs::path p = fs::path(TESSERA_SOURCE_DIR) / ".." / "shared";
    return fs::is_directory(p / "models") ? fs::canonical(p).string() : "";
}

std::string source_path(const std::string& relative) { return (fs::path(TESSERA_SOURCE_DIR) / relative).string(); }

namespace {
struct TempRoot {
    fs::path root;
    TempRoot() {
        std::string tmpl = (fs::temp_directory_path() / "tessera-test-XXXXXX").string();
        root = mkdtemp(tmpl.data());
    }
    ~TempRoot() {
        std::error_code ec;
        fs::remove_all(root, ec);
    }
};
}  // namespace

std::string temp_dir() {
    static TempRoot root;
    static int counter = 0;
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "global";
    for (char& c : name)
        if (c == '/') c = '_';
    fs::path dir = root.root / (name + "-" + std::to_string(counter++));
    fs::create_directories(dir);
    return dir.string();
}

std::string write_file(const std::string& path, const std::string& bytes) {
    std::ofstream f(path, std::ios::binary);
    f.write(bytes.data(), std::streamsize(bytes.size()));
    return path;
}

std::string read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

CommandResult run_command(const std::string& command) {
    std::string dir = temp_dir();
    std::string out = dir + "/stdout", err = dir + "/stderr";
    std::string full = "( " + command + " ) >'" + out + "' 2>'" + err + "' </dev/null";
    int status = std::system(full.c_str());
    CommandResult r;
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = read_file(out);
    r.err = read_file(err);
    return r;
}

std::string reference_python() {
    static std::string cached = [] {
        for (const char* py : {"/usr/bin/python3", "python3"}) {
            std::string cmd = std::string(py) + " -c 'import numpy, PIL' >/dev/null 2>&1";
            if (std::system(cmd.c_str()) == 0) return std::string(py);
        }
        return std::string();
    }();
    return cached;
}

}  // namespace tessera::test
