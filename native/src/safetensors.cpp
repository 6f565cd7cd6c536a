// safetensors: an 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, the data.
#include "safetensors.hpp"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "errors.hpp"
#include "files.hpp"
#include "json_read.hpp"

namespace acsdk {

namespace {

template <typename T>
void convert(const char* src, size_t n, float* dst) {
  for (size_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, src + i * sizeof(T), sizeof(T));
    dst[i] = static_cast<float>(v);
  }
}

}  // namespace

std::map<std::string, Tensor> read_safetensors(const std::string& path, const std::string& argument) {
  return parse_safetensors(read_file(path, argument), path, argument);
}

std::map<std::string, Tensor> parse_safetensors(const std::string& bytes, const std::string& path,
                                                const std::string& argument) {
  auto bad = [&](const std::string& why) {
    return InputError(argument, "a readable safetensors file", "'" + path + "' (" + why + ")");
  };
  if (bytes.size() < 8) throw bad("shorter than its header");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(bytes[i]);
  if (header_len > bytes.size() - 8) throw bad("header longer than the file");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes.substr(8, header_len));
  } catch (const nlohmann::json::exception& e) {
    throw bad(std::string("header is not JSON: ") + e.what());
  }
  if (!header.is_object()) throw bad("header is not a JSON object");
  const char* data = bytes.data() + 8 + header_len;
  const size_t data_len = bytes.size() - 8 - header_len;
  std::map<std::string, Tensor> out;
  for (const auto& item : header.items()) {
    // Named references, not a structured binding: the lambda below uses them (C++17 Clang cannot capture a binding).
    const std::string& name = item.key();
    const nlohmann::json& info = item.value();
    if (name == "__metadata__") continue;
    try {
      Tensor t;
      // Integers read as the header holds them: 1e300 or -1 as a size is malformed, never a conversion out of
      // range (undefined in nlohmann's get<int64_t>) or a wrapped-around offset.
      auto integers = [&](const char* key, int64_t lo) {
        const nlohmann::json& list = info.at(key);
        if (!list.is_array()) throw bad("tensor '" + name + "' has a " + key + " that is not a list");
        std::vector<int64_t> out;
        for (const auto& v : list) {
          const auto i = json_read::integer(v, lo, std::numeric_limits<int64_t>::max());
          if (!i) throw bad("tensor '" + name + "' has " + key + " " + json_read::shown(list) + ", not integers" +
                            (lo == 0 ? " >= 0" : ""));
          out.push_back(*i);
        }
        return out;
      };
      if (!info.is_object()) throw bad("tensor '" + name + "' is described by " + json_read::shown(info));
      t.shape = integers("shape", std::numeric_limits<int64_t>::min());  // a negative one: its own message below
      std::vector<uint64_t> offsets;
      for (const int64_t o : integers("data_offsets", 0)) offsets.push_back(static_cast<uint64_t>(o));
      const std::string dtype = info.at("dtype").get<std::string>();
      const size_t item = dtype == "F32" || dtype == "I32" ? 4 : dtype == "F64" || dtype == "I64" ? 8 : 0;
      if (item == 0) throw bad("tensor '" + name + "' has dtype " + dtype + "; F32, F64, I32 or I64 are read");
      // The element count, every dimension checked: a negative one, or a product past what the file can hold
      // (which is also where size_t would overflow), is malformed, never a wrapped-around small number.
      size_t n = 1;
      for (const int64_t d : t.shape) {
        if (d < 0) throw bad("tensor '" + name + "' has a negative dimension");
        if (d != 0 && n > data_len / item / static_cast<size_t>(d))
          throw bad("tensor '" + name + "' has a shape larger than the file's data");
        n *= static_cast<size_t>(d);
      }
      if (offsets.size() != 2 || offsets[1] > data_len || offsets[1] < offsets[0] || offsets[1] - offsets[0] != n * item)
        throw bad("tensor '" + name + "' has data offsets that do not match its shape");
      t.data.resize(n);
      const char* src = data + offsets[0];
      if (dtype == "F32") convert<float>(src, n, t.ptr());
      if (dtype == "F64") convert<double>(src, n, t.ptr());
      if (dtype == "I32") convert<int32_t>(src, n, t.ptr());
      if (dtype == "I64") convert<int64_t>(src, n, t.ptr());
      out.emplace(name, std::move(t));
    } catch (const nlohmann::json::exception& e) {
      throw bad("tensor '" + name + "': " + e.what());
    }
  }
  return out;
}

void write_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    const uint64_t len = t.numel() * sizeof(float);
    header[name] = {{"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + len}}};
    offset += len;
  }
  std::string head = header.dump();
  head.append((8 - head.size() % 8) % 8, ' ');  // the format aligns the data to 8 bytes
  std::string body(8, '\0');
  for (int i = 0; i < 8; ++i) body[i] = static_cast<char>((static_cast<uint64_t>(head.size()) >> (8 * i)) & 0xff);
  body += head;
  for (const auto& [name, t] : tensors) body.append(reinterpret_cast<const char*>(t.ptr()), t.numel() * sizeof(float));
  write_file_atomic(path, body, "out");
}

}  // namespace acsdk
