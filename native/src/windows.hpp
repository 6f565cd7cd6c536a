// Context windows: where on a large image each defect is generated, as in acsdk/inference/windows.py.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tensor.hpp"

namespace acsdk {

// A rectangle in image pixels; it may extend past the image, where the edge pixels are replicated.
struct Window {
  int64_t top = 0, left = 0, height = 0, width = 0;
  int64_t bottom() const { return top + height; }
  int64_t right() const { return left + width; }
  bool operator==(const Window& o) const {
    return top == o.top && left == o.left && height == o.height && width == o.width;
  }
};

// The part of a window inside an image: image rows [image_y0, image_y1) and cols [image_x0, image_x1), which are
// the window's rows [win_y0, win_y1) and cols [win_x0, win_x1).
struct Span {
  int64_t image_y0, image_y1, image_x0, image_x1;
  int64_t win_y0, win_y1, win_x0, win_x1;
};

Span within(const Window& window, int64_t height, int64_t width);

// The blend's sigma in image pixels: 5 model pixels (at a 512 model) of this window.
double feather_sigma(const Window& window, int64_t model_h, int64_t model_w);

// Windows covering every defect pixel of `mask` (h * w bytes, row-major, nonzero = defect), sorted by (top, left);
// windows that would overlap are merged. `notes` (may be null) gets one line per window past the image's edges.
// InputError for a mask of another size, a model side outside 1 to 2^20, a negative padding or min_size. Ends for
// every model aspect: a window that cannot hold the feather's reach is the whole image's, as in Python.
std::vector<Window> plan_windows(const std::vector<uint8_t>& mask, int64_t h, int64_t w, int64_t model_h,
                                 int64_t model_w, int64_t padding, int64_t min_size, std::vector<std::string>* notes);

// The window (height and width >= 1) of a [C, H, W] tensor (H, W >= 1, holding C x H x W values); parts past the image replicate its edge pixels, or are 0 when !replicate (for
// masks, which must not grow past the image).
Tensor crop(const Tensor& image, const Window& window, bool replicate);

// The first window uses the run's seed; window `index` > 0 uses (seed * 1000003 + index) mod 2^63.
uint64_t window_seed(uint64_t seed, int64_t index);

}  // namespace acsdk
