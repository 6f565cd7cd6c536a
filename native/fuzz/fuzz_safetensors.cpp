// fuzz_safetensors: parse_safetensors on arbitrary bytes (the 8-byte header length, the JSON header, dtypes, shapes,
// data offsets). Each tensor it returns must hold exactly its shape's count of values.
#include <cstdint>
#include <string>

#include "errors.hpp"
#include "fuzz_common.hpp"
#include "safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    for (const auto& [name, t] : acsdk::parse_safetensors(bytes, "fuzz.safetensors", "bank")) {
      size_t n = 1;
      for (const int64_t d : t.shape) {
        if (d < 0) fuzz::broken("tensor '" + name + "' returned with a negative dimension");
        n *= static_cast<size_t>(d);
      }
      if (t.data.size() != n) fuzz::broken("tensor '" + name + "' holds another count of values than its shape");
    }
  } catch (const acsdk::Error&) {
  }
  return 0;
}
