#include "picture.hpp"

#include <png.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>

#include "errors.hpp"
#include "files.hpp"

namespace acsdk {

namespace {

struct PngReader {
  png_structp png = nullptr;
  png_infop info = nullptr;
  ~PngReader() { png_destroy_read_struct(&png, &info, nullptr); }
};

void png_fail(png_structp png, png_const_charp message) {
  auto* why = static_cast<std::string*>(png_get_error_ptr(png));
  *why = message;
  longjmp(png_jmpbuf(png), 1);
}

void png_warn(png_structp, png_const_charp) {}

// The O(1) part of check_picture: sizes, layout and depth (no pass over the values).
void check_layout(const Picture& p, const std::string& argument) {
  if (p.height < 1 || p.width < 1 || p.height > kMaxPixels / p.width)
    throw InputError(argument, "a picture of 1 to 100 megapixels (height and width >= 1)",
                     std::to_string(p.height) + " x " + std::to_string(p.width));
  if (p.channels != 1 && p.channels != 3 && p.channels != 4)
    throw InputError(argument, "channels 1 (gray), 3 (RGB) or 4 (RGBA)", std::to_string(p.channels));
  if (p.bit_depth != 8 && p.bit_depth != 16) throw InputError(argument, "bit_depth 8 or 16", std::to_string(p.bit_depth));
  if (p.value_bits < 0 || p.value_bits > p.bit_depth)
    throw InputError(argument, "value_bits 0 or 1 to bit_depth (" + std::to_string(p.bit_depth) + ")",
                     std::to_string(p.value_bits));
  const auto n = static_cast<size_t>(p.height * p.width * p.channels);
  if (p.pixels.size() != n)
    throw InputError(argument, "pixels of height x width x channels = " + std::to_string(n) + " values",
                     std::to_string(p.pixels.size()));
}

int png_color_type(int64_t channels) {
  return channels == 1 ? PNG_COLOR_TYPE_GRAY : channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_RGBA;
}

// PNG rows as HxWxC values: palette -> RGB(A), low-bit gray -> 8 bits, gray+alpha -> RGBA, 16-bit colour -> its
// high byte (PIL opens 16-bit colour PNGs as 8-bit RGB), 16-bit gray kept.
Picture decode(const std::string& bytes, const std::string& path, const std::string& argument) {
  auto bad = [&](const std::string& why) {
    return InputError(argument, "a readable PNG image", "'" + path + "' (" + why + ")");
  };
  if (bytes.size() < 8 || png_sig_cmp(reinterpret_cast<png_const_bytep>(bytes.data()), 0, 8) != 0)
    throw bad("not a PNG file");
  std::string why;
  PngReader r;
  r.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &why, png_fail, png_warn);
  r.info = r.png ? png_create_info_struct(r.png) : nullptr;
  if (!r.info) throw bad("libpng could not start");
  struct Source {
    const std::string* bytes;
    size_t pos;
  } src{&bytes, 0};
  png_set_read_fn(r.png, &src, [](png_structp png, png_bytep out, png_size_t n) {
    auto* s = static_cast<Source*>(png_get_io_ptr(png));
    if (s->pos + n > s->bytes->size()) png_error(png, "file is truncated");
    std::memcpy(out, s->bytes->data() + s->pos, n);
    s->pos += n;
  });
  Picture pic;
  std::vector<png_bytep> rows;
  std::vector<uint8_t> buffer;
  if (setjmp(png_jmpbuf(r.png))) throw bad(why);
  png_read_info(r.png, r.info);
  const int color = png_get_color_type(r.png, r.info);
  const int depth = png_get_bit_depth(r.png, r.info);
  pic.width = png_get_image_width(r.png, r.info);
  pic.height = png_get_image_height(r.png, r.info);
  if (pic.width * pic.height > kMaxPixels)
    throw InputError(argument, "at most 100 megapixels (tile larger images)",
                     std::to_string(pic.height) + " x " + std::to_string(pic.width));
  if (color == PNG_COLOR_TYPE_PALETTE) {
    png_set_palette_to_rgb(r.png);
    if (png_get_valid(r.png, r.info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(r.png);
  }
  if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(r.png);
  if (color == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(r.png);
  const bool gray16 = color == PNG_COLOR_TYPE_GRAY && depth == 16;
  if (depth == 16 && !gray16) png_set_strip_16(r.png);
  if (gray16) png_set_swap(r.png);  // PNG is big-endian; read into host (little-endian) uint16
  png_set_interlace_handling(r.png);
  png_read_update_info(r.png, r.info);
  pic.channels = png_get_channels(r.png, r.info);
  pic.bit_depth = gray16 ? 16 : 8;
  const size_t rowbytes = png_get_rowbytes(r.png, r.info);
  buffer.resize(rowbytes * pic.height);
  rows.resize(pic.height);
  for (int64_t y = 0; y < pic.height; ++y) rows[y] = buffer.data() + y * rowbytes;
  png_read_image(r.png, rows.data());
  png_read_end(r.png, nullptr);
  if (pic.channels != 1 && pic.channels != 3 && pic.channels != 4) throw bad("an unsupported channel layout");
  const size_t n = static_cast<size_t>(pic.height * pic.width * pic.channels);
  pic.pixels.resize(n);
  if (pic.bit_depth == 16) {
    std::memcpy(pic.pixels.data(), buffer.data(), n * 2);
  } else {
    for (size_t i = 0; i < n; ++i) pic.pixels[i] = buffer[i];
  }
  return pic;
}

}  // namespace

void check_picture(const Picture& picture, const std::string& argument) {
  check_layout(picture, argument);
  const uint16_t top = *std::max_element(picture.pixels.begin(), picture.pixels.end());
  if (top > picture.scale())
    throw InputError(argument, "values of at most " + std::to_string(static_cast<int>(picture.scale())) + " (" +
                                   std::to_string(picture.value_bits ? picture.value_bits : picture.bit_depth) +
                                   "-bit)",
                     "maximum " + std::to_string(top));
}

Picture read_png(const std::string& path, const std::string& argument) {
  Picture pic = decode(read_file(path, argument), path, argument);
  if (pic.height < 1 || pic.width < 1) throw InputError(argument, "a non-empty image", "'" + path + "'");
  return pic;
}

void declare_bit_depth(Picture& picture, int bits, const std::string& argument) {
  check_layout(picture, argument);
  if (bits < 1 || bits > picture.bit_depth)
    throw InputError("bit-depth", "an integer in [1, " + std::to_string(picture.bit_depth) + "] for this " +
                                      std::to_string(picture.bit_depth) + "-bit image",
                     std::to_string(bits));
  const uint32_t full = (1u << bits) - 1u;
  const uint16_t top = *std::max_element(picture.pixels.begin(), picture.pixels.end());  // not empty: checked
  if (top > full)
    throw InputError(argument, "values of at most " + std::to_string(full) + " (" + std::to_string(bits) + "-bit)",
                     "maximum " + std::to_string(top));
  picture.value_bits = bits;
}

Tensor read_mask(const std::string& path, const std::string& argument) {
  const Picture pic = read_png(path, argument);
  Tensor mask({pic.height, pic.width});
  const size_t n = static_cast<size_t>(pic.height * pic.width);
  for (size_t i = 0; i < n; ++i) {
    const uint16_t* px = &pic.pixels[i * pic.channels];
    uint32_t v = px[0];
    if (pic.channels >= 3)  // PIL's RGB -> L: (R 19595 + G 38470 + B 7471 + 0x8000) >> 16
      v = (px[0] * 19595u + px[1] * 38470u + px[2] * 7471u + 0x8000u) >> 16;
    mask.data[i] = static_cast<float>(v) / pic.scale() > 0.5f ? 1.0f : 0.0f;
  }
  return mask;
}

Tensor Picture::rgb(const Window& window) const {
  check_layout(*this, "image");
  if (window.height < 1 || window.width < 1)
    throw InputError("window", "a positive height and width",
                     std::to_string(window.height) + " x " + std::to_string(window.width));
  const Span s = within(window, height, width);
  if (s.image_y0 >= s.image_y1 || s.image_x0 >= s.image_x1)
    throw InputError("window", "a window that overlaps the " + std::to_string(height) + "x" + std::to_string(width) +
                                   " image",
                     "top " + std::to_string(window.top) + ", left " + std::to_string(window.left));
  const int64_t h = s.image_y1 - s.image_y0, w = s.image_x1 - s.image_x0;
  Tensor inside({3, h, w});
  const float full = scale();  // divided, not multiplied by 1 / scale: the same float32 values as numpy's
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      const uint16_t* px = &pixels[((s.image_y0 + y) * width + s.image_x0 + x) * channels];
      for (int64_t c = 0; c < 3; ++c) inside.data[(c * h + y) * w + x] = px[channels == 1 ? 0 : c] / full;
    }
  const Window shifted{window.top - s.image_y0, window.left - s.image_x0, window.height, window.width};
  return crop(inside, shifted, /*replicate=*/true);
}

Picture compose(const Picture& picture, const std::vector<Patch>& patches) {
  check_picture(picture, "image");
  for (const Patch& p : patches) {
    if (p.window.height < 1 || p.window.width < 1)
      throw InputError("patch", "a window of positive height and width",
                       std::to_string(p.window.height) + " x " + std::to_string(p.window.width));
    p.generated.check("patch");
    p.blend.check("patch");
    const std::vector<int64_t> rgb{3, p.window.height, p.window.width}, plane{p.window.height, p.window.width};
    if (p.generated.shape != rgb || p.blend.shape != plane)
      throw InputError("patch", "generated " + shape_str(rgb) + " and blend " + shape_str(plane) + " (the window's size)",
                       "generated " + shape_str(p.generated.shape) + " and blend " + shape_str(p.blend.shape));
  }
  Picture out = picture;
  const float scale = picture.scale();
  const int64_t C = picture.channels;
  for (const Patch& p : patches) {
    const Span s = within(p.window, picture.height, picture.width);
    const int64_t wh = p.window.height, ww = p.window.width;
    for (int64_t y = s.image_y0; y < s.image_y1; ++y)
      for (int64_t x = s.image_x0; x < s.image_x1; ++x) {
        const int64_t wy = y - p.window.top, wx = x - p.window.left;
        const float b = p.blend.data[wy * ww + wx];
        if (!(b > 0.0f)) continue;  // untouched pixels keep their exact input values
        uint16_t* px = &out.pixels[(y * picture.width + x) * C];
        float mixed[3];
        for (int c = 0; c < 3; ++c) {
          const float orig = px[C == 1 ? 0 : c] / scale;
          const float gen = p.generated.data[(c * wh + wy) * ww + wx];
          mixed[c] = std::min(std::max(b * gen + (1.0f - b) * orig, 0.0f), 1.0f);
        }
        auto native = [&](float v) {  // numpy's round: half to even (the default FP rounding mode)
          return static_cast<uint16_t>(std::min(std::max(std::nearbyint(v * scale), 0.0f), scale));
        };
        if (C == 1) {
          px[0] = native(0.299f * mixed[0] + 0.587f * mixed[1] + 0.114f * mixed[2]);  // PIL's luma weights
        } else {
          for (int c = 0; c < 3; ++c) px[c] = native(mixed[c]);  // alpha, if any, kept
        }
      }
  }
  return out;
}

Picture mask_picture(const Tensor& mask) {
  mask.check("mask", 2);
  if (mask.shape[0] < 1 || mask.shape[1] < 1 || mask.shape[0] > kMaxPixels / mask.shape[1])
    throw InputError("mask", "a mask of 1 to 100 megapixels", shape_str(mask.shape));
  Picture pic;
  pic.height = mask.dim(0);
  pic.width = mask.dim(1);
  pic.channels = 1;
  pic.pixels.resize(mask.numel());
  for (size_t i = 0; i < mask.numel(); ++i) pic.pixels[i] = mask.data[i] > 0.5f ? 255 : 0;
  return pic;
}

std::string encode_png(const Picture& pic, const std::string& path, const std::string& argument) {
  check_picture(pic, argument);
  std::string bytes, why;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &why, png_fail, png_warn);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!info) {
    png_destroy_write_struct(&png, nullptr);
    throw InputError(argument, "a PNG libpng can write", "'" + path + "' (libpng could not start)");
  }
  const size_t row_values = static_cast<size_t>(pic.width * pic.channels);
  std::vector<uint8_t> row(row_values * (pic.bit_depth / 8));
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    throw InputError(argument, "a PNG libpng can write", "'" + path + "' (" + why + ")");
  }
  png_set_write_fn(
      png, &bytes,
      [](png_structp p, png_bytep data, png_size_t n) {
        static_cast<std::string*>(png_get_io_ptr(p))->append(reinterpret_cast<const char*>(data), n);
      },
      nullptr);
  png_set_IHDR(png, info, pic.width, pic.height, pic.bit_depth, png_color_type(pic.channels), PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int64_t y = 0; y < pic.height; ++y) {
    const uint16_t* src = &pic.pixels[y * row_values];
    for (size_t i = 0; i < row_values; ++i) {
      if (pic.bit_depth == 16) {  // big-endian on disk
        row[2 * i] = static_cast<uint8_t>(src[i] >> 8);
        row[2 * i + 1] = static_cast<uint8_t>(src[i] & 0xff);
      } else {
        row[i] = static_cast<uint8_t>(src[i]);
      }
    }
    png_write_row(png, row.data());
  }
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  return bytes;
}

void write_png(const std::string& path, const Picture& pic, const std::string& argument) {
  write_file_atomic(path, encode_png(pic, path, argument), argument);
}

}  // namespace acsdk
