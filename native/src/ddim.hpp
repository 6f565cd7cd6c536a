// DDIM (eta = 0) as diffusers' DDIMScheduler computes it, from the engine dir's scheduler_config.json.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "tensor.hpp"

namespace acsdk {

// A scheduler-config value; `fallback` where the key is missing or null (diffusers writes nulls). Defined for bool,
// int64_t, double, float and std::string; a value of another type, or a number outside the type's range, is an
// EngineDirError naming the file and key.
template <typename T>
T config_value(const nlohmann::json& config, const char* key, T fallback);
template <>
bool config_value(const nlohmann::json& config, const char* key, bool fallback);
template <>
int64_t config_value(const nlohmann::json& config, const char* key, int64_t fallback);
template <>
double config_value(const nlohmann::json& config, const char* key, double fallback);
template <>
float config_value(const nlohmann::json& config, const char* key, float fallback);
template <>
std::string config_value(const nlohmann::json& config, const char* key, std::string fallback);

enum class Prediction { kEpsilon, kSample, kV };  // what the UNet predicts: the config's prediction_type

// torch.linspace(start, end, n, dtype=torch.float32) on the CPU, value for value (what diffusers' betas come from):
// float32 arithmetic, the first half stepped from start, the second from end, each value one fused multiply-add as
// torch's AVX2 / AVX-512 kernels compute it; n = 1 gives start, n <= 0 nothing.
std::vector<float> torch_linspace(double start, double end, int64_t n);

class DDIM {
 public:
  // Refuses (EngineDirError) the options the Python sampler's scheduler would treat differently than this port:
  // thresholding, zero-SNR rescaling, beta schedules other than linear / scaled_linear / trained betas; and, naming
  // the key, a config no schedule comes from: num_train_timesteps outside [50, 100000] (every run starts where
  // DDIM-50 does), trained_betas not num_train_timesteps values in [0, 1), betas outside [0, 1), a steps_offset
  // that puts a DDIM-50 timestep outside [0, num_train_timesteps).
  explicit DDIM(const nlohmann::json& config);

  // What diffusers' pipeline visits for `steps` at `strength`: the last int(steps * strength) of set_timesteps(steps).
  std::vector<int64_t> diffusers_timesteps(int64_t steps, double strength) const;
  // The timesteps a run visits, as the Python runtime picks them (acsdk/inference/schedules.py): int(steps *
  // strength) of them, from where DDIM-50 starts at `strength` to its last timestep (numpy's linspace, rounded half
  // to even); at 50 steps exactly diffusers' DDIM-50 slice. InputError naming "steps" for more calls than timesteps.
  std::vector<int64_t> timesteps(int64_t steps, double strength) const;
  // x0 noised to timestep t: sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, in x0's shape. InputError naming the
  // argument unless x0 and noise hold their shapes' counts of values, the same count, and t is in [0, T).
  void add_noise(const Tensor& x0, const Tensor& noise, int64_t t, Tensor& out) const;
  // One DDIM step from t to the next visited timestep `prev` (-1: the end) on `latents`, in place. InputError naming
  // the argument unless latents and model_output hold their shapes' counts of values, the same count, t is in
  // [0, T) and prev in [-1, T).
  void step(const Tensor& model_output, int64_t t, int64_t prev, Tensor& latents) const;

  // diffusers' betas and alphas_cumprod for this config, float32 as torch holds them, exactly.
  const std::vector<float>& betas() const { return betas_; }
  const std::vector<float>& alphas_cumprod() const { return alphas_cumprod_; }
  Prediction prediction() const { return prediction_; }

 private:
  std::vector<float> betas_, alphas_cumprod_;
  float final_alpha_cumprod_ = 1.0f;
  int64_t train_steps_ = 1000;
  int64_t steps_offset_ = 0;
  std::string spacing_ = "leading";
  Prediction prediction_ = Prediction::kEpsilon;
  bool clip_sample_ = false;
  float clip_range_ = 1.0f;
};

}  // namespace acsdk
