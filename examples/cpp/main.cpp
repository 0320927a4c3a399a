// segdeploy_aoti PACKAGE.pt2 INPUTS OUTPUTS [REPEATS]
//
// Loads a decoder package built by `segdeploy build-engine --runtime aoti`, runs it on the contract's
// inputs read from INPUTS (a tensor file, see tensor_file.h), and writes the contract's outputs to
// OUTPUTS. Input and output names come from the package's own metadata. With REPEATS > 0 it also
// times that many further calls and prints the mean. Exit 0 on success, 2 on bad input, 1 otherwise.
#include "tensor_file.h"

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>

namespace {

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> parts;
  std::stringstream stream(text);
  for (std::string part; std::getline(stream, part, ',');) {
    if (!part.empty()) parts.push_back(part);
  }
  return parts;
}

std::string metadata_value(const std::unordered_map<std::string, std::string>& metadata, const std::string& key) {
  const auto found = metadata.find(key);
  if (found == metadata.end()) {
    throw std::invalid_argument("the package has no " + key + " metadata; build it with `segdeploy build-engine --runtime aoti`");
  }
  return found->second;
}

// The inputs in the package's order, on its device (host inputs, sizes, stay on the CPU).
std::vector<at::Tensor> ordered_inputs(const NamedTensors& file, const std::unordered_map<std::string, std::string>& metadata) {
  std::map<std::string, at::Tensor> by_name(file.begin(), file.end());
  const auto host = split(metadata_value(metadata, "segdeploy.host_inputs"));
  const bool cuda = metadata_value(metadata, "segdeploy.device") == "cuda";
  std::vector<at::Tensor> inputs;
  for (const auto& name : split(metadata_value(metadata, "segdeploy.inputs"))) {
    const auto found = by_name.find(name);
    if (found == by_name.end()) throw std::invalid_argument("the inputs file has no tensor named " + name);
    const bool on_host = std::find(host.begin(), host.end(), name) != host.end();
    inputs.push_back(cuda && !on_host ? found->second.to(at::Device(at::kCUDA)) : found->second);
  }
  return inputs;
}

// Bounds of a request, as segdeploy.limits (RequestLimits) sets them for Decoder and bench: checked
// before the package allocates anything for the call.
constexpr int64_t kMaxOutputSide = 16384;
constexpr int64_t kMaxOutputPixels = int64_t{8192} * 8192;
constexpr int64_t kMaxPrompts = 4096;
constexpr int64_t kMaxPoints = 64;

void check_bounds(const NamedTensors& file) {
  for (const auto& [name, tensor] : file) {
    if (name == "orig_im_size") {
      if (tensor.numel() != 2) throw std::invalid_argument("orig_im_size must hold two values (H, W)");
      const auto size = tensor.to(at::kLong).contiguous();
      const int64_t height = size.data_ptr<int64_t>()[0], width = size.data_ptr<int64_t>()[1];
      if (height < 1 || width < 1 || std::max(height, width) > kMaxOutputSide || height * width > kMaxOutputPixels) {
        throw std::invalid_argument("orig_im_size " + std::to_string(height) + "x" + std::to_string(width) +
                                    " is outside 1..16384 a side and 67 megapixels");
      }
    }
    if (name == "point_coords" && tensor.dim() == 3 && (tensor.size(0) > kMaxPrompts || tensor.size(1) > kMaxPoints)) {
      throw std::invalid_argument("point_coords is [" + std::to_string(tensor.size(0)) + "," + std::to_string(tensor.size(1)) +
                                  ",2]: at most 4096 prompts of 64 point slots per call");
    }
  }
}

int parse_repeats(const char* text) {
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  if (end == text || *end != '\0' || value < 0 || value > 100000) {
    throw std::invalid_argument(std::string("REPEATS takes 0..100000, got ") + text);
  }
  return static_cast<int>(value);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4 || argc > 5) {
    std::cerr << "usage: " << argv[0] << " PACKAGE.pt2 INPUTS OUTPUTS [REPEATS]\n";
    return 2;
  }
  try {
    const int repeats = argc == 5 ? parse_repeats(argv[4]) : 0;
    const auto file = read_tensor_file(argv[2]);
    check_bounds(file);
    torch::inductor::AOTIModelPackageLoader loader(argv[1]);
    const auto metadata = loader.get_metadata();
    const auto inputs = ordered_inputs(file, metadata);
    const auto outputs = loader.run(inputs);
    const auto names = split(metadata_value(metadata, "segdeploy.outputs"));
    if (names.size() != outputs.size()) throw std::runtime_error("the package returned an unexpected number of outputs");
    NamedTensors named;
    for (size_t i = 0; i < outputs.size(); ++i) named.emplace_back(names[i], outputs[i].cpu());
    write_tensor_file(argv[3], named);
    if (repeats > 0) {
      const auto start = std::chrono::steady_clock::now();
      for (int i = 0; i < repeats; ++i) loader.run(inputs);
      const std::chrono::duration<double, std::milli> elapsed = std::chrono::steady_clock::now() - start;
      std::cout << "mean " << elapsed.count() / repeats << " ms per call over " << repeats << " calls\n";
    }
    std::cout << "wrote " << outputs.size() << " outputs to " << argv[3] << "\n";
    return 0;
  } catch (const std::invalid_argument& error) {
    std::cerr << "error: " << error.what() << "\n";
    return 2;
  } catch (const std::exception& error) {
    std::cerr << "error: " << error.what() << "\n";
    return 1;
  }
}
