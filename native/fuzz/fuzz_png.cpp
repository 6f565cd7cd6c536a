// fuzz_png: the PNG decoder (read_png, read_mask) on a file holding the input. What it returns must hold the
// Picture invariants (1 to 100 megapixels, channels 1, 3 or 4, bit depth 8 or 16, height x width x channels values,
// each at most the depth's full scale), and must survive encode_png -> read_png unchanged.
#include <algorithm>
#include <cstdint>
#include <string>

#include "errors.hpp"
#include "fuzz_common.hpp"
#include "picture.hpp"

namespace {

void check(const acsdk::Picture& p) {
  if (p.height < 1 || p.width < 1 || p.height > acsdk::kMaxPixels / p.width)
    fuzz::broken("read_png returned a picture of " + std::to_string(p.height) + " x " + std::to_string(p.width));
  if (p.channels != 1 && p.channels != 3 && p.channels != 4)
    fuzz::broken("read_png returned " + std::to_string(p.channels) + " channels");
  if (p.bit_depth != 8 && p.bit_depth != 16) fuzz::broken("read_png returned bit depth " + std::to_string(p.bit_depth));
  if (p.value_bits != 0) fuzz::broken("read_png returned declared value bits");
  if (p.pixels.size() != static_cast<size_t>(p.height * p.width * p.channels))
    fuzz::broken("read_png returned another count of values than height x width x channels");
  if (*std::max_element(p.pixels.begin(), p.pixels.end()) > p.scale())
    fuzz::broken("read_png returned a value past the depth's full scale");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::scratch() + "/image.png";
  fuzz::put(path, data, size);
  acsdk::Picture pic;
  try {
    pic = acsdk::read_png(path, "image");
  } catch (const acsdk::Error&) {
    return 0;
  }
  check(pic);
  const acsdk::Tensor mask = acsdk::read_mask(path, "mask");  // the same bytes decoded: no error now
  if (mask.shape != std::vector<int64_t>{pic.height, pic.width} || mask.data.size() != pic.pixels.size() / pic.channels)
    fuzz::broken("read_mask returned another size than read_png");
  for (const float v : mask.data)
    if (v != 0.0f && v != 1.0f) fuzz::broken("read_mask returned a value other than 0 or 1");
  const std::string again = fuzz::scratch() + "/again.png";
  fuzz::put(again, acsdk::encode_png(pic, again, "out"));
  const acsdk::Picture back = acsdk::read_png(again, "out");
  if (back.height != pic.height || back.width != pic.width || back.channels != pic.channels ||
      back.bit_depth != pic.bit_depth || back.pixels != pic.pixels)
    fuzz::broken("encode_png -> read_png changed the picture");
  return 0;
}
