// The samplers a run steps with, as acsdk/inference/schedules.py offers them: "ddim" (the paper's) and "dpmpp-2m"
// (diffusers' DPMSolverMultistepScheduler, DPM-Solver++ second order), both over the timesteps DDIM::timesteps visits.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "ddim.hpp"
#include "tensor.hpp"

namespace acsdk {

inline const std::vector<std::string>& sampler_names() {
  static const std::vector<std::string> names = {"ddim", "dpmpp-2m"};
  return names;
}

// "ddim or dpmpp-2m": what an InputError naming "sampler" expects.
inline std::string sampler_choices() {
  std::string out;
  for (const auto& name : sampler_names()) out += (out.empty() ? "" : " or ") + name;
  return out;
}

// One run's sampler: it holds state (DPM-Solver++ keeps the previous prediction), so make a fresh one per window.
class Stepper {
 public:
  virtual ~Stepper() = default;
  // x0 noised to the first visited timestep: where a run at strength < 1 starts.
  virtual void add_noise(const Tensor& x0, const Tensor& noise, Tensor& out) const = 0;
  // The step from the i-th visited timestep to the next one (past the last: the end) on `latents`, in place.
  virtual void step(const Tensor& model_output, size_t i, Tensor& latents) = 0;
};

// `sampler` over `timesteps` with `ddim`'s schedule and the engine dir's scheduler config; InputError naming
// "sampler" for a name not in sampler_names(), EngineDirError for a config option the port would treat differently.
std::unique_ptr<Stepper> make_stepper(const std::string& sampler, const DDIM& ddim, const nlohmann::json& config,
                                      std::vector<int64_t> timesteps);

}  // namespace acsdk
