#include "ddim.hpp"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>

#include "errors.hpp"
#include "json_read.hpp"

namespace acsdk {

// torch's CPU kernel (RangeFactoriesKernel.cpp) in float32 throughout: start and end rounded to float, step =
// (end - start) / (n - 1) in float, the first half start + step * i, the second end - step * (n - 1 - i), each
// rounded once: its AVX2 / AVX-512 builds contract them into fused multiply-adds, std::fma here (this build turns
// contraction off: -ffp-contract=off). Checked against torch 2.13 with ATEN_CPU_CAPABILITY avx512 and avx2; its
// "default" kernel (an x86 CPU without AVX2) rounds the product and the sum apart and differs in the last bit.
std::vector<float> torch_linspace(double start, double end, int64_t n) {
  if (n <= 0) return {};
  const float a = static_cast<float>(start), b = static_cast<float>(end);
  std::vector<float> out(static_cast<size_t>(n));
  if (n == 1) {
    out[0] = a;
    return out;
  }
  const float step = (b - a) / static_cast<float>(n - 1);
  const int64_t half = n / 2;
  for (int64_t i = 0; i < n; ++i)
    out[i] = i < half ? std::fma(step, static_cast<float>(i), a) : std::fma(-step, static_cast<float>(n - 1 - i), b);
  return out;
}

namespace {

constexpr const char* kConfigFile = "scheduler/scheduler_config.json";
constexpr int64_t kReferenceSteps = 50;       // the paper's DDIM count: its start at a strength is every run's
constexpr int64_t kMaxTrainSteps = 100000;    // SD's is 1000; past this a config asks for memory, not a schedule

EngineDirError bad_text(const std::string& key, const std::string& expected, const std::string& got) {
  return EngineDirError(std::string(kConfigFile) + ": " + key + ": expected " + expected + ", got " + got +
                        "; rebuild the engine dir");
}

EngineDirError bad_value(const std::string& key, const std::string& expected, const nlohmann::json& got) {
  return bad_text(key, expected, json_read::shown(got));
}

const nlohmann::json* present(const nlohmann::json& c, const char* key) {
  if (!c.is_object()) return nullptr;
  const auto it = c.find(key);
  return it == c.end() || it->is_null() ? nullptr : &*it;
}

nlohmann::json value_of(const nlohmann::json& c, const char* key) {  // for messages: null where absent
  const nlohmann::json* v = present(c, key);
  return v ? *v : nlohmann::json();
}

}  // namespace

// Each type read as the file holds it: a value of another type, or a number out of the type's range (1e300 for an
// integer or a float: a conversion with undefined behaviour in nlohmann's get<>()), is an EngineDirError naming it.
template <>
bool config_value(const nlohmann::json& c, const char* key, bool fallback) {
  const nlohmann::json* v = present(c, key);
  if (!v) return fallback;
  if (!v->is_boolean()) throw bad_value(key, "true or false", *v);
  return v->get<bool>();
}
template <>
int64_t config_value(const nlohmann::json& c, const char* key, int64_t fallback) {
  const nlohmann::json* v = present(c, key);
  if (!v) return fallback;
  const auto i = json_read::integer(*v, std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max());
  if (!i) throw bad_value(key, "an integer", *v);
  return *i;
}
template <>
double config_value(const nlohmann::json& c, const char* key, double fallback) {
  const nlohmann::json* v = present(c, key);
  if (!v) return fallback;
  const auto d = json_read::real(*v, -std::numeric_limits<double>::max(), std::numeric_limits<double>::max());
  if (!d) throw bad_value(key, "a finite number", *v);
  return *d;
}
template <>
float config_value(const nlohmann::json& c, const char* key, float fallback) {
  const nlohmann::json* v = present(c, key);
  if (!v) return fallback;
  const double limit = std::numeric_limits<float>::max();
  const auto d = json_read::real(*v, -limit, limit);
  if (!d) throw bad_value(key, "a finite number within float32's range", *v);
  return static_cast<float>(*d);
}
template <>
std::string config_value(const nlohmann::json& c, const char* key, std::string fallback) {
  const nlohmann::json* v = present(c, key);
  if (!v) return fallback;
  if (!v->is_string()) throw bad_value(key, "a string", *v);
  return v->get<std::string>();
}

DDIM::DDIM(const nlohmann::json& c) {
  auto refuse = [](const std::string& what) {
    return EngineDirError(std::string(kConfigFile) + ": " + what + " is not supported by the native runtime");
  };
  if (!c.is_object()) throw bad_value("its root", "a JSON object", c);
  // An integer within [lo, hi] (the fallback where absent or null), read as the file holds it.
  auto bounded = [&](const char* key, int64_t fallback, int64_t lo, int64_t hi, const std::string& why) {
    const nlohmann::json* v = present(c, key);
    const auto i = v ? json_read::integer(*v, lo, hi) : std::optional<int64_t>(fallback);
    if (!i) throw bad_value(key, "an integer in " + json_read::range(lo, hi) + why, *v);
    return *i;
  };
  // diffusers' set_timesteps(50) needs 50 timesteps at least; past kMaxTrainSteps a config asks for memory
  train_steps_ = bounded("num_train_timesteps", 1000, kReferenceSteps, kMaxTrainSteps,
                         " (every run starts where DDIM-" + std::to_string(kReferenceSteps) + " starts)");
  steps_offset_ = bounded("steps_offset", 0, 0, train_steps_ - 1, "");
  spacing_ = config_value<std::string>(c, "timestep_spacing", "leading");
  const std::string prediction = config_value<std::string>(c, "prediction_type", "epsilon");
  clip_sample_ = config_value<bool>(c, "clip_sample", true);
  clip_range_ = config_value<float>(c, "clip_sample_range", 1.0f);
  if (clip_sample_ && !(clip_range_ > 0.0f)) throw bad_value("clip_sample_range", "a number > 0", value_of(c, "clip_sample_range"));
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

  // Every beta in [0, 1): 1 - beta is a probability's complement that the cumprod and its square roots divide by.
  std::vector<float> betas;
  const std::string schedule = config_value<std::string>(c, "beta_schedule", "linear");
  const double b0 = config_value<double>(c, "beta_start", 0.0001), b1 = config_value<double>(c, "beta_end", 0.02);
  if (const nlohmann::json* trained = present(c, "trained_betas")) {
    const std::string expected = "a list of num_train_timesteps (" + std::to_string(train_steps_) + ") numbers in [0, 1)";
    if (!trained->is_array() || static_cast<int64_t>(trained->size()) != train_steps_)
      throw bad_text("trained_betas", expected,
                     trained->is_array() ? std::to_string(trained->size()) + " values" : json_read::shown(*trained));
    for (const auto& b : *trained) {
      const auto v = json_read::real(b, 0.0, 1.0);
      if (!v || *v >= 1.0) throw bad_value("trained_betas", expected, b);
      betas.push_back(static_cast<float>(*v));
    }
  } else {
    for (const auto& [key, v] : {std::pair<const char*, double>{"beta_start", b0}, {"beta_end", b1}})
      if (!(v >= 0.0 && v < 1.0)) throw bad_value(key, "a number in [0, 1)", value_of(c, key));
    // diffusers: torch.linspace(beta_start, beta_end, T, dtype=torch.float32), and for scaled_linear
    // torch.linspace(beta_start ** 0.5, beta_end ** 0.5, T, dtype=torch.float32) ** 2 (Python's ** is pow()).
    if (schedule == "linear") {
      betas = torch_linspace(b0, b1, train_steps_);
    } else if (schedule == "scaled_linear") {
      betas = torch_linspace(std::pow(b0, 0.5), std::pow(b1, 0.5), train_steps_);
      for (auto& b : betas) b = b * b;  // in float32, as the tensor's ** 2
    } else {
      throw refuse("beta_schedule '" + schedule + "'");
    }
  }
  betas_ = betas;
  alphas_cumprod_.resize(betas.size());
  double acc = 1.0;  // torch.cumprod over float32 accumulates in double on the CPU, storing each product as float
  for (size_t i = 0; i < betas.size(); ++i) {
    acc *= static_cast<double>(1.0f - betas[i]);
    alphas_cumprod_[i] = static_cast<float>(acc);
  }
  final_alpha_cumprod_ = config_value<bool>(c, "set_alpha_to_one", true) ? 1.0f : alphas_cumprod_.at(0);
  // Every run visits DDIM-50's timesteps or ones between them: each must index the schedule. Leading spacing's
  // steps_offset is checked in diffusers_timesteps; trailing spacing gives DDIM-50 a 51st timestep, -1, for 5116 of
  // the schedule lengths allowed (57, 69, 113, ...: np.arange's ceil(T / (T / 50)) rounds up to 51), which diffusers
  // would read as alphas_cumprod[-1], the noisiest timestep (and this port's samplers as an index out of range).
  for (const int64_t t : diffusers_timesteps(kReferenceSteps, 1.0))
    if (t < 0 || t >= train_steps_)
      throw bad_text("timestep_spacing", "a spacing whose DDIM-" + std::to_string(kReferenceSteps) +
                                             " timesteps lie in [0, " + std::to_string(train_steps_ - 1) + "]",
                     "'" + spacing_ + "', which with num_train_timesteps " + std::to_string(train_steps_) +
                         " gives timestep " + std::to_string(t));
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
  // Leading spacing adds steps_offset: it must not push a timestep past the schedule. (Trailing spacing's extra
  // timestep -1, which diffusers gives too, e.g. at 61 steps, is left as diffusers has it.)
  for (const int64_t t : all)
    if (spacing_ == "leading" && t >= train_steps_)
      throw EngineDirError(std::string(kConfigFile) + ": steps_offset " + std::to_string(steps_offset_) + " puts DDIM-" +
                           std::to_string(steps) + "'s timestep " + std::to_string(t) + " outside [0, " +
                           std::to_string(train_steps_ - 1) + "]; rebuild the engine dir");
  const int64_t init = std::min<int64_t>(static_cast<int64_t>(steps * strength), steps);
  return std::vector<int64_t>(all.begin() + (steps - init), all.end());
}

std::vector<int64_t> DDIM::timesteps(int64_t steps, double strength) const {
  constexpr int64_t kReference = kReferenceSteps;
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

namespace {

// `t` indexes the schedule of `n` timesteps ([0, n), or -1 for the end where `end_allowed`): InputError naming it.
void check_timestep(int64_t t, size_t n, const char* argument, bool end_allowed = false) {
  const int64_t last = static_cast<int64_t>(n) - 1;
  if ((t < 0 && !(end_allowed && t == -1)) || t > last)
    throw InputError(argument, std::string("a timestep in [") + (end_allowed ? "-1" : "0") + ", " +
                                   std::to_string(last) + "]", std::to_string(t));
}

}  // namespace

void DDIM::add_noise(const Tensor& x0, const Tensor& noise, int64_t t, Tensor& out) const {
  check_timestep(t, alphas_cumprod_.size(), "timestep");
  x0.check("x0");
  check_like(noise, "noise", x0, "x0");
  const float a = std::sqrt(alphas_cumprod_[t]), b = std::sqrt(1.0f - alphas_cumprod_[t]);
  out = Tensor(x0.shape);
  for (size_t i = 0; i < out.numel(); ++i) out.data[i] = a * x0.data[i] + b * noise.data[i];
}

void DDIM::step(const Tensor& model_output, int64_t t, int64_t prev, Tensor& latents) const {
  check_timestep(t, alphas_cumprod_.size(), "timestep");
  check_timestep(prev, alphas_cumprod_.size(), "prev", true);
  latents.check("latents");
  check_like(model_output, "model_output", latents, "latents");
  const float abar = alphas_cumprod_[t];
  const float abar_prev = prev >= 0 ? alphas_cumprod_[prev] : final_alpha_cumprod_;
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
