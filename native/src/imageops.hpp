// Image and mask resampling, blur and feathering: ports of acsdk/inference/imaging.py matching torch's CPU kernels.
#pragma once

#include <cstdint>

#include "tensor.hpp"

namespace acsdk {

// Images are [C, H, W] floats in [0, 1]; masks are [H, W] floats in {0, 1}.

// Antialiased bicubic resize (torch's interpolate(mode="bicubic", antialias=True, align_corners=False)), clamped to
// [0, 1]; an unchanged copy when the size is already (height, width).
Tensor resize_image(const Tensor& image, int64_t height, int64_t width);

// Nearest resize that never loses a defect: nearest upsample to the larger size, then an adaptive max pool.
Tensor resize_mask(const Tensor& mask, int64_t height, int64_t width);

// {0, 1} at (height, width): a cell is set when any pixel it covers (adaptive max pool) is above 0.
Tensor latent_mask(const Tensor& mask, int64_t height, int64_t width);

// Separable Gaussian blur truncated at 3 sigma, zero-padded; pixels beyond that reach of the mask stay exactly 0.
Tensor gaussian_blur_mask(const Tensor& mask, double sigma);

// max(label, blur(label)): 1 on the label, feathered outward.
Tensor blend_mask(const Tensor& label, double sigma);

}  // namespace acsdk
