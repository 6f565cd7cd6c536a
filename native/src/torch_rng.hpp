// torch's CPU generator, so a native run with seed s draws the same noise as `torch.Generator("cpu").manual_seed(s)`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace acsdk {

// torch.Generator("cpu"): a 32-bit Mersenne Twister seeded with the seed's low 32 bits (as manual_seed does).
class TorchGenerator {
 public:
  explicit TorchGenerator(uint64_t seed);
  uint32_t next_u32();
  // torch.randn(n, generator=g, dtype=float32) for n >= 16 (the Box-Muller over blocks of 16 that torch's CPU
  // kernel uses; the shapes drawn here are latents, never smaller); acsdk::Error naming "engines" below 16.
  std::vector<float> randn(size_t n);

 private:
  std::mt19937 engine_;
};

}  // namespace acsdk
