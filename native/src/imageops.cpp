// Image and mask resampling, blur and feathering: ports of acsdk/inference/imaging.py matching torch's CPU kernels.
#include "imageops.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "errors.hpp"

namespace acsdk {

namespace {

void check_image(const Tensor& t, const char* argument) {
  if (t.shape.size() != 3 || t.shape[0] < 1 || t.shape[1] < 1 || t.shape[2] < 1)
    throw InputError(argument, "a non-empty [C, H, W] image", shape_str(t.shape));
}

void check_mask(const Tensor& t, const char* argument) {
  if (t.shape.size() != 2 || t.shape[0] < 1 || t.shape[1] < 1)
    throw InputError(argument, "a non-empty [H, W] mask", shape_str(t.shape));
}

void check_size(int64_t height, int64_t width) {
  if (height < 1 || width < 1)
    throw InputError("size", "a positive height and width", std::to_string(height) + " x " + std::to_string(width));
}

// Keys' cubic convolution kernel with a = -0.5 (PIL's and torch's antialiased bicubic; torch's non-antialiased
// bicubic uses -0.75 instead).
float keys_cubic(float x) {
  constexpr float a = -0.5f;
  x = std::abs(x);
  if (x < 1.0f) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2.0f) return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a;
  return 0.0f;
}

// The source taps of every output index along one axis: `count[o]` weights from source index `first[o]`, stored at
// `weights[o * stride]`.
struct Taps {
  std::vector<int64_t> first, count;
  std::vector<float> weights;
  int64_t stride = 0;
};

// torch's float path (_compute_indices_min_size_weights_aa), operation by operation and in the same precisions:
// scale = in / out in float; when shrinking, the filter is stretched by the scale (support 2 * scale, argument
// divided by it), so every source pixel contributes; the taps are normalised to sum to 1 per output pixel.
Taps bicubic_taps(int64_t in, int64_t out) {
  Taps taps;
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  const float support = scale >= 1.0f ? 2.0 * scale : 2.0;
  const float invscale = scale >= 1.0f ? 1.0 / scale : 1.0;
  taps.stride = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  taps.first.resize(out);
  taps.count.resize(out);
  taps.weights.assign(out * taps.stride, 0.0f);
  for (int64_t i = 0; i < out; ++i) {
    const float center = scale * (i + 0.5);
    const int64_t xmin = std::max(static_cast<int64_t>(center - support + 0.5), int64_t{0});
    int64_t xsize = std::min(static_cast<int64_t>(center + support + 0.5), in) - xmin;
    xsize = std::clamp(xsize, int64_t{0}, taps.stride);  // rounding can add one tap too many
    float* w = &taps.weights[i * taps.stride];
    float total = 0.0f;
    for (int64_t j = 0; j < xsize; ++j) {
      w[j] = keys_cubic(static_cast<float>((j + xmin - center + 0.5) * invscale));
      total += w[j];
    }
    if (total != 0.0f)
      for (int64_t j = 0; j < xsize; ++j) w[j] /= total;
    taps.first[i] = xmin;
    taps.count[i] = xsize;
  }
  return taps;
}

// [C, H, W] -> [C, H, out]: each output pixel a weighted sum along its row, accumulated in float in tap order.
Tensor resample_width(const Tensor& src, const Taps& taps, int64_t out) {
  const int64_t rows = src.shape[0] * src.shape[1], w = src.shape[2];
  Tensor dst({src.shape[0], src.shape[1], out});
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src.ptr() + r * w;
    float* d = dst.ptr() + r * out;
    for (int64_t x = 0; x < out; ++x) {
      const float* wt = &taps.weights[x * taps.stride];
      const float* p = s + taps.first[x];
      float acc = p[0] * wt[0];
      for (int64_t j = 1; j < taps.count[x]; ++j) acc += p[j] * wt[j];
      d[x] = acc;
    }
  }
  return dst;
}

// [C, H, W] -> [C, out, W]: whole source rows scaled and added, so the inner loop runs along contiguous memory (the
// per-pixel order of the sum is the same as torch's).
Tensor resample_height(const Tensor& src, const Taps& taps, int64_t out) {
  const int64_t channels = src.shape[0], h = src.shape[1], w = src.shape[2];
  Tensor dst({channels, out, w});
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t y = 0; y < out; ++y) {
      const float* wt = &taps.weights[y * taps.stride];
      float* d = dst.ptr() + (c * out + y) * w;
      const float* s = src.ptr() + (c * h + taps.first[y]) * w;
      for (int64_t x = 0; x < w; ++x) d[x] = s[x] * wt[0];
      for (int64_t j = 1; j < taps.count[y]; ++j) {
        const float* sj = s + j * w;
        for (int64_t x = 0; x < w; ++x) d[x] += sj[x] * wt[j];
      }
    }
  }
  return dst;
}

// torch's nearest index (nearest_idx / HelperInterpNearest): floor(o * (in / out)) with a float scale, at most in-1.
std::vector<int64_t> nearest_indices(int64_t in, int64_t out) {
  std::vector<int64_t> idx(out);
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  for (int64_t o = 0; o < out; ++o)
    idx[o] = in == out ? o : std::min(static_cast<int64_t>(std::floor(static_cast<float>(o) * scale)), in - 1);
  return idx;
}

// Adaptive max pool of an [H, W] map to [h, w]; output cell o covers [floor(o * in / out), ceil((o + 1) * in / out)).
// A max over a rectangle is a max of row maxima, so it runs as two 1-D passes.
Tensor adaptive_max_pool(const Tensor& m, int64_t height, int64_t width) {
  const int64_t h = m.shape[0], w = m.shape[1];
  auto start = [](int64_t o, int64_t in, int64_t out) { return o * in / out; };
  auto end = [](int64_t o, int64_t in, int64_t out) { return ((o + 1) * in + out - 1) / out; };
  Tensor rows({h, width});
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < width; ++x) {
      const float* s = m.ptr() + y * w;
      rows.data[y * width + x] = *std::max_element(s + start(x, w, width), s + end(x, w, width));
    }
  Tensor out({height, width});
  for (int64_t y = 0; y < height; ++y) {
    float* d = out.ptr() + y * width;
    std::copy_n(rows.ptr() + start(y, h, height) * width, width, d);
    for (int64_t r = start(y, h, height) + 1; r < end(y, h, height); ++r)
      for (int64_t x = 0; x < width; ++x) d[x] = std::max(d[x], rows.data[r * width + x]);
  }
  return out;
}

Tensor positive(Tensor t) {
  for (float& v : t.data) v = v > 0.0f ? 1.0f : 0.0f;
  return t;
}

}  // namespace

Tensor resize_image(const Tensor& image, int64_t height, int64_t width) {
  check_image(image, "image");
  check_size(height, width);
  const int64_t h = image.shape[1], w = image.shape[2];
  if (h == height && w == width) return image;
  // torch resamples the contiguous (width) axis first, then the height; an axis of unchanged size is skipped.
  Tensor out = image;
  if (w != width) out = resample_width(out, bicubic_taps(w, width), width);
  if (h != height) out = resample_height(out, bicubic_taps(h, height), height);
  for (float& v : out.data) v = std::clamp(v, 0.0f, 1.0f);
  return out;
}

Tensor resize_mask(const Tensor& mask, int64_t height, int64_t width) {
  check_mask(mask, "mask");
  check_size(height, width);
  const int64_t h = mask.shape[0], w = mask.shape[1];
  if (h == height && w == width) return mask;
  const int64_t big_h = std::max(height, h), big_w = std::max(width, w);
  Tensor big = mask;
  if (big_h != h || big_w != w) {  // nearest upsample first, so that the pool below only ever shrinks
    const std::vector<int64_t> ys = nearest_indices(h, big_h), xs = nearest_indices(w, big_w);
    big = Tensor({big_h, big_w});
    for (int64_t y = 0; y < big_h; ++y)
      for (int64_t x = 0; x < big_w; ++x) big.data[y * big_w + x] = mask.data[ys[y] * w + xs[x]];
  }
  return positive(adaptive_max_pool(big, height, width));
}

Tensor latent_mask(const Tensor& mask, int64_t height, int64_t width) {
  check_mask(mask, "mask");
  check_size(height, width);
  return positive(adaptive_max_pool(mask, height, width));
}

Tensor gaussian_blur_mask(const Tensor& mask, double sigma) {
  check_mask(mask, "mask");
  if (!(sigma > 0)) return mask;
  const int64_t h = mask.shape[0], w = mask.shape[1];
  const int64_t radius = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(3.0 * sigma)));
  const int64_t taps = 2 * radius + 1;
  // The kernel is built in double and rounded to float once, as the Python does.
  std::vector<double> k64(taps);
  double sum = 0.0;
  for (int64_t i = 0; i < taps; ++i) {
    const double x = static_cast<double>(i - radius) / sigma;
    k64[i] = std::exp(-0.5 * (x * x));
    sum += k64[i];
  }
  std::vector<float> kernel(taps);
  for (int64_t i = 0; i < taps; ++i) kernel[i] = static_cast<float>(k64[i] / sum);

  // Horizontal then vertical pass; taps past the image read zeros (the Python's zero padding), so they are skipped.
  // Both run tap by tap over whole rows (contiguous, vectorisable); each pixel still sums its taps in kernel order.
  // Rows of zeros add exact zeros, so they are skipped: masks are mostly empty.
  Tensor across({h, w});
  std::vector<uint8_t> blank(h);
  for (int64_t y = 0; y < h; ++y) {
    const float* s = mask.ptr() + y * w;
    blank[y] = std::all_of(s, s + w, [](float v) { return v == 0.0f; });
    if (blank[y]) continue;
    float* d = across.ptr() + y * w;
    for (int64_t i = 0; i < taps; ++i) {
      const int64_t shift = i - radius;  // d[x] += kernel[i] * s[x + shift] where x + shift is inside the row
      const int64_t x0 = std::max<int64_t>(0, -shift), x1 = std::min<int64_t>(w, w - shift);
      const float k = kernel[i];
      for (int64_t x = x0; x < x1; ++x) d[x] += k * s[x + shift];
    }
  }
  Tensor out({h, w});
  for (int64_t y = 0; y < h; ++y) {
    float* d = out.ptr() + y * w;
    const int64_t lo = std::max<int64_t>(0, y - radius), hi = std::min<int64_t>(h - 1, y + radius);
    for (int64_t sy = lo; sy <= hi; ++sy) {
      if (blank[sy]) continue;
      const float k = kernel[sy - y + radius];
      const float* s = across.ptr() + sy * w;
      for (int64_t x = 0; x < w; ++x) d[x] += k * s[x];
    }
  }

  // Exact zeros beyond the reach (no mask pixel within the (2r+1)^2 box): rounding can leave residue there. Whether
  // a box holds a positive pixel comes from running counts, O(pixels) whatever the radius.
  std::vector<int32_t> near_row(h * w), count(std::max(h, w) + 1);
  for (int64_t y = 0; y < h; ++y) {
    for (int64_t x = 0; x < w; ++x) count[x + 1] = count[x] + (mask.data[y * w + x] > 0.0f);
    for (int64_t x = 0; x < w; ++x)
      near_row[y * w + x] = count[std::min(w, x + radius + 1)] - count[std::max<int64_t>(0, x - radius)] > 0;
  }
  for (int64_t x = 0; x < w; ++x) {
    for (int64_t y = 0; y < h; ++y) count[y + 1] = count[y] + near_row[y * w + x];
    for (int64_t y = 0; y < h; ++y) {
      const bool reached = count[std::min(h, y + radius + 1)] - count[std::max<int64_t>(0, y - radius)] > 0;
      float& v = out.data[y * w + x];
      v = reached ? std::clamp(v, 0.0f, 1.0f) : 0.0f;
    }
  }
  return out;
}

Tensor blend_mask(const Tensor& label, double sigma) {
  Tensor out = gaussian_blur_mask(label, sigma);
  for (size_t i = 0; i < out.numel(); ++i) out.data[i] = std::max(out.data[i], label.data[i]);
  return out;
}

}  // namespace acsdk
