// A float32 tensor: a shape and row-major data. Everything between the engines and the images is one of these.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "errors.hpp"

namespace acsdk {

inline std::string shape_str(const std::vector<int64_t>& shape);

// The invariant every function taking a Tensor checks where it comes from a caller (Synthesizer::run, compose, crop,
// ...): every dimension >= 0, their product representable (int64), and data.size() equal to it. A Tensor built by
// the constructor holds it; one whose public fields were set by hand is checked with check() before it is read.
struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;

  Tensor() = default;
  explicit Tensor(std::vector<int64_t> s, float fill = 0.0f) : shape(std::move(s)), data(count(shape), fill) {}

  // The number of values of a shape; InputError naming `argument` for a negative dimension or a product past
  // int64 (never a wrapped size that a later allocation or loop would trust).
  static size_t count(const std::vector<int64_t>& s, const std::string& argument = "tensor") {
    int64_t n = 1;
    for (const int64_t d : s) {
      if (d < 0 || (d > 0 && n > std::numeric_limits<int64_t>::max() / d))
        throw InputError(argument, "a shape of dimensions >= 0 with at most 2^63 - 1 values", shape_str(s));
      n *= d;
    }
    if (static_cast<uint64_t>(n) > std::numeric_limits<size_t>::max() / sizeof(float))
      throw InputError(argument, "a shape this machine can address", shape_str(s));
    return static_cast<size_t>(n);
  }
  // InputError naming `argument` unless the shape has `rank` dimensions (any rank when rank < 0) and data holds
  // exactly the shape's count of values.
  void check(const std::string& argument, int rank = -1) const {
    if (rank >= 0 && shape.size() != static_cast<size_t>(rank))
      throw InputError(argument, "a tensor of rank " + std::to_string(rank), "shape " + shape_str(shape));
    const size_t n = count(shape, argument);
    if (data.size() != n)
      throw InputError(argument, "a tensor of shape " + shape_str(shape) + " holding " + std::to_string(n) + " values",
                       std::to_string(data.size()) + " values");
  }
  size_t numel() const { return data.size(); }
  int64_t dim(int i) const { return shape.at(i < 0 ? shape.size() + i : i); }
  float* ptr() { return data.data(); }
  const float* ptr() const { return data.data(); }
};

// `t` checked as Tensor::check(argument) and holding as many values as `like` (named `like_name`; the shapes may
// differ: a latent is [1, C, h * w] or [1, C, h, w] by where it is): InputError naming `argument` otherwise.
inline void check_like(const Tensor& t, const std::string& argument, const Tensor& like, const std::string& like_name) {
  t.check(argument);
  if (t.numel() != like.numel())
    throw InputError(argument, "a tensor of " + std::to_string(like.numel()) + " values, as " + like_name + " " +
                                   shape_str(like.shape) + " holds",
                     std::to_string(t.numel()) + " values (shape " + shape_str(t.shape) + ")");
}

inline std::string shape_str(const std::vector<int64_t>& shape) {  // "[1, 4, 16, 16]", for error messages
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

}  // namespace acsdk
