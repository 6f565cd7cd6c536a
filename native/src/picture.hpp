// PNG images as the Python SDK reads them (imaging.load_picture / load_mask): native values kept, results
// composed into a copy of the input so pixels the blend does not reach keep their exact values.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tensor.hpp"
#include "windows.hpp"

namespace acsdk {

constexpr int64_t kMaxPixels = 100'000'000;  // as imaging.MAX_PIXELS

// A picture's fields are public; check_picture holds a caller's to the invariants below wherever one comes in
// (Synthesizer::run, compose, encode_png, write_png, declare_bit_depth): read_png makes only pictures that hold them.
struct Picture {
  int64_t height = 0, width = 0, channels = 0;  // channels: 1 (gray), 3 (RGB) or 4 (RGBA)
  int bit_depth = 8;    // as stored: 8 or 16 (16-bit gray; 16-bit colour reads as 8, as PIL does)
  int value_bits = 0;   // declared depth of the values (12-bit data in 16-bit files); 0: the stored depth
  std::vector<uint16_t> pixels;  // HxWxC native values

  // The largest value (the depth's full scale): 2^value_bits - 1, or 2^bit_depth - 1 when value_bits is 0.
  float scale() const { return static_cast<float>((1u << (value_bits ? value_bits : bit_depth)) - 1u); }
  // RGB float [3, h, w] in [0, 1] of a window (edge pixels replicated past the image); the window overlaps the
  // image.
  Tensor rgb(const Window& window) const;
};

struct Patch {
  Window window;
  Tensor generated;  // [3, h, w] at the window's size
  Tensor blend;      // [h, w]
};

// InputError naming `argument` unless: height and width >= 1 with at most kMaxPixels pixels, channels 1, 3 or 4,
// bit_depth 8 or 16, value_bits 0 or 1 to bit_depth, pixels.size() == height * width * channels, and every value at
// most scale().
void check_picture(const Picture& picture, const std::string& argument);

// `argument` names the flag in errors: an unreadable or non-PNG file, an unsupported layout, too many pixels.
Picture read_png(const std::string& path, const std::string& argument);
// Declares the depth of an integer image's values, as `acsdk synth --bit-depth`: 1 to the stored depth, every
// value within it (InputError naming `argument` otherwise).
void declare_bit_depth(Picture& picture, int bits, const std::string& argument);
// A binary mask [H, W] (1 where the value is above half scale; colour masks by PIL's luma, as Python's load_mask).
Tensor read_mask(const std::string& path, const std::string& argument);
// The PNG file's bytes (`path` and `argument` only name it in errors); write_png stages them and renames.
std::string encode_png(const Picture& picture, const std::string& path, const std::string& argument);
// Written to a temporary file and renamed: never half-written.
void write_png(const std::string& path, const Picture& picture, const std::string& argument);

// A copy of the picture's pixels with each patch pasted: b * generated + (1 - b) * input where b > 0. Each patch's
// window is at least 1 x 1 and its tensors of its size (InputError naming "patch" otherwise).
Picture compose(const Picture& picture, const std::vector<Patch>& patches);

// The mask as an 8-bit gray picture, 0 / 255: the label written beside the result. `mask` is [H, W], H and W >= 1.
Picture mask_picture(const Tensor& mask);

}  // namespace acsdk
