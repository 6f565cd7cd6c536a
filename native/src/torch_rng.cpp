#include "torch_rng.hpp"

#include <cmath>
#include <string>

#include "errors.hpp"

namespace acsdk {

// std::mt19937's seeding and output are MT19937 as torch's CPU generator runs it (same init multiplier, twist and
// tempering), so the standard engine draws the very stream torch draws.
TorchGenerator::TorchGenerator(uint64_t seed) : engine_(static_cast<uint32_t>(seed & 0xffffffffu)) {}

uint32_t TorchGenerator::next_u32() { return static_cast<uint32_t>(engine_()); }

namespace {

// A float in [0, 1) from 24 random bits, as torch's uniform_real_distribution<float>.
float uniform(TorchGenerator& g) { return static_cast<float>(g.next_u32() & ((1u << 24) - 1)) / float(1u << 24); }

// Box-Muller on 16 uniforms in place: pairs (j, j + 8). torch takes its AVX2 kernel on x86 (the angle as float
// 2*pi times u2) and its scalar kernel elsewhere, aarch64/Jetson included (the angle computed in double from
// 2.0f * pi<double> * u2, then stored as float): each build follows the kernel torch runs on that architecture.
void box_muller16(float* d) {
  for (int j = 0; j < 8; ++j) {
    const float u1 = 1.0f - d[j];
    const float u2 = d[j + 8];
    const float radius = std::sqrt(-2.0f * std::log(u1));
#if defined(__x86_64__) || defined(_M_X64)
    const float theta = 6.283185307179586f * u2;
#else
    const float theta = static_cast<float>(2.0 * 3.141592653589793 * static_cast<double>(u2));
#endif
    d[j] = radius * std::cos(theta);
    d[j + 8] = radius * std::sin(theta);
  }
}

}  // namespace

std::vector<float> TorchGenerator::randn(size_t n) {
  if (n < 16)  // the latents drawn here come from manifest.json's geometry, which EngineDir holds to >= 16 values
    throw Error("engines", "a latent of " + std::to_string(n) + " values: torch draws fewer than 16 normals another "
                           "way, which the native runtime does not reproduce (the model geometry in manifest.json "
                           "must give a latent of 16 values or more)");
  std::vector<float> d(n);
  for (auto& v : d) v = uniform(*this);
  for (size_t i = 0; i + 16 <= n; i += 16) box_muller16(d.data() + i);
  if (n % 16 != 0) {  // torch redraws the last 16 values
    float* tail = d.data() + n - 16;
    for (int j = 0; j < 16; ++j) tail[j] = uniform(*this);
    box_muller16(tail);
  }
  return d;
}

}  // namespace acsdk
