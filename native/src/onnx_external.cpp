#include "onnx_external.hpp"

#include <cstdint>

#include "errors.hpp"

namespace acsdk {

namespace {

// The ONNX messages that can hold a TensorProto, by their field numbers in onnx.proto (IR version 10).
enum class Kind { kModel, kGraph, kNode, kAttribute, kFunction, kTrainingInfo, kSparseTensor, kTensor };

// Where a field of `kind` leads: the message kind of a length-delimited field worth descending into.
bool child(Kind kind, uint64_t field, Kind& out) {
  switch (kind) {
    case Kind::kModel:  // graph = 7, training_info = 20, functions = 25
      if (field == 7) return out = Kind::kGraph, true;
      if (field == 20) return out = Kind::kTrainingInfo, true;
      if (field == 25) return out = Kind::kFunction, true;
      return false;
    case Kind::kGraph:  // node = 1, initializer = 5, sparse_initializer = 15
      if (field == 1) return out = Kind::kNode, true;
      if (field == 5) return out = Kind::kTensor, true;
      if (field == 15) return out = Kind::kSparseTensor, true;
      return false;
    case Kind::kNode:  // attribute = 5
      if (field == 5) return out = Kind::kAttribute, true;
      return false;
    case Kind::kAttribute:  // t = 5, g = 6, tensors = 10, graphs = 11, sparse_tensor = 22, sparse_tensors = 23
      if (field == 5 || field == 10) return out = Kind::kTensor, true;
      if (field == 6 || field == 11) return out = Kind::kGraph, true;
      if (field == 22 || field == 23) return out = Kind::kSparseTensor, true;
      return false;
    case Kind::kFunction:  // node = 7, attribute_proto = 11
      if (field == 7) return out = Kind::kNode, true;
      if (field == 11) return out = Kind::kAttribute, true;
      return false;
    case Kind::kTrainingInfo:  // initialization = 1, algorithm = 2
      if (field == 1 || field == 2) return out = Kind::kGraph, true;
      return false;
    case Kind::kSparseTensor:  // values = 1, indices = 2
      if (field == 1 || field == 2) return out = Kind::kTensor, true;
      return false;
    case Kind::kTensor:  // external_data (13) is read where it is met
      return false;
  }
  return false;
}

class Walker {
 public:
  Walker(const std::string& file, std::vector<std::string>& out) : file_(file), out_(out) {}

  // The fields of one message of `kind`: descends into the ones that can hold a tensor, skips the rest.
  void message(std::string_view bytes, Kind kind, int depth) {
    if (depth > 64) throw bad("messages nested deeper than 64");
    bool external = false;  // a TensorProto's data_location is EXTERNAL
    std::vector<std::string> locations;
    for (size_t at = 0; at < bytes.size();) {
      uint64_t field = 0;
      std::string_view body;
      const int wire = next_field(bytes, at, field, body);
      if (kind == Kind::kTensor && field == 14 && wire == 0) external = varint_value_ == 1;
      if (wire != 2) continue;
      Kind inner;
      if (kind == Kind::kTensor && field == 13) {  // external_data: {key = 1, value = 2}
        std::string key, value;
        for (size_t e = 0; e < body.size();) {
          uint64_t f = 0;
          std::string_view v;
          if (next_field(body, e, f, v) != 2) continue;
          if (f == 1) key = std::string(v);
          if (f == 2) value = std::string(v);
        }
        if (key == "location") locations.push_back(value);
      } else if (child(kind, field, inner)) {
        message(body, inner, depth + 1);
      }
    }
    if (external && locations.empty()) throw bad("a tensor stored externally names no location");
    for (auto& l : locations) out_.push_back(std::move(l));  // every location named, external or not: what could be read
  }

 private:
  EngineDirError bad(const std::string& why) const {
    return EngineDirError(file_ + " is not a well-formed ONNX model (" + why + "); rebuild the engine dir");
  }

  uint64_t varint(std::string_view bytes, size_t& at) const {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (at >= bytes.size()) throw bad("a varint past the end");
      const auto b = static_cast<uint8_t>(bytes[at++]);
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    throw bad("a varint longer than 10 bytes");
  }

  // The field at `at` (moved past it): its wire type, number, and a length-delimited field's bytes in `body` or a
  // varint's value in varint_value_.
  int next_field(std::string_view bytes, size_t& at, uint64_t& field, std::string_view& body) {
    const uint64_t tag = varint(bytes, at);
    field = tag >> 3;
    if (field == 0) throw bad("a field numbered 0");
    const int wire = static_cast<int>(tag & 7);
    size_t n = 0;
    switch (wire) {
      case 0:
        varint_value_ = varint(bytes, at);
        return wire;
      case 1:
        n = 8;
        break;
      case 5:
        n = 4;
        break;
      case 2: {
        const uint64_t len = varint(bytes, at);
        if (len > bytes.size() - at) throw bad("a field longer than the bytes left");
        n = static_cast<size_t>(len);
        body = bytes.substr(at, n);
        break;
      }
      default:
        throw bad("wire type " + std::to_string(wire));
    }
    if (n > bytes.size() - at) throw bad("a field past the end");
    at += n;
    return wire;
  }

  const std::string& file_;
  std::vector<std::string>& out_;
  uint64_t varint_value_ = 0;
};

}  // namespace

std::vector<std::string> onnx_external_locations(std::string_view model, const std::string& file) {
  std::vector<std::string> out;
  Walker(file, out).message(model, Kind::kModel, 0);
  return out;
}

}  // namespace acsdk
