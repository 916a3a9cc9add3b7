// Class-name lists and dataset label files (TSV).
#pragma once
#include <string>
#include <vector>

namespace tessera {

// Class names by index. Accepts "index<TAB>[wnid<TAB>]names" rows (a header
// row is skipped) or one name per line. The first comma-separated name is
// used. Throws naming the file and line for malformed rows.
std::vector<std::string> class_names_read(const std::string& path);
std::vector<std::string> class_names_parse(const std::string& text, const std::string& where);
// The ImageNet-1k list compiled into the binary.
const std::vector<std::string>& class_names_imagenet();

struct LabeledImage {
    std::string image;  // file name relative to the dataset's image folder
    int label = -1;
};

// "image<TAB>class_index" rows, header optional; labels must be < num_classes.
std::vector<LabeledImage> dataset_labels_read(const std::string& path, int num_classes);

}  // namespace tessera
