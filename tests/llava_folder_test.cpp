// LLaVA model folders: the hub's weight-name layouts, and malformed folders
// failing with a message that names the file and the problem.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "models/llava.h"
#include "test_support.h"

namespace tessera {
namespace {
using namespace test;
namespace fs = std::filesystem;

std::string copy_fixture(const std::string& name) {
    const std::string dir = temp_dir() + "/" + name;
    fs::copy(source_path("tests/fixtures/llava/" + name), dir, fs::copy_options::recursive);
    fs::remove_all(dir + "/reference");
    return dir;
}

void edit_json(const std::string& path, const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j = nlohmann::json::parse(std::ifstream(path));
    edit(j);
    std::ofstream(path) << j.dump(2);
}

std::string load_error(const std::string& dir) {
    return error_of([&] {
        LlavaModel m;
        llava_load(m, dir);
    });
}

// First-step logits of the fixture's reference prompt.
std::vector<float> first_logits(const std::string& dir) {
    LlavaModel m;
    llava_load(m, dir, {.dtype = "f32", .load_tokenizer = false});
    LlavaVisionState vs;
    llava_vision_state_init(vs, m);
    std::vector<float> pixels(static_cast<size_t>(3 * m.cfg.vision.image_size * m.cfg.vision.image_size), 0.25f);
    const int64_t visual = llava_encode_image(m, vs, pixels.data(), nullptr, 0, nullptr);
    std::vector<int32_t> ids = {0, 5, 7};
    ids.insert(ids.end(), size_t(visual), m.cfg.image_token_id);
    ids.push_back(9);
    std::vector<float> embeds(ids.size() * size_t(m.cfg.text.hidden));
    llava_embed_prompt(m, ids, vs.features, visual, embeds.data());
    std::vector<int32_t> pos(ids.size());
    for (size_t i = 0; i < pos.size(); ++i) pos[i] = int32_t(i);
    LlamaState st;
    llama_state_init(st, m.text, int64_t(ids.size()), int64_t(ids.size()));
    llama_forward(m.text, st, embeds.data(), pos.data(), int64_t(ids.size()), nullptr);
    return std::vector<float>(st.logits, st.logits + m.cfg.text.vocab);
}

TEST(LlavaFolder, ReadsTheTransformers452WeightNamesInOneFile) {
    // transformers >= 4.52 saves model.language_model.*, model.vision_tower.vision_model.*,
    // model.multi_modal_projector.* and lm_head.weight.
    const std::string dir = copy_fixture("tiny-llava-gqa");
    SafeTensorsSet set(dir);
    std::vector<NamedTensor> renamed;
    for (const auto& [name, e] : set.entries()) {
        std::string n = name;
        auto swap = [&](const std::string& from, const std::string& to) {
            if (n.rfind(from, 0) == 0) n = to + n.substr(from.size());
        };
        swap("language_model.model.", "model.language_model.");
        swap("language_model.lm_head.", "lm_head.");
        swap("vision_tower.", "model.vision_tower.vision_model.");
        swap("multi_modal_projector.", "model.multi_modal_projector.");
        NamedTensor t{n, e.info->shape, std::vector<float>(static_cast<size_t>(e.info->numel()))};
        e.file->read_f32(name, e.info->shape, t.values.data());
        renamed.push_back(std::move(t));
    }
    const std::string other = temp_dir() + "/renamed";
    fs::create_directories(other);
    for (const auto& f : fs::directory_iterator(dir))
        if (f.path().extension() == ".json" && f.path().filename() != "model.safetensors.index.json")
            fs::copy(f.path(), other + "/" + f.path().filename().string());
    write_file(other + "/model.safetensors", safetensors_bytes(renamed));
    fs::copy(dir + "/tokenizer.json", other + "/tokenizer.json", fs::copy_options::overwrite_existing);

    LlavaModel m;
    llava_load(m, other);
    EXPECT_EQ(m.layout, "transformers-4.52+");
    EXPECT_EQ(first_logits(other), first_logits(dir));
}

TEST(LlavaFolder, MissingShardIsNamed) {
    const std::string dir = copy_fixture("tiny-llava-gqa");
    fs::remove(dir + "/model-00002-of-00003.safetensors");
    const std::string e = load_error(dir);
    EXPECT_NE(e.find("model.safetensors.index.json: shard 'model-00002-of-00003.safetensors'"), std::string::npos) << e;
    EXPECT_NE(e.find("is missing"), std::string::npos) << e;
}

TEST(LlavaFolder, ShapeMismatchNamesTensorAndShapes) {
    const std::string dir = copy_fixture("tiny-llava-gqa");
    edit_json(dir + "/config.json", [](nlohmann::json& j) { j["text_config"]["intermediate_size"] = 161; });
    const std::string e = load_error(dir);
    EXPECT_NE(e.find("tensor 'language_model.model.layers.0.mlp.gate_proj.weight' has shape [160, 64], expected "
                     "[161, 64] from config.json"),
              std::string::npos)
        << e;
}

TEST(LlavaFolder, UnknownRopeScalingIsRejected) {
    const std::string dir = copy_fixture("tiny-llava-gqa");
    edit_json(dir + "/config.json", [](nlohmann::json& j) { j["text_config"]["rope_parameters"]["rope_type"] = "yarn"; });
    EXPECT_NE(load_error(dir).find("config.json: key 'text_config.rope_parameters': unknown rope scaling type 'yarn' "
                                   "(supported: default, linear, llama3)"),
              std::string::npos);
    // The 4.x spelling, rope_scaling {type: ...}.
    const std::string old = copy_fixture("tiny-llava-mha");
    edit_json(old + "/config.json",
              [](nlohmann::json& j) { j["text_config"]["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}}; });
    EXPECT_NE(load_error(old).find("key 'text_config.rope_scaling': unknown rope scaling type 'dynamic'"),
              std::string::npos);
}

TEST(LlavaFolder, MissingTokenizerIsNamed) {
    const std::string dir = copy_fixture("tiny-llava-gqa");
    fs::remove(dir + "/tokenizer.json");
    const std::string e = load_error(dir);
    EXPECT_NE(e.find("tokenizer.json"), std::string::npos) << e;
    EXPECT_NE(e.find("tokenizer.model"), std::string::npos) << e;
}

TEST(LlavaFolder, OtherBrokenFoldersGiveClearErrors) {
    struct Case {
        const char* what;
        std::function<void(const std::string&)> breakit;
        const char* expected;
    };
    const std::vector<Case> cases = {
        {"no config", [](const std::string& d) { fs::remove(d + "/config.json"); }, "config.json is missing"},
        {"config not JSON", [](const std::string& d) { write_file(d + "/config.json", "{\"model_type\": "); },
         "config.json"},
        {"not llava",
         [](const std::string& d) { edit_json(d + "/config.json", [](nlohmann::json& j) { j["model_type"] = "vit"; }); },
         "key 'model_type': expected 'llava', got 'vit'"},
        {"feature layer out of range",
         [](const std::string& d) {
             edit_json(d + "/config.json", [](nlohmann::json& j) { j["vision_feature_layer"] = -9; });
         },
         "key 'vision_feature_layer': layer out of range for a 4-layer vision tower"},
        {"gqa heads",
         [](const std::string& d) {
             edit_json(d + "/config.json", [](nlohmann::json& j) { j["text_config"]["num_key_value_heads"] = 3; });
         },
         "num_key_value_heads' 3 does not divide num_attention_heads 4"},
        {"image token",
         [](const std::string& d) {
             edit_json(d + "/config.json", [](nlohmann::json& j) { j["image_token_index"] = 5; });
         },
         "the tokenizer maps '<image>' to 638 but config.json's image token is 5"},
        {"no image processor", [](const std::string& d) { fs::remove(d + "/processor_config.json"); },
         "neither preprocessor_config.json nor processor_config.json"},
        {"crop differs",
         [](const std::string& d) {
             edit_json(d + "/processor_config.json",
                       [](nlohmann::json& j) { j["image_processor"]["crop_size"] = {{"height", 48}, {"width", 48}}; });
         },
         "crop_size 48x48 differs from the vision tower's image_size 56"},
        {"truncated shard",
         [](const std::string& d) { fs::resize_file(d + "/model-00003-of-00003.safetensors", 1000); },
         "model-00003-of-00003.safetensors"},
        {"index names a tensor the shard lacks",
         [](const std::string& d) {
             edit_json(d + "/model.safetensors.index.json", [](nlohmann::json& j) {
                 j["weight_map"]["extra.weight"] = "model-00001-of-00003.safetensors";
             });
         },
         "tensor 'extra.weight' is listed in model.safetensors.index.json for this shard but is not in it"},
        {"shard outside the folder",
         [](const std::string& d) {
             edit_json(d + "/model.safetensors.index.json",
                       [](nlohmann::json& j) { j["weight_map"]["lm_head.weight"] = "../x.safetensors"; });
         },
         "must be a file name inside the model folder"},
        {"shard name longer than a file name (found by fuzz_safetensors_index)",
         [](const std::string& d) {
             edit_json(d + "/model.safetensors.index.json",
                       [](nlohmann::json& j) { j["weight_map"]["lm_head.weight"] = std::string(300, 'x'); });
         },
         "is longer than a file name can be"},
        {"no weights",
         [](const std::string& d) {
             for (const auto& f : fs::directory_iterator(d))
                 if (f.path().extension() == ".safetensors" || f.path().filename() == "model.safetensors.index.json")
                     fs::remove(f.path());
         },
         "no weights: neither model.safetensors nor model.safetensors.index.json"},
    };
    for (const Case& c : cases) {
        const std::string dir = copy_fixture("tiny-llava-gqa");
        c.breakit(dir);
        const std::string e = load_error(dir);
        EXPECT_NE(e.find(c.expected), std::string::npos) << c.what << ": " << e;
        fs::remove_all(dir);
    }
}

}  // namespace
}  // namespace tessera
