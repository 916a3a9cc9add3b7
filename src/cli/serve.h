// Timing for the benchmarks (tessera bench, bench/*.cpp), and the engine's
// side of bench/paired.py's protocol.
#pragma once

#include <chrono>
#include <cstdio>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

// `untimed` calls of run_once, then the milliseconds of `timed` more.
template <class RunOnce>
std::vector<double> time_calls(int untimed, int timed, RunOnce&& run_once) {
    for (int i = 0; i < untimed; ++i) run_once();
    std::vector<double> ms;
    for (int i = 0; i < timed; ++i) {
        const auto start = std::chrono::steady_clock::now();
        run_once();
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    }
    return ms;
}

// For each stdin line "W N", time_calls(W, N) and print {"ms":[N times]};
// return at end of input. The caller prints its one-line JSON facts first.
template <class RunOnce>
void serve_paired_blocks(RunOnce&& run_once) {
    std::fflush(stdout);
    for (std::string line; std::getline(std::cin, line);) {
        if (line.empty()) continue;
        int untimed = 0, timed = 0;
        if (std::sscanf(line.c_str(), "%d %d", &untimed, &timed) != 2 || untimed < 0 || timed < 1)
            throw std::runtime_error("--serve: expected \"W N\" (untimed and timed runs), got '" + line + "'");
        const std::vector<double> ms = time_calls(untimed, timed, run_once);
        std::string reply = "{\"ms\":[";
        for (size_t i = 0; i < ms.size(); ++i) {
            if (i) reply += ',';
            reply += std::to_string(ms[i]);
        }
        std::printf("%s]}\n", reply.c_str());
        std::fflush(stdout);
    }
}
