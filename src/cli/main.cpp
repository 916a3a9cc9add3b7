// tessera: command-line front end. Every error ends in one line on stderr
// ("tessera: error: ...") and a non-zero exit status.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "cli/commands.h"
#include "tessera/error.h"

int main(int argc, char** argv) {
    CLI::App app{"Tessera: vision transformers on CPUs, with token-efficiency stage chains"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "tessera 0.1.0");
    tessera::cli::add_classify(app);
    tessera::cli::add_bench(app);
    tessera::cli::add_run(app);
    tessera::cli::add_inspect(app);
    tessera::cli::add_report(app);
    tessera::cli::add_caption(app);
    tessera::cli::add_tokenize(app);
    tessera::cli::add_analyze(app);
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        std::fprintf(stderr, "tessera: error: %s (see --help)\n", e.what());
        return 2;
    } catch (const tessera::Error& e) {
        std::fprintf(stderr, "tessera: error: %s\n", e.what());
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tessera: error: %s\n", e.what());
        return 1;
    }
    return 0;
}
