// `tessera run` survives being killed: a real run over 96 images is killed
// with SIGKILL at 20 random moments and restarted each time; the finished
// results hold every image exactly once, equal to an uninterrupted run's.
#include <gtest/gtest.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "io/image.h"
#include "test_support.h"

namespace tessera {
namespace {
using namespace test;

// A run config over `count` noise images classified by a bundled tower.
std::string make_run(const std::string& dir, int count) {
    std::mt19937 rng(7);
    std::ofstream labels(dir + "/labels.tsv");
    for (int i = 0; i < count; ++i) {
        Image img;
        img.width = 224, img.height = 224;
        img.rgb.resize(size_t(224 * 224 * 3));
        for (auto& p : img.rgb) p = uint8_t(rng() & 0xff);
        const std::string name = "img-" + std::to_string(i) + ".png";
        std::filesystem::create_directories(dir + "/images");
        image_write_png(dir + "/images/" + name, img);
        labels << name << "\t" << (i % 5) << "\n";
    }
    return write_file(dir + "/run.yaml", "model: " + source_path("models/shapescenes-towers/vit") +
                                             "\ndataset: {images: images, labels: labels.tsv}\nthreads: 1\n");
}

// Starts `tessera run CONFIG --out OUT`, SIGKILLs it after `delay` (if still
// running); returns true when it finished on its own with status 0.
bool run_once(const std::string& config, const std::string& out, std::chrono::microseconds delay) {
    const pid_t pid = fork();
    if (pid == 0) {
        const int devnull = ::open("/dev/null", O_WRONLY);
        dup2(devnull, 1), dup2(devnull, 2);
        execl(TESSERA_BINARY, TESSERA_BINARY, "run", config.c_str(), "--out", out.c_str(), static_cast<char*>(nullptr));
        _exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + delay;
    int status = 0;
    while (std::chrono::steady_clock::now() < deadline) {
        if (waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) && WEXITSTATUS(status) == 0;
        std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

std::map<std::string, nlohmann::json> results_of(const std::string& out, size_t* lines) {
    std::map<std::string, nlohmann::json> by_image;
    std::ifstream in(out + "/results.jsonl");
    *lines = 0;
    for (std::string line; std::getline(in, line);) {
        ++*lines;
        nlohmann::json j = nlohmann::json::parse(line);
        by_image[j["image"]] = j["top"];
    }
    return by_image;
}

TEST(RunResume, TwentyKillsLoseNoFinishedImageAndDuplicateNone) {
    const int count = 96;
    const std::string dir = temp_dir();
    const std::string config = make_run(dir, count);
    // Reference: one uninterrupted run, and how long it takes.
    const auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(run_once(config, dir + "/clean", std::chrono::seconds(120)));
    const auto full = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
    size_t clean_lines = 0;
    const auto clean = results_of(dir + "/clean", &clean_lines);
    ASSERT_EQ(clean.size(), size_t(count));

    std::mt19937 rng(11);
    // Within an eighth of a full run: each restart finishes a few images at
    // most, so nearly every one of the 20 is killed part-way (or while starting).
    std::uniform_int_distribution<int64_t> when(0, full.count() / 8);
    int kills = 0;
    size_t previous = 0;
    for (int attempt = 0; attempt < 20; ++attempt) {
        // Each restart resumes where the last one was killed.
        if (!run_once(config, dir + "/killed", std::chrono::microseconds(when(rng)))) ++kills;
        size_t lines = 0;
        const auto partial = results_of(dir + "/killed", &lines);
        EXPECT_EQ(lines, partial.size()) << "a duplicate line after attempt " << attempt;
        EXPECT_GE(partial.size(), previous) << "finished images lost after attempt " << attempt;
        previous = partial.size();
    }
    ASSERT_TRUE(run_once(config, dir + "/killed", std::chrono::seconds(120)));  // let it finish
    size_t lines = 0;
    const auto resumed = results_of(dir + "/killed", &lines);
    EXPECT_EQ(lines, size_t(count));
    EXPECT_EQ(resumed, clean);  // same predictions, every image once
    EXPECT_TRUE(std::filesystem::exists(dir + "/killed/summary.json"));
    std::printf("[ measured ] %d of 20 restarts killed mid-run (clean run %.2f s); %zu images, none lost or repeated\n",
                kills, double(full.count()) * 1e-6, resumed.size());
    EXPECT_GE(kills, 15);  // the kills did land during the runs
}

}  // namespace
}  // namespace tessera
