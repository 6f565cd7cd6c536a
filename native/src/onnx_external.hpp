// The external-data locations an ONNX model names: what OpenVINO's ONNX reader would open beside the model file.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace acsdk {

// Every `location` of a tensor stored outside the model (TensorProto data_location EXTERNAL, or external_data
// entries), in the order met: initializers, sparse initializers, Constant and other nodes' tensor attributes, in
// subgraphs, functions and training info too. Read from the protobuf wire format, no ONNX library. EngineDirError
// naming `file` for bytes that are not a well-formed ModelProto as far as these fields go (a length past the end,
// an unknown wire type, nesting deeper than 64), or an external tensor without a location.
std::vector<std::string> onnx_external_locations(std::string_view model, const std::string& file);

}  // namespace acsdk
