#include "tessera/memory.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <string>

#include "tessera/error.h"

namespace tessera {
namespace {

constexpr uint64_t unlimited = std::numeric_limits<uint64_t>::max();

// "123", "4K", "512M", "2G" (powers of 1024); nullopt-like `unlimited` when malformed.
uint64_t parse_size(const std::string& text) {
    if (text.empty()) return unlimited;
    size_t used = 0;
    unsigned long long value = 0;
    try {
        value = std::stoull(text, &used);
    } catch (const std::exception&) {
        return unlimited;
    }
    const std::string suffix = text.substr(used);
    int shift = 0;
    if (suffix == "K" || suffix == "k") shift = 10;
    else if (suffix == "M" || suffix == "m") shift = 20;
    else if (suffix == "G" || suffix == "g") shift = 30;
    else if (!suffix.empty()) return unlimited;
    if (value > (unlimited >> shift)) return unlimited;
    return uint64_t(value) << shift;
}

uint64_t read_number(const char* path) {
    std::ifstream in(path);
    std::string text;
    if (!(in >> text)) return unlimited;
    return text == "max" ? unlimited : parse_size(text);
}

uint64_t meminfo_available() {
    std::ifstream in("/proc/meminfo");
    std::string key, unit;
    uint64_t kib = 0;
    while (in >> key >> kib) {
        std::getline(in, unit);
        if (key == "MemAvailable:") return kib * 1024;
    }
    const long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && page > 0 ? uint64_t(pages) * uint64_t(page) : unlimited;
}

uint64_t cgroup_available() {
    const uint64_t max = read_number("/sys/fs/cgroup/memory.max");  // cgroup v2
    if (max == unlimited) return unlimited;
    const uint64_t current = read_number("/sys/fs/cgroup/memory.current");
    if (current == unlimited) return max;
    return max > current ? max - current : 0;
}

}  // namespace

uint64_t memory_available() {
    if (const char* limit = std::getenv("TESSERA_MEMORY_LIMIT"); limit && *limit) {
        const uint64_t bytes = parse_size(limit);
        if (bytes == unlimited)
            fail("TESSERA_MEMORY_LIMIT", "expected a byte count with an optional K, M or G suffix, got '" +
                                             std::string(limit) + "'");
        return bytes;
    }
    const uint64_t meminfo = meminfo_available(), cgroup = cgroup_available();
    return meminfo < cgroup ? meminfo : cgroup;
}

uint64_t memory_physical() {
    const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && page > 0 ? uint64_t(pages) * uint64_t(page) : 0;
}

uint64_t peak_resident_bytes() {
    rusage usage{};
    if (getrusage(RUSAGE_SELF, &usage) != 0) return 0;
    return uint64_t(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

std::string memory_string(uint64_t bytes) {
    char text[32];
    if (bytes >= (uint64_t(1) << 30)) std::snprintf(text, sizeof text, "%.2f GiB", double(bytes) / double(1 << 30));
    else if (bytes >= (uint64_t(1) << 20)) std::snprintf(text, sizeof text, "%.0f MiB", double(bytes) / double(1 << 20));
    else std::snprintf(text, sizeof text, "%.0f KiB", double(bytes) / 1024.0);
    return text;
}

void memory_check(const std::string& where, const std::string& what, uint64_t bytes, const std::string& hint) {
    const uint64_t available = memory_available();
    if (bytes <= available) return;
    std::string message = what;
    message += " needs ";
    message += memory_string(bytes);
    message += " of memory, but only ";
    message += memory_string(available);
    message += " is available";
    if (!hint.empty()) {
        message += "; ";
        message += hint;
    }
    fail(where, message);
}

}  // namespace tessera
