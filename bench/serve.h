// The engine's side of bench/paired.py's protocol, for the C++ benchmarks:
// for each stdin line "W N", run W untimed and N timed calls of `run_once`
// and print {"ms":[N times]}; return at end of input. The caller prints its
// one-line JSON facts first.
#pragma once

#include <chrono>
#include <cstdio>
#include <iostream>
#include <stdexcept>
#include <string>

template <class RunOnce>
void serve_paired_blocks(RunOnce&& run_once) {
    std::fflush(stdout);
    for (std::string line; std::getline(std::cin, line);) {
        if (line.empty()) continue;
        int untimed = 0, timed = 0;
        if (std::sscanf(line.c_str(), "%d %d", &untimed, &timed) != 2 || untimed < 0 || timed < 1)
            throw std::runtime_error("--serve: expected \"W N\" (untimed and timed runs), got '" + line + "'");
        for (int i = 0; i < untimed; ++i) run_once();
        std::string reply = "{\"ms\":[";
        for (int i = 0; i < timed; ++i) {
            const auto start = std::chrono::steady_clock::now();
            run_once();
            const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
            if (i) reply += ',';
            reply += std::to_string(ms);
        }
        std::printf("%s]}\n", reply.c_str());
        std::fflush(stdout);
    }
}
