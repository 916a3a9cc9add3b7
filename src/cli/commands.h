// One function per subcommand: declares its options and its callback.
#pragma once
#include <CLI/CLI.hpp>

namespace tessera::cli {

void add_classify(CLI::App& app);
void add_bench(CLI::App& app);
void add_run(CLI::App& app);
void add_inspect(CLI::App& app);
void add_report(CLI::App& app);
void add_caption(CLI::App& app);
void add_tokenize(CLI::App& app);
void add_analyze(CLI::App& app);

}  // namespace tessera::cli
