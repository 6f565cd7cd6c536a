// fuzz_scheduler: an engine dir's scheduler/scheduler_config.json from the input, read as Synthesizer does:
// EngineDir::scheduler_config(), DDIM's constructor, the timesteps of several (steps, strength) settings, and both
// samplers (DDIM, DPM-Solver++) stepping a small latent over them from the start to the end.
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "ddim.hpp"
#include "engine_dir.hpp"
#include "errors.hpp"
#include "fuzz_common.hpp"
#include "samplers.hpp"

namespace {

constexpr const char* kConfig = "scheduler/scheduler_config.json";

acsdk::EngineDir& engine_dir() {
  static acsdk::EngineDir* dir = [] {
    const std::string root = fuzz::scratch() + "/engines";
    fuzz::put(root + "/" + kConfig, "{}");
    fuzz::put(root + "/manifest.json",
              std::string(R"({"schema_version": 1, "components": {}, "settings": {}, "model": {}, "files": {")") +
                  kConfig + R"(": "0000000000000000000000000000000000000000000000000000000000000000"}})");
    return new acsdk::EngineDir(root, /*verify=*/false);
  }();
  return *dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  acsdk::EngineDir& dir = engine_dir();
  fuzz::put(dir.root() + "/" + kConfig, data, size);
  try {
    const nlohmann::json config = dir.scheduler_config();
    const acsdk::DDIM ddim(config);
    for (const auto& [steps, strength] : {std::pair<int64_t, double>{50, 1.0}, {50, 0.5}, {20, 0.75}, {1, 1.0},
                                          {7, 0.3}, {61, 1.0}, {400, 1.0}}) {
      try {
        ddim.diffusers_timesteps(steps, strength);
      } catch (const acsdk::Error&) {
      }
      try {
        const std::vector<int64_t> timesteps = ddim.timesteps(steps, strength);
        for (const char* sampler : {"ddim", "dpmpp-2m"}) {
          try {
            std::unique_ptr<acsdk::Stepper> stepper = acsdk::make_stepper(sampler, ddim, config, timesteps);
            const acsdk::Tensor x0({1, 1, 2, 2}, 0.25f), noise({1, 1, 2, 2}, -0.5f), model({1, 1, 2, 2}, 0.125f);
            acsdk::Tensor latents = noise;
            if (strength < 1.0) stepper->add_noise(x0, noise, latents);
            for (size_t i = 0; i < timesteps.size(); ++i) stepper->step(model, i, latents);
          } catch (const acsdk::Error&) {
          }
        }
      } catch (const acsdk::Error&) {
      }
    }
  } catch (const acsdk::Error&) {
  }
  return 0;
}
