// fuzz_onnx: onnx_external_locations on arbitrary bytes: the protobuf wire-format walk (varints, lengths, wire
// types, nesting) through a ModelProto's graphs, nodes, attributes, functions, training info and (sparse) tensors to
// every external-data location, which EngineDir then checks against the artifact's hashed data_files.
#include <cstdint>
#include <string_view>

#include "errors.hpp"
#include "fuzz_common.hpp"
#include "onnx_external.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    for (const std::string& location :
         acsdk::onnx_external_locations(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.onnx"))
      if (location.size() > size) fuzz::broken("a location longer than the model that names it");
  } catch (const acsdk::Error&) {
  }
  return 0;
}
