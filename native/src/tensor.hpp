// A float32 tensor: a shape and row-major data. Everything between the engines and the images is one of these.
#pragma once

#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

namespace acsdk {

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;

  Tensor() = default;
  explicit Tensor(std::vector<int64_t> s, float fill = 0.0f) : shape(std::move(s)), data(count(shape), fill) {}

  static size_t count(const std::vector<int64_t>& s) {
    return static_cast<size_t>(std::accumulate(s.begin(), s.end(), int64_t{1}, std::multiplies<int64_t>()));
  }
  size_t numel() const { return data.size(); }
  int64_t dim(int i) const { return shape.at(i < 0 ? shape.size() + i : i); }
  float* ptr() { return data.data(); }
  const float* ptr() const { return data.data(); }
};

inline std::string shape_str(const std::vector<int64_t>& shape) {  // "[1, 4, 16, 16]", for error messages
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

}  // namespace acsdk
