#include "tensor_file.h"

#include <ATen/ops/empty.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace {

const char kMagic[8] = {'S', 'E', 'G', 'D', 'T', 'N', 'S', '1'};

template <typename T>
T read_value(std::ifstream& in, const std::string& path) {
  T value;
  if (!in.read(reinterpret_cast<char*>(&value), sizeof(T))) {
    throw std::runtime_error(path + ": truncated tensor file");
  }
  return value;
}

template <typename T>
void write_value(std::ofstream& out, T value) {
  out.write(reinterpret_cast<const char*>(&value), sizeof(T));
}

}  // namespace

NamedTensors read_tensor_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  char magic[8];
  if (!in.read(magic, 8) || std::memcmp(magic, kMagic, 8) != 0) {
    throw std::runtime_error(path + " is not a segdeploy tensor file");
  }
  NamedTensors tensors;
  const auto count = read_value<uint32_t>(in, path);
  for (uint32_t i = 0; i < count; ++i) {
    std::string name(read_value<uint32_t>(in, path), '\0');
    in.read(name.data(), static_cast<std::streamsize>(name.size()));
    const auto code = read_value<uint8_t>(in, path);
    const auto rank = read_value<uint8_t>(in, path);
    std::vector<int64_t> dims(rank);
    for (auto& dim : dims) dim = read_value<int64_t>(in, path);
    if (code != 1 && code != 2) throw std::runtime_error(path + ": unknown dtype code for " + name);
    auto tensor = at::empty(dims, code == 1 ? at::kFloat : at::kLong);
    const auto bytes = static_cast<std::streamsize>(tensor.nbytes());
    if (!in.read(static_cast<char*>(tensor.data_ptr()), bytes)) {
      throw std::runtime_error(path + ": truncated data of " + name);
    }
    tensors.emplace_back(name, tensor);
  }
  return tensors;
}

void write_tensor_file(const std::string& path, const NamedTensors& tensors) {
  const std::string temp = path + ".tmp";
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error("cannot write " + temp);
    out.write(kMagic, 8);
    write_value<uint32_t>(out, static_cast<uint32_t>(tensors.size()));
    for (const auto& [name, original] : tensors) {
      const auto tensor = original.contiguous();
      const bool is_float = tensor.scalar_type() == at::kFloat;
      if (!is_float && tensor.scalar_type() != at::kLong) {
        throw std::runtime_error(name + ": only float32 and int64 tensors can be written");
      }
      write_value<uint32_t>(out, static_cast<uint32_t>(name.size()));
      out.write(name.data(), static_cast<std::streamsize>(name.size()));
      write_value<uint8_t>(out, is_float ? 1 : 2);
      write_value<uint8_t>(out, static_cast<uint8_t>(tensor.dim()));
      for (const auto dim : tensor.sizes()) write_value<int64_t>(out, dim);
      out.write(static_cast<const char*>(tensor.const_data_ptr()), static_cast<std::streamsize>(tensor.nbytes()));
    }
    if (!out) throw std::runtime_error("cannot write " + temp);
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) throw std::runtime_error("cannot write " + path);
}
