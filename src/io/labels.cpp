#include "io/labels.h"

#include <charconv>
#include <fstream>
#include <sstream>

#include "tessera/error.h"

namespace tessera {

extern const char* const imagenet_classes_tsv;  // generated from models/imagenet-1k/classes.tsv

namespace {

std::vector<std::string> split(const std::string& line, char sep) {
    std::vector<std::string> out;
    std::stringstream ss(line);
    std::string field;
    while (std::getline(ss, field, sep)) out.push_back(field);
    return out;
}

bool parse_int(const std::string& s, int& out) {
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && ptr == s.data() + s.size();
}

std::string trim_cr(std::string s) {
    if (!s.empty() && s.back() == '\r') s.pop_back();
    return s;
}

std::string read_text(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) fail(path, "cannot open file");
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

}  // namespace

std::vector<std::string> class_names_parse(const std::string& text, const std::string& where) {
    std::vector<std::string> names;
    std::istringstream in(text);
    std::string line;
    for (int line_no = 1; std::getline(in, line); ++line_no) {
        line = trim_cr(line);
        if (line.empty()) continue;
        std::vector<std::string> f = split(line, '\t');
        std::string name = f.back();
        if (f.size() >= 2) {
            int index;
            if (!parse_int(f[0], index)) {
                if (names.empty()) continue;  // header row
                fail(where + ":" + std::to_string(line_no), "expected a class index, got '" + f[0] + "'");
            }
            if (index != int(names.size()))
                fail(where + ":" + std::to_string(line_no), "class index " + std::to_string(index) + " out of order (expected " +
                                                                std::to_string(names.size()) + ")");
        }
        names.push_back(name.substr(0, name.find(',')));
    }
    if (names.empty()) fail(where, "no class names found");
    return names;
}

std::vector<std::string> class_names_read(const std::string& path) { return class_names_parse(read_text(path), path); }

const std::vector<std::string>& class_names_imagenet() {
    static const std::vector<std::string> names = class_names_parse(imagenet_classes_tsv, "imagenet-1k classes");
    return names;
}

std::vector<LabeledImage> dataset_labels_read(const std::string& path, int num_classes) {
    std::istringstream in(read_text(path));
    std::vector<LabeledImage> out;
    std::string line;
    for (int line_no = 1; std::getline(in, line); ++line_no) {
        line = trim_cr(line);
        if (line.empty()) continue;
        std::vector<std::string> f = split(line, '\t');
        const std::string where = path + ":" + std::to_string(line_no);
        if (f.size() != 2) fail(where, "expected 'image<TAB>class_index'");
        LabeledImage item{f[0], -1};
        if (!parse_int(f[1], item.label)) {
            if (line_no == 1) continue;  // header
            fail(where, "class index '" + f[1] + "' is not an integer");
        }
        if (item.label < 0 || item.label >= num_classes)
            fail(where, "class index " + f[1] + " outside 0.." + std::to_string(num_classes - 1));
        if (item.image.empty() || item.image.find("..") != std::string::npos || item.image[0] == '/')
            fail(where, "image name '" + item.image + "' must be a relative path inside the image folder");
        out.push_back(item);
    }
    if (out.empty()) fail(path, "no labelled images");
    return out;
}

}  // namespace tessera
