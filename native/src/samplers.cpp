#include "samplers.hpp"

#include <cmath>
#include <nlohmann/json.hpp>
#include <utility>

#include "errors.hpp"

namespace acsdk {

namespace {

// The step index a Stepper is asked for: one of its visited timesteps, InputError naming "step" otherwise.
void check_index(size_t i, size_t visited) {
  if (i >= visited)
    throw InputError("step", "an index below the " + std::to_string(visited) + " visited timesteps", std::to_string(i));
}

// DDIM (eta 0) from each visited timestep to the next.
class DDIMStepper final : public Stepper {
 public:
  DDIMStepper(const DDIM& ddim, std::vector<int64_t> timesteps) : ddim_(ddim), timesteps_(std::move(timesteps)) {}

  void add_noise(const Tensor& x0, const Tensor& noise, Tensor& out) const override {
    ddim_.add_noise(x0, noise, timesteps_.front(), out);
  }
  void step(const Tensor& model_output, size_t i, Tensor& latents) override {
    check_index(i, timesteps_.size());
    ddim_.step(model_output, timesteps_[i], i + 1 < timesteps_.size() ? timesteps_[i + 1] : -1, latents);
  }

 private:
  const DDIM& ddim_;
  std::vector<int64_t> timesteps_;
};

// DPM-Solver++ (2M) as diffusers' DPMSolverMultistepScheduler steps it with algorithm_type "dpmsolver++" and
// solver_order 2 over explicit timesteps: sigma = sqrt((1 - abar) / abar) per visited timestep then the final one,
// alpha_t = 1 / sqrt(sigma^2 + 1), sigma_t = sigma alpha_t, lambda = log alpha_t - log sigma_t; the first step and the
// final one first order, the others the multistep second-order update. Every scalar in float32 in diffusers' order
// of operations, so that the steps agree with the Python runtime's to float32 rounding. The final sigma is DDIM's
// end: sqrt((1 - abar[0]) / abar[0]) (diffusers' final_sigmas_type "sigma_min") under SD's set_alpha_to_one false.
class DPMSolverPP final : public Stepper {
 public:
  DPMSolverPP(const DDIM& ddim, const nlohmann::json& c, std::vector<int64_t> timesteps) : prediction_(ddim.prediction()) {
    auto refuse = [](const std::string& what) {
      return EngineDirError("scheduler/scheduler_config.json: " + what + " is not supported by the native DPM-Solver++");
    };
    const std::string solver = config_value<std::string>(c, "solver_type", "midpoint");
    if (solver == "heun") {
      heun_ = true;
    } else if (solver != "midpoint" && solver != "logrho" && solver != "bh1" && solver != "bh2") {  // diffusers: midpoint
      throw refuse("solver_type '" + solver + "'");
    }
    for (const char* key : {"use_lu_lambdas", "use_exponential_sigmas", "use_beta_sigmas", "use_flow_sigmas"})
      if (config_value<bool>(c, key, false)) throw refuse(key);
    const std::string variance = config_value<std::string>(c, "variance_type", "");
    if (!variance.empty()) throw refuse("variance_type '" + variance + "'");
    // The end point is DDIM's, whatever final_sigmas_type the config says (schedules.final_sigmas_type): alpha 1
    // (sigma 0, "zero") under set_alpha_to_one, else alphas_cumprod[0] ("sigma_min"), so every sampler converges to
    // the one solution DDIM converges to.
    final_zero_ = config_value<bool>(c, "set_alpha_to_one", true);
    euler_at_final_ = config_value<bool>(c, "euler_at_final", false);
    lower_order_final_ = config_value<bool>(c, "lower_order_final", true);

    const std::vector<float>& abar = ddim.alphas_cumprod();
    auto sigma = [&](int64_t t) { return std::sqrt((1.0f - abar.at(t)) / abar.at(t)); };
    for (int64_t t : timesteps) sigmas_.push_back(sigma(t));
    sigmas_.push_back(final_zero_ ? 0.0f : sigma(0));
  }

  void add_noise(const Tensor& x0, const Tensor& noise, Tensor& out) const override {
    x0.check("x0");
    check_like(noise, "noise", x0, "x0");
    const auto [a, s] = alpha_sigma(sigmas_.front());
    out = Tensor(x0.shape);
    for (size_t k = 0; k < out.numel(); ++k) out.data[k] = a * x0.data[k] + s * noise.data[k];
  }

  void step(const Tensor& model_output, size_t i, Tensor& latents) override {
    const size_t n = sigmas_.size() - 1;  // visited timesteps
    check_index(i, n);
    latents.check("latents");
    check_like(model_output, "model_output", latents, "latents");
    if (!previous_.data.empty()) check_like(latents, "latents", previous_, "the previous step's latents");
    const auto [alpha_s0, sigma_s0] = alpha_sigma(sigmas_.at(i));
    const auto [alpha_t, sigma_t] = alpha_sigma(sigmas_.at(i + 1));
    Tensor& x0 = current_;
    data_prediction(model_output, latents, alpha_s0, sigma_s0, x0);

    const float lambda_t = std::log(alpha_t) - std::log(sigma_t), lambda_s0 = std::log(alpha_s0) - std::log(sigma_s0);
    const float h = lambda_t - lambda_s0;
    const float a = sigma_t / sigma_s0, b = alpha_t * (std::exp(-h) - 1.0f);
    const bool lower_final = i == n - 1 && (euler_at_final_ || (lower_order_final_ && n < 15) || final_zero_);
    if (previous_.data.empty() || lower_final) {
      for (size_t k = 0; k < latents.numel(); ++k) latents.data[k] = a * latents.data[k] - b * x0.data[k];
    } else {
      const auto [alpha_s1, sigma_s1] = alpha_sigma(sigmas_.at(i - 1));
      const float lambda_s1 = std::log(alpha_s1) - std::log(sigma_s1);
      const float r0 = (lambda_s0 - lambda_s1) / h, inv_r0 = 1.0f / r0;
      const float c = heun_ ? alpha_t * ((std::exp(-h) - 1.0f) / h + 1.0f) : 0.5f * b;
      for (size_t k = 0; k < latents.numel(); ++k) {
        const float d1 = inv_r0 * (x0.data[k] - previous_.data[k]);
        const float base = a * latents.data[k] - b * x0.data[k];
        latents.data[k] = heun_ ? base + c * d1 : base - c * d1;
      }
    }
    std::swap(previous_, current_);  // this step's prediction is the next one's previous; its buffer is reused
  }

 private:
  static std::pair<float, float> alpha_sigma(float sigma) {
    const float alpha = 1.0f / std::sqrt(sigma * sigma + 1.0f);
    return {alpha, sigma * alpha};
  }

  // What DPM-Solver++ integrates: the model's prediction of the clean latents (no clipping, as diffusers).
  void data_prediction(const Tensor& m, const Tensor& x, float alpha, float sigma, Tensor& out) const {
    if (out.shape != x.shape) out = Tensor(x.shape);
    for (size_t k = 0; k < out.numel(); ++k) {
      if (prediction_ == Prediction::kEpsilon) {
        out.data[k] = (x.data[k] - sigma * m.data[k]) / alpha;
      } else if (prediction_ == Prediction::kSample) {
        out.data[k] = m.data[k];
      } else {
        out.data[k] = alpha * x.data[k] - sigma * m.data[k];
      }
    }
  }

  Prediction prediction_;
  std::vector<float> sigmas_;
  bool heun_ = false, final_zero_ = true, euler_at_final_ = false, lower_order_final_ = true;
  Tensor previous_;  // the data prediction of the step before; empty before the first
  Tensor current_;   // this step's, in a buffer kept across steps
};

}  // namespace

std::unique_ptr<Stepper> make_stepper(const std::string& sampler, const DDIM& ddim, const nlohmann::json& config,
                                      std::vector<int64_t> timesteps) {
  if (sampler == "ddim") return std::make_unique<DDIMStepper>(ddim, std::move(timesteps));
  if (sampler == "dpmpp-2m") return std::make_unique<DPMSolverPP>(ddim, config, std::move(timesteps));
  throw InputError("sampler", sampler_choices(), "'" + sampler + "'");
}

}  // namespace acsdk
