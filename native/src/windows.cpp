// Context windows: where on a large image each defect is generated, as in acsdk/inference/windows.py.
#include "windows.hpp"

#include <algorithm>
#include <cmath>

#include "errors.hpp"

namespace acsdk {

namespace {

constexpr double kFeatherSigma = 5.0;  // model pixels at 512 (the paper's blur), scaled to the model's size
constexpr double kModelReferenceSize = 512.0;
constexpr int64_t kMaxWindowModelSide = int64_t{1} << 20;  // far past any model; keeps fit()'s arithmetic exact

// Python's // on integers: rounds toward minus infinity (C++'s / truncates toward zero).
int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

struct Box {
  int64_t y0, x0, y1, x1;  // rows [y0, y1), cols [x0, x1)
};

// Bounding boxes of the 4-connected components, in scipy.ndimage.label's order: that of each component's first
// pixel in raster order.
std::vector<Box> component_boxes(const std::vector<uint8_t>& mask, int64_t h, int64_t w) {
  std::vector<Box> boxes;
  std::vector<uint8_t> seen(mask.size(), 0);
  std::vector<int64_t> stack;
  for (int64_t start = 0; start < h * w; ++start) {
    if (!mask[start] || seen[start]) continue;
    Box box{start / w, start % w, start / w + 1, start % w + 1};
    seen[start] = 1;
    stack.assign(1, start);
    while (!stack.empty()) {
      const int64_t p = stack.back();
      stack.pop_back();
      const int64_t y = p / w, x = p % w;
      box = {std::min(box.y0, y), std::min(box.x0, x), std::max(box.y1, y + 1), std::max(box.x1, x + 1)};
      auto visit = [&](int64_t q) {
        if (mask[q] && !seen[q]) {
          seen[q] = 1;
          stack.push_back(q);
        }
      };
      if (y > 0) visit(p - w);
      if (y + 1 < h) visit(p + w);
      if (x > 0) visit(p - 1);
      if (x + 1 < w) visit(p + 1);
    }
    boxes.push_back(box);
  }
  return boxes;
}

// Move [start, start + size) inside [0, limit); centre it on the image when it is larger than the image.
int64_t place(int64_t start, int64_t size, int64_t limit) {
  if (size >= limit) return floor_div(limit - size, 2);
  return std::min(std::max<int64_t>(start, 0), limit - size);
}

// The box grown by `padding`, at least `min_size`, at the model's aspect, with room for the feather's reach; never
// larger than the smallest model-aspect window holding the whole image; moved inside the image.
Window fit(const Box& b, int64_t h, int64_t w, int64_t mh, int64_t mw, int64_t padding, int64_t min_size) {
  // Past max(h, w) neither changes the window (it is the whole image's either way, see below); clamped there, no
  // sum below can overflow, where Python's integers cannot.
  const int64_t longest = std::max(h, w);
  padding = std::min(padding, longest);
  min_size = std::min(min_size, longest);
  int64_t need_h = std::max(b.y1 - b.y0 + 2 * padding, min_size);
  int64_t need_w = std::max(b.x1 - b.x0 + 2 * padding, min_size);
  const double whole = std::max(static_cast<double>(h) / mh, static_cast<double>(w) / mw);
  double scale = 0.0;
  int64_t win_h = 0, win_w = 0;
  while (true) {
    scale = std::max(static_cast<double>(need_h) / mh, static_cast<double>(need_w) / mw);
    // At the whole image's scale the window is the whole image's (below), reach or not, so the loop ends there
    // even where no window holds the reach: a model side of at most 6 feather sigmas (30/512 of the long side, an
    // aspect past ~17:1) never does. Where one does, this ends with the same window: scale only grows.
    if (scale >= whole) break;
    win_h = static_cast<int64_t>(std::ceil(scale * mh));
    win_w = static_cast<int64_t>(std::ceil(scale * mw));
    // The feather reaches 3 sigma past the label; keep that inside the window.
    const int64_t reach = static_cast<int64_t>(std::ceil(3 * feather_sigma(Window{0, 0, win_h, win_w}, mh, mw)));
    if (win_h >= b.y1 - b.y0 + 2 * reach && win_w >= b.x1 - b.x0 + 2 * reach) break;
    need_h = std::max(need_h, b.y1 - b.y0 + 2 * reach + 2);
    need_w = std::max(need_w, b.x1 - b.x0 + 2 * reach + 2);
  }
  if (scale >= whole) {
    win_h = static_cast<int64_t>(std::ceil(whole * mh));
    win_w = static_cast<int64_t>(std::ceil(whole * mw));
  }
  const int64_t top = place((b.y0 + b.y1) / 2 - win_h / 2, win_h, h);
  const int64_t left = place((b.x0 + b.x1) / 2 - win_w / 2, win_w, w);
  return Window{top, left, win_h, win_w};
}

bool overlap(const Window& a, const Window& b) {
  return a.top < b.bottom() && b.top < a.bottom() && a.left < b.right() && b.left < a.right();
}

Box join(const Box& a, const Box& b) {
  return {std::min(a.y0, b.y0), std::min(a.x0, b.x0), std::max(a.y1, b.y1), std::max(a.x1, b.x1)};
}

// The Python's dataclass asdict() as printed in its notes.
std::string as_dict(const Window& w) {
  return "{'top': " + std::to_string(w.top) + ", 'left': " + std::to_string(w.left) +
         ", 'height': " + std::to_string(w.height) + ", 'width': " + std::to_string(w.width) + "}";
}

}  // namespace

Span within(const Window& window, int64_t height, int64_t width) {
  const int64_t y0 = std::max<int64_t>(window.top, 0), x0 = std::max<int64_t>(window.left, 0);
  const int64_t y1 = std::min(window.bottom(), height), x1 = std::min(window.right(), width);
  return {y0, y1, x0, x1, y0 - window.top, y1 - window.top, x0 - window.left, x1 - window.left};
}

double feather_sigma(const Window& window, int64_t model_h, int64_t model_w) {
  const double model_px = kFeatherSigma * static_cast<double>(std::max(model_h, model_w)) / kModelReferenceSize;
  return model_px * std::max(static_cast<double>(window.height) / model_h, static_cast<double>(window.width) / model_w);
}

std::vector<Window> plan_windows(const std::vector<uint8_t>& mask, int64_t h, int64_t w, int64_t model_h,
                                 int64_t model_w, int64_t padding, int64_t min_size, std::vector<std::string>* notes) {
  if (h < 1 || w < 1 || h > static_cast<int64_t>(mask.size()) / w || static_cast<int64_t>(mask.size()) != h * w)
    throw InputError("mask", std::to_string(h) + " x " + std::to_string(w) + " bytes (h, w >= 1)",
                     std::to_string(mask.size()));
  if (model_h < 1 || model_w < 1 || model_h > kMaxWindowModelSide || model_w > kMaxWindowModelSide)
    throw InputError("model_size", "1 to " + std::to_string(kMaxWindowModelSide) + " pixels a side",
                     std::to_string(model_h) + " x " + std::to_string(model_w));
  if (padding < 0) throw InputError("roi-padding", "an integer >= 0", std::to_string(padding));
  if (min_size < 0) throw InputError("roi-min-size", "an integer >= 0", std::to_string(min_size));
  std::vector<Box> boxes = component_boxes(mask, h, w);
  std::vector<Window> windows;
  for (const Box& b : boxes) windows.push_back(fit(b, h, w, model_h, model_w, padding, min_size));
  // Near masks share a window: merge the first overlapping pair (in the Python's scan order), append the merged one
  // at the end, and rescan until no two overlap.
  for (bool merged = true; merged;) {
    merged = false;
    for (size_t i = 0; i < windows.size() && !merged; ++i) {
      for (size_t j = i + 1; j < windows.size(); ++j) {
        if (!overlap(windows[i], windows[j])) continue;
        const Box box = join(boxes[i], boxes[j]);
        boxes.erase(boxes.begin() + j);  // j > i: erase it first so that i stays valid
        boxes.erase(boxes.begin() + i);
        windows.erase(windows.begin() + j);
        windows.erase(windows.begin() + i);
        boxes.push_back(box);
        windows.push_back(fit(box, h, w, model_h, model_w, padding, min_size));
        merged = true;
        break;
      }
    }
  }
  if (notes) {
    for (const Window& win : windows) {
      if (win.top < 0 || win.left < 0 || win.bottom() > h || win.right() > w)
        notes->push_back("roi: window " + as_dict(win) + " is larger than the " + std::to_string(h) + "x" +
                         std::to_string(w) + " image in a direction; the image's edges are replicated to fill it");
    }
  }
  std::stable_sort(windows.begin(), windows.end(), [](const Window& a, const Window& b) {
    return a.top != b.top ? a.top < b.top : a.left < b.left;
  });
  return windows;
}

Tensor crop(const Tensor& image, const Window& window, bool replicate) {
  image.check("image", 3);
  if (image.shape[1] < 1 || image.shape[2] < 1)
    throw InputError("image", "a non-empty [C, H, W] tensor", shape_str(image.shape));
  if (window.height < 1 || window.width < 1)
    throw InputError("window", "a positive height and width", as_dict(window));
  const int64_t channels = image.shape[0], h = image.shape[1], w = image.shape[2];
  const Span in = within(window, h, w);
  if (replicate && (in.image_y0 >= in.image_y1 || in.image_x0 >= in.image_x1))
    throw InputError("window", "a window that overlaps the " + std::to_string(h) + "x" + std::to_string(w) + " image",
                     as_dict(window));
  Tensor out({channels, window.height, window.width});
  // Replicating the edge of the part inside the image is clamping each coordinate to the image.
  std::vector<int64_t> xs(window.width);
  for (int64_t x = 0; x < window.width; ++x) xs[x] = std::clamp<int64_t>(window.left + x, 0, w - 1);
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t y = 0; y < window.height; ++y) {
      const int64_t iy = window.top + y;
      if (!replicate && (iy < 0 || iy >= h)) continue;
      const float* s = image.ptr() + (c * h + std::clamp<int64_t>(iy, 0, h - 1)) * w;
      float* d = out.ptr() + (c * window.height + y) * window.width;
      if (replicate) {
        for (int64_t x = 0; x < window.width; ++x) d[x] = s[xs[x]];
      } else if (in.image_x0 < in.image_x1) {
        std::copy(s + in.image_x0, s + in.image_x1, d + in.win_x0);
      }
    }
  }
  return out;
}

uint64_t window_seed(uint64_t seed, int64_t index) {
  if (index == 0) return seed;
  // 128-bit product: seed * 1000003 overflows 64 bits for any seed above ~1.8e13.
  const unsigned __int128 value = static_cast<unsigned __int128>(seed) * 1000003u + static_cast<uint64_t>(index);
  return static_cast<uint64_t>(value % (static_cast<unsigned __int128>(1) << 63));
}

}  // namespace acsdk
