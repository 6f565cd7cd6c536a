// safetensors files of float32 tensors (banks, noise, golden vectors): read with checks, write atomically.
#pragma once

#include <map>
#include <string>

#include "tensor.hpp"

namespace acsdk {

// Every tensor of the file; F32 tensors as they are, F64/I64/I32 ones converted to float. `argument` names the
// flag the file came from in error messages.
std::map<std::string, Tensor> read_safetensors(const std::string& path, const std::string& argument);
// The same from bytes already read (and hashed): what was checked is what is parsed. `path` names it in errors.
std::map<std::string, Tensor> parse_safetensors(const std::string& bytes, const std::string& path,
                                                const std::string& argument);

void write_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors);

}  // namespace acsdk
