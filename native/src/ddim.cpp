#include "ddim.hpp"

#include <cmath>
#include <nlohmann/json.hpp>

#include "errors.hpp"

namespace acsdk {

namespace {

// torch.linspace(start, end, n, dtype=float32): the first half stepped from start, the second from end.
std::vector<float> linspace(double start, double end, int64_t n) {
  std::vector<float> out(n);
  const double step = n > 1 ? (end - start) / static_cast<double>(n - 1) : 0.0;
  const int64_t half = n / 2;
  for (int64_t i = 0; i < n; ++i)
    out[i] = static_cast<float>(i < half ? start + step * i : end - step * (n - 1 - i));
  return out;
}

}  // namespace

template <typename T>
T config_value(const nlohmann::json& c, const char* key, T fallback) {
  return c.contains(key) && !c[key].is_null() ? c[key].get<T>() : fallback;
}
template bool config_value(const nlohmann::json&, const char*, bool);
template int64_t config_value(const nlohmann::json&, const char*, int64_t);
template double config_value(const nlohmann::json&, const char*, double);
template float config_value(const nlohmann::json&, const char*, float);
template std::string config_value(const nlohmann::json&, const char*, std::string);

DDIM::DDIM(const nlohmann::json& c) {
  auto refuse = [](const std::string& what) {
    return EngineDirError("scheduler/scheduler_config.json: " + what + " is not supported by the native runtime");
  };
  train_steps_ = config_value<int64_t>(c, "num_train_timesteps", 1000);
  steps_offset_ = config_value<int64_t>(c, "steps_offset", 0);
  spacing_ = config_value<std::string>(c, "timestep_spacing", "leading");
  const std::string prediction = config_value<std::string>(c, "prediction_type", "epsilon");
  clip_sample_ = config_value<bool>(c, "clip_sample", true);
  clip_range_ = config_value<float>(c, "clip_sample_range", 1.0f);
  if (config_value<bool>(c, "thresholding", false)) throw refuse("thresholding");
  if (config_value<bool>(c, "rescale_betas_zero_snr", false)) throw refuse("rescale_betas_zero_snr");
  if (spacing_ != "leading" && spacing_ != "trailing" && spacing_ != "linspace")
    throw refuse("timestep_spacing '" + spacing_ + "'");
  if (prediction == "epsilon") {
    prediction_ = Prediction::kEpsilon;
  } else if (prediction == "sample") {
    prediction_ = Prediction::kSample;
  } else if (prediction == "v_prediction") {
    prediction_ = Prediction::kV;
  } else {
    throw refuse("prediction_type '" + prediction + "'");
  }

  std::vector<float> betas;
  const std::string schedule = config_value<std::string>(c, "beta_schedule", "linear");
  const double b0 = config_value<double>(c, "beta_start", 0.0001), b1 = config_value<double>(c, "beta_end", 0.02);
  if (c.contains("trained_betas") && !c["trained_betas"].is_null()) {
    betas = c["trained_betas"].get<std::vector<float>>();
    train_steps_ = static_cast<int64_t>(betas.size());
  } else if (schedule == "linear") {
    betas = linspace(b0, b1, train_steps_);
  } else if (schedule == "scaled_linear") {
    betas = linspace(std::sqrt(b0), std::sqrt(b1), train_steps_);
    for (auto& b : betas) b = b * b;
  } else {
    throw refuse("beta_schedule '" + schedule + "'");
  }
  alphas_cumprod_.resize(betas.size());
  double acc = 1.0;  // torch.cumprod over float32 accumulates in double on the CPU, storing each product as float
  for (size_t i = 0; i < betas.size(); ++i) {
    acc *= static_cast<double>(1.0f - betas[i]);
    alphas_cumprod_[i] = static_cast<float>(acc);
  }
  final_alpha_cumprod_ = config_value<bool>(c, "set_alpha_to_one", true) ? 1.0f : alphas_cumprod_.at(0);
}

// diffusers' DDIMScheduler.set_timesteps, with numpy's arithmetic reproduced (np.round and nearbyint both round half
// to even; np.arange over floats is start + i * (second - first) and has ceil(span / step) elements, which can be
// one more than `steps` for trailing spacing, e.g. 62 for 61), then the pipeline's slice from index steps - init.
std::vector<int64_t> DDIM::diffusers_timesteps(int64_t steps, double strength) const {
  if (steps < 1 || steps > train_steps_)
    throw InputError("steps", "an integer in [1, " + std::to_string(train_steps_) + "]", std::to_string(steps));
  std::vector<int64_t> all;
  if (spacing_ == "leading") {
    const int64_t ratio = train_steps_ / steps;
    for (int64_t i = steps - 1; i >= 0; --i) all.push_back(i * ratio + steps_offset_);
  } else if (spacing_ == "trailing") {  // np.round(np.arange(T, 0, -T / steps)) - 1
    const double start = static_cast<double>(train_steps_), step = -start / static_cast<double>(steps);
    const double delta = (start + step) - start;
    const auto n = static_cast<int64_t>(std::ceil((0.0 - start) / step));
    for (int64_t i = 0; i < n; ++i) all.push_back(static_cast<int64_t>(std::nearbyint(start + i * delta)) - 1);
  } else {  // np.linspace(0, T - 1, steps).round()[::-1]: i * ((T - 1) / (steps - 1)), the last exactly T - 1
    const double stop = static_cast<double>(train_steps_ - 1);
    const double step = steps > 1 ? stop / static_cast<double>(steps - 1) : 0.0;
    for (int64_t i = steps - 1; i >= 0; --i) {
      const double v = i == steps - 1 && steps > 1 ? stop : static_cast<double>(i) * step;
      all.push_back(static_cast<int64_t>(std::nearbyint(v)));
    }
  }
  const int64_t init = std::min<int64_t>(static_cast<int64_t>(steps * strength), steps);
  return std::vector<int64_t>(all.begin() + (steps - init), all.end());
}

std::vector<int64_t> DDIM::timesteps(int64_t steps, double strength) const {
  constexpr int64_t kReference = 50;  // the paper's DDIM count: its start at a strength is every run's
  const std::vector<int64_t> reference = diffusers_timesteps(kReference, 1.0);
  const int64_t init = std::min<int64_t>(static_cast<int64_t>(kReference * strength), kReference);
  const std::vector<int64_t> paper(reference.begin() + std::min(kReference - init, kReference - 1), reference.end());
  if (steps < 1) throw InputError("steps", "an integer >= 1", std::to_string(steps));
  const int64_t calls = std::min<int64_t>(static_cast<int64_t>(steps * strength), steps);
  if (calls == static_cast<int64_t>(paper.size())) return paper;
  const int64_t first = paper.front(), last = paper.back();
  if (calls > first - last + 1)
    throw InputError("steps", "at most " + std::to_string(first - last + 1) + " UNet calls at this strength",
                     std::to_string(calls) + " calls");
  // np.linspace(first, last, calls): start + i * ((stop - start) / (num - 1)), the last exactly stop; np.round.
  std::vector<int64_t> out(calls);
  const double step = calls > 1 ? static_cast<double>(last - first) / static_cast<double>(calls - 1) : 0.0;
  for (int64_t i = 0; i < calls; ++i) {
    const double v = i == calls - 1 && calls > 1 ? static_cast<double>(last) : static_cast<double>(i) * step + first;
    out[i] = static_cast<int64_t>(std::nearbyint(v));
  }
  return out;
}

void DDIM::add_noise(const Tensor& x0, const Tensor& noise, int64_t t, Tensor& out) const {
  const float a = std::sqrt(alphas_cumprod_.at(t)), b = std::sqrt(1.0f - alphas_cumprod_.at(t));
  out = Tensor(x0.shape);
  for (size_t i = 0; i < out.numel(); ++i) out.data[i] = a * x0.data[i] + b * noise.data[i];
}

void DDIM::step(const Tensor& model_output, int64_t t, int64_t prev, Tensor& latents) const {
  const float abar = alphas_cumprod_.at(t);
  const float abar_prev = prev >= 0 ? alphas_cumprod_.at(prev) : final_alpha_cumprod_;
  const float sa = std::sqrt(abar), sb = std::sqrt(1.0f - abar);
  const float sa_prev = std::sqrt(abar_prev), sb_prev = std::sqrt(1.0f - abar_prev);
  for (size_t i = 0; i < latents.numel(); ++i) {
    const float x = latents.data[i], m = model_output.data[i];
    float x0, eps;
    if (prediction_ == Prediction::kEpsilon) {
      x0 = (x - sb * m) / sa;
      eps = m;
    } else if (prediction_ == Prediction::kSample) {
      x0 = m;
      eps = (x - sa * x0) / sb;
    } else {  // v_prediction
      x0 = sa * x - sb * m;
      eps = sa * m + sb * x;
    }
    if (clip_sample_) {
      x0 = std::min(std::max(x0, -clip_range_), clip_range_);
    }
    latents.data[i] = sa_prev * x0 + sb_prev * eps;
  }
}

}  // namespace acsdk
