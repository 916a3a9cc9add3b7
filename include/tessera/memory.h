// How much memory a load or a run may take, checked before allocating so a
// model or a batch that cannot fit fails with a clear error instead of being
// killed by the kernel half-way.
#pragma once
#include <cstdint>
#include <string>

namespace tessera {

// Bytes this process can still allocate: the smaller of /proc/meminfo's
// MemAvailable and the cgroup's memory.max - memory.current (containers).
// TESSERA_MEMORY_LIMIT (bytes, or with a K/M/G suffix) overrides both.
uint64_t memory_available();

// The machine's physical memory in bytes (0 when unknown).
uint64_t memory_physical();

// The most resident memory this process has held so far (getrusage's
// ru_maxrss): what a benchmark reports as peak memory.
uint64_t peak_resident_bytes();

// "1.23 GiB" / "456 MiB" / "12 KiB".
std::string memory_string(uint64_t bytes);

// Throws tessera::Error "WHERE: WHAT needs N of memory, but only M is
// available[; HINT]" when bytes exceed memory_available().
void memory_check(const std::string& where, const std::string& what, uint64_t bytes, const std::string& hint = "");

}  // namespace tessera
