// Checks the image ops and windows against golden vectors from native/tests/golden_imaging.py: test_imaging GOLDEN.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <csignal>
#include <functional>
#include <unistd.h>

#include "compare.hpp"
#include "errors.hpp"
#include "imageops.hpp"
#include "picture.hpp"
#include "safetensors.hpp"
#include "windows.hpp"

using acsdk::Tensor;

namespace {

int failures = 0;

void report(const std::string& name, double diff, bool ok) {
  std::printf("%-48s max diff %-12.3g %s\n", name.c_str(), diff, ok ? "ok" : "FAIL");
  if (!ok) ++failures;
}

// Max abs difference: infinity when the shapes differ, NaN when either holds a NaN (compare.hpp).
double max_diff(const Tensor& a, const Tensor& b) {
  if (a.shape != b.shape) return INFINITY;
  return acsdk_test::max_error(a.data, b.data);
}

void check_close(const std::string& name, const Tensor& got, const Tensor& want, double tol) {
  const double d = max_diff(got, want);
  report(name, d, acsdk_test::within(d, tol));
}

// check_close itself: a NaN output (all NaN, or one NaN among equal values) is not within any tolerance.
void test_nan_output_fails() {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const Tensor want({2, 2}, 0.25f);
  Tensor all_nan({2, 2}, nan), one_nan({2, 2}, 0.25f);
  one_nan.data[3] = nan;
  for (const auto& [name, got] : {std::pair<const char*, const Tensor*>{"all_nan", &all_nan}, {"one_nan", &one_nan}}) {
    const double d = max_diff(*got, want);
    const bool refused = !acsdk_test::within(d, 0.0) && !acsdk_test::within(d, 1e30);
    report(std::string("compare.") + name + "_output_fails", d, refused);
  }
}

// The case names of one kind: keys "<kind>.<case>.<field>".
std::set<std::string> cases(const std::map<std::string, Tensor>& g, const std::string& kind) {
  std::set<std::string> out;
  for (const auto& [key, t] : g)
    if (key.rfind(kind + ".", 0) == 0) out.insert(key.substr(kind.size() + 1, key.rfind('.') - kind.size() - 1));
  return out;
}

const Tensor& field(const std::map<std::string, Tensor>& g, const std::string& kind, const std::string& name,
                    const std::string& f) {
  return g.at(kind + "." + name + "." + f);
}

void test_window_seed() {
  // Expected values from acsdk.inference.synthesizer.window_seed; e.g. (2^63 - 1) * 1000003 + 7 = -1000003 + 7
  // (mod 2^63) = 2^63 - 999996.
  struct Case {
    uint64_t seed;
    int64_t index;
    uint64_t want;
  };
  const Case table[] = {
      {12345u, 0, 12345u},
      {12345u, 3, 12345037038u},
      {9223372036854775807u, 7, 9223372036853775812u},
      {4611686018427400249u, 1, 4611686030772424940u},
      {0u, 5, 5u},
      {9223372036854775807u, 2, 9223372036853775807u},
  };
  bool ok = true;
  for (const Case& c : table) ok = ok && acsdk::window_seed(c.seed, c.index) == c.want;
  report("window_seed", ok ? 0.0 : 1.0, ok);
}

// The windows of a 5x10 defect on a 300x200 image (padding 32, min_size 16) under models of every aspect: the table
// of tests/test_roi.py (ASPECT_WINDOWS), which acsdk.inference.windows gives. Where the model's short side is at most
// 6 feather sigmas (30/512 of its long side, past ~17:1) no window holds the feather's reach and the window is the
// whole image's; before, fit() looped for ever (30x512) or cast an infinite scale to int64 (1x100 and beyond).
void timed_out(int) {
  const char line[] = "plan_windows: did not end within 10 s (FAIL)\n";
  (void)!::write(2, line, sizeof line - 1);
  ::_exit(1);
}

void test_windows_every_model_aspect() {
  struct Case {
    int64_t mh, mw;
    acsdk::Window want;
  };
  const Case table[] = {
      {1, 100, {0, -14900, 300, 30000}},       {100, 1, {-9850, 0, 20000, 200}},
      {1, 10000, {0, -1499900, 300, 3000000}}, {10000, 1, {-999850, 0, 2000000, 200}},
      {30, 512, {0, -2460, 300, 5120}},        {512, 30, {-1557, 0, 3414, 200}},
      {31, 512, {0, -2378, 300, 4955}},        {64, 64, {108, 55, 74, 74}},
      {512, 768, {108, 37, 74, 111}},
  };
  std::vector<uint8_t> mask(300 * 200, 0);
  for (int y = 140; y < 150; ++y)
    for (int x = 90; x < 95; ++x) mask[y * 200 + x] = 1;
  std::signal(SIGALRM, timed_out);
  for (const Case& c : table) {
    ::alarm(10);
    std::vector<std::string> notes;
    const auto windows = acsdk::plan_windows(mask, 300, 200, c.mh, c.mw, 32, 16, &notes);
    ::alarm(0);
    const bool ok = windows.size() == 1 && windows[0] == c.want;
    const std::string name = "plan_windows.aspect_" + std::to_string(c.mh) + "x" + std::to_string(c.mw);
    report(name, ok ? 0.0 : 1.0, ok);
    if (!ok && windows.size() == 1)
      std::printf("  got {%lld, %lld, %lld, %lld}\n", (long long)windows[0].top, (long long)windows[0].left,
                  (long long)windows[0].height, (long long)windows[0].width);
  }
  // Huge padding and min_size (no overflow: the window is the whole image's) and out-of-range arguments.
  const auto whole = acsdk::plan_windows(mask, 300, 200, 64, 64, int64_t{1} << 62, int64_t{1} << 62, nullptr);
  const bool whole_ok = whole.size() == 1 && whole[0] == acsdk::Window{0, -50, 300, 300};
  report("plan_windows.huge_padding_is_the_whole_image", whole_ok ? 0.0 : 1.0, whole_ok);
}

// `f` throws acsdk::InputError whose message starts with `argument` + ": ".
bool refuses(const std::function<void()>& f, const std::string& argument) {
  try {
    f();
  } catch (const acsdk::InputError& e) {
    const bool named = std::string(e.what()).rfind(argument + ": ", 0) == 0;
    if (!named) std::printf("  wrong argument: %s\n", e.what());
    return named;
  } catch (const std::exception& e) {
    std::printf("  not an InputError: %s\n", e.what());
    return false;
  }
  std::printf("  accepted\n");
  return false;
}

bool accepts(const std::function<void()>& f) {
  try {
    f();
    return true;
  } catch (const std::exception& e) {
    std::printf("  refused: %s\n", e.what());
    return false;
  }
}

// The public types' invariants, held at every function that takes one from a caller (issue 34 section 3).
void test_invariants() {
  using acsdk::Picture;
  auto expect_refused = [](const std::string& name, const std::function<void()>& f, const std::string& argument) {
    const bool ok = refuses(f, argument);
    report("invariant." + name, ok ? 0.0 : 1.0, ok);
  };
  // Tensor::count: negative dimensions and products past int64 (which wrapped before) are refused.
  expect_refused("count_negative", [] { acsdk::Tensor::count({2, -3}); }, "tensor");
  expect_refused("count_overflow", [] { acsdk::Tensor::count({int64_t{1} << 32, int64_t{1} << 32}); }, "tensor");
  expect_refused("count_overflow_wraps_to_small", [] { acsdk::Tensor::count({int64_t{1} << 62, 4, 3}); }, "tensor");
  expect_refused("tensor_ctor_overflow", [] { acsdk::Tensor t({int64_t{1} << 40, int64_t{1} << 40}); }, "tensor");
  const bool count_ok = acsdk::Tensor::count({2, 3, 4}) == 24 && acsdk::Tensor::count({}) == 1 &&
                        acsdk::Tensor::count({5, 0, int64_t{1} << 62}) == 0;
  report("invariant.count_values", count_ok ? 0.0 : 1.0, count_ok);
  acsdk::Tensor short_data({3, 4, 5});
  short_data.data.resize(10);
  expect_refused("check_data_size", [&] { short_data.check("x"); }, "x");
  expect_refused("crop_data_size", [&] { acsdk::crop(short_data, {0, 0, 2, 2}, true); }, "image");

  Picture good;
  good.height = 2;
  good.width = 3;
  good.channels = 3;
  good.pixels.assign(2 * 3 * 3, 7);
  const bool good_ok = accepts([&] { acsdk::check_picture(good, "image"); }) &&
                       accepts([&] { acsdk::encode_png(good, "x.png", "out"); });
  report("invariant.picture_good_passes", good_ok ? 0.0 : 1.0, good_ok);
  auto bad = [&](const std::string& name, const std::function<void(Picture&)>& spoil) {
    Picture p = good;
    spoil(p);
    expect_refused("picture_" + name, [&] { acsdk::check_picture(p, "image"); }, "image");
    expect_refused("encode_png_" + name, [&] { acsdk::encode_png(p, "x.png", "out"); }, "out");
    expect_refused("compose_" + name, [&] { acsdk::compose(p, {}); }, "image");
  };
  bad("short_pixels", [](Picture& p) { p.pixels.resize(5); });
  bad("long_pixels", [](Picture& p) { p.pixels.resize(100); });
  bad("channels_2", [](Picture& p) { p.channels = 2; });
  bad("bit_depth_40", [](Picture& p) { p.bit_depth = 40; });
  bad("value_bits_past_depth", [](Picture& p) { p.value_bits = 12; });
  bad("value_past_8_bits", [](Picture& p) { p.pixels[4] = 300; });
  bad("zero_height", [](Picture& p) { p.height = 0; });
  bad("overflowing_size", [](Picture& p) { p.height = p.width = int64_t{1} << 32; });
  bad("over_100_megapixels", [](Picture& p) { p.height = p.width = 10001; });
  {
    Picture p = good;
    p.pixels.resize(5);
    expect_refused("rgb_short_pixels", [&] { p.rgb({0, 0, 2, 3}); }, "image");
    expect_refused("declare_bit_depth_short_pixels", [&] { acsdk::declare_bit_depth(p, 4, "image"); }, "image");
  }
  // A patch whose tensors are not of its window's size would be read past their ends.
  acsdk::Patch patch{{0, 0, 2, 3}, acsdk::Tensor({3, 2, 3}, 0.5f), acsdk::Tensor({2, 3}, 1.0f)};
  const bool patch_ok = accepts([&] { acsdk::compose(good, {patch}); });
  report("invariant.patch_good_passes", patch_ok ? 0.0 : 1.0, patch_ok);
  acsdk::Patch small_blend = patch;
  small_blend.blend = acsdk::Tensor({1, 3}, 1.0f);
  expect_refused("patch_blend_shape", [&] { acsdk::compose(good, {small_blend}); }, "patch");
  acsdk::Patch short_generated = patch;
  short_generated.generated.data.resize(4);
  expect_refused("patch_generated_data", [&] { acsdk::compose(good, {short_generated}); }, "patch");
  // mask_picture: [H, W] holding H x W values.
  acsdk::Tensor mask({2, 3});
  mask.data.resize(2);
  expect_refused("mask_picture_data", [&] { acsdk::mask_picture(mask); }, "mask");
  expect_refused("mask_picture_rank", [&] { acsdk::mask_picture(acsdk::Tensor({6})); }, "mask");
  // plan_windows: a mask of another size, a model of no size, negative padding.
  std::vector<uint8_t> m(6, 1);
  expect_refused("plan_mask_size", [&] { acsdk::plan_windows(m, 2, 4, 64, 64, 0, 1, nullptr); }, "mask");
  expect_refused("plan_mask_overflow",
                 [&] { acsdk::plan_windows(m, int64_t{1} << 32, int64_t{1} << 32, 64, 64, 0, 1, nullptr); }, "mask");
  expect_refused("plan_model_size", [&] { acsdk::plan_windows(m, 2, 3, 0, 64, 0, 1, nullptr); }, "model_size");
  expect_refused("plan_padding", [&] { acsdk::plan_windows(m, 2, 3, 64, 64, -1, 1, nullptr); }, "roi-padding");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: test_imaging GOLDEN.safetensors\n");
    return 2;
  }
  try {
    const auto g = acsdk::read_safetensors(argv[1], "golden");
    int total = 0;

    for (const auto& name : cases(g, "resize_image")) {
      const Tensor& want = field(g, "resize_image", name, "out");
      check_close("resize_image." + name,
                  acsdk::resize_image(field(g, "resize_image", name, "in"), want.dim(1), want.dim(2)), want, 1e-5);
      ++total;
    }
    for (const auto& name : cases(g, "resize_mask")) {
      const Tensor& want = field(g, "resize_mask", name, "out");
      check_close("resize_mask." + name,
                  acsdk::resize_mask(field(g, "resize_mask", name, "in"), want.dim(0), want.dim(1)), want, 0.0);
      ++total;
    }
    for (const auto& name : cases(g, "latent_mask")) {
      const Tensor& want = field(g, "latent_mask", name, "out");
      check_close("latent_mask." + name,
                  acsdk::latent_mask(field(g, "latent_mask", name, "in"), want.dim(0), want.dim(1)), want, 0.0);
      ++total;
    }
    for (const auto& name : cases(g, "blur")) {
      const Tensor& in = field(g, "blur", name, "in");
      const double sigma = field(g, "blur", name, "sigma").data.at(0);
      const Tensor blur = acsdk::gaussian_blur_mask(in, sigma);
      check_close("gaussian_blur_mask." + name, blur, field(g, "blur", name, "blur"), 1e-5);
      check_close("blend_mask." + name, acsdk::blend_mask(in, sigma), field(g, "blur", name, "blend"), 1e-5);
      // Beyond the reach the Python gives exact zeros; so must we.
      const Tensor& want = field(g, "blur", name, "blur");
      bool zeros_agree = true;
      for (size_t i = 0; i < want.numel(); ++i) zeros_agree = zeros_agree && ((want.data[i] == 0) == (blur.data[i] == 0));
      report("gaussian_blur_mask." + name + ".zeros", zeros_agree ? 0.0 : 1.0, zeros_agree);
      total += 3;
    }
    for (const auto& name : cases(g, "crop")) {
      const Tensor& r = field(g, "crop", name, "window");
      const acsdk::Window win{static_cast<int64_t>(r.data[0]), static_cast<int64_t>(r.data[1]),
                              static_cast<int64_t>(r.data[2]), static_cast<int64_t>(r.data[3])};
      const bool replicate = field(g, "crop", name, "replicate").data.at(0) != 0.0f;
      check_close("crop." + name, acsdk::crop(field(g, "crop", name, "in"), win, replicate),
                  field(g, "crop", name, "out"), 0.0);
      ++total;
    }
    for (const auto& name : cases(g, "feather")) {
      const Tensor& a = field(g, "feather", name, "args");
      const acsdk::Window win{static_cast<int64_t>(a.data[0]), static_cast<int64_t>(a.data[1]),
                              static_cast<int64_t>(a.data[2]), static_cast<int64_t>(a.data[3])};
      const double got = acsdk::feather_sigma(win, static_cast<int64_t>(a.data[4]), static_cast<int64_t>(a.data[5]));
      const double want = field(g, "feather", name, "out").data.at(0);  // read as float
      const double d = std::abs(got - want);
      report("feather_sigma." + name, d, d <= 1e-6 * std::max(1.0, std::abs(want)));
      ++total;
    }
    for (const auto& name : cases(g, "plan")) {
      const Tensor& m = field(g, "plan", name, "mask");
      const Tensor& a = field(g, "plan", name, "args");
      std::vector<uint8_t> mask(m.numel());
      for (size_t i = 0; i < m.numel(); ++i) mask[i] = m.data[i] != 0.0f;
      std::vector<std::string> notes;
      const auto windows = acsdk::plan_windows(mask, m.dim(0), m.dim(1), static_cast<int64_t>(a.data[0]),
                                               static_cast<int64_t>(a.data[1]), static_cast<int64_t>(a.data[2]),
                                               static_cast<int64_t>(a.data[3]), &notes);
      Tensor got({static_cast<int64_t>(windows.size()), 4});
      for (size_t i = 0; i < windows.size(); ++i) {
        const acsdk::Window& w = windows[i];
        got.data[4 * i + 0] = static_cast<float>(w.top);
        got.data[4 * i + 1] = static_cast<float>(w.left);
        got.data[4 * i + 2] = static_cast<float>(w.height);
        got.data[4 * i + 3] = static_cast<float>(w.width);
      }
      check_close("plan_windows." + name, got, field(g, "plan", name, "windows"), 0.0);
      std::string joined, want;
      for (size_t i = 0; i < notes.size(); ++i) joined += (i ? "\n" : "") + notes[i];
      for (float c : field(g, "plan", name, "notes").data) want += static_cast<char>(static_cast<int>(c));
      report("plan_windows." + name + ".notes", joined == want ? 0.0 : 1.0, joined == want);
      if (joined != want) std::printf("  got:  %s\n  want: %s\n", joined.c_str(), want.c_str());
      total += 2;
    }
    test_window_seed();
    ++total;
    test_windows_every_model_aspect();
    test_invariants();
    ++total;
    test_nan_output_fails();
    total += 2;

    std::printf("%d checks, %d failed\n", total, failures);
    return failures == 0 && total > 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "test_imaging: %s\n", e.what());
    return 1;
  }
}
