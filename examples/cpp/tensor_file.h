// A file of named float32/int64 tensors (segdeploy/aoti/tensorfile.py writes and reads the same):
// "SEGDTNS1", u32 count, then per tensor: u32 name length, name, u8 dtype (1 float32, 2 int64),
// u8 rank, i64 dims[rank], data in C order. Little-endian.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

NamedTensors read_tensor_file(const std::string& path);
void write_tensor_file(const std::string& path, const NamedTensors& tensors);
