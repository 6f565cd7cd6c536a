#include "synthesizer.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <sstream>
#include <utility>

#include "cpu.hpp"
#include "errors.hpp"
#include "imageops.hpp"
#include "samplers.hpp"
#include "torch_rng.hpp"

namespace acsdk {

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

bool finite(const std::map<std::string, Tensor>& outs) {
  for (const auto& [name, t] : outs)
    for (float v : t.data)
      if (!std::isfinite(v)) return false;
  return true;
}

// One row of a [2, ...] bank tensor as [1, ...].
Tensor row(const Tensor& t, int64_t r) {
  Tensor out(std::vector<int64_t>{1, t.shape[1], t.shape[2]});
  const size_t n = out.numel();
  std::copy_n(t.ptr() + r * n, n, out.ptr());
  return out;
}

// mean + std * eps from the VAE's moments [C2, h, w] (mean, logvar halves), times the latent scaling: as
// sampler.sample_latent, eps drawn from the window's generator.
Tensor sample_latent(const float* moments, int64_t c, int64_t hw, TorchGenerator& gen, float scaling) {
  Tensor out({1, c, hw});
  const std::vector<float> eps = gen.randn(static_cast<size_t>(c * hw));
  for (int64_t i = 0; i < c * hw; ++i) {
    const float logvar = std::min(std::max(moments[c * hw + i], -30.0f), 20.0f);
    out.data[i] = (moments[i] + std::exp(0.5f * logvar) * eps[i]) * scaling;
  }
  return out;
}

}  // namespace

void check_settings(const Settings& s) {
  auto num = [](double v) {
    std::ostringstream o;
    o << v;
    return o.str();
  };
  if (s.steps < 1) throw InputError("steps", "an integer >= 1", std::to_string(s.steps));
  if (!(s.strength > 0.0 && s.strength <= 1.0)) throw InputError("strength", "a number in (0, 1]", num(s.strength));
  if (static_cast<int64_t>(s.steps * s.strength) < 1)  // the sampler runs int(steps * strength) steps
    throw InputError("steps", "at least " + std::to_string(static_cast<int64_t>(std::ceil(1.0 / s.strength))) +
                                  " at strength " + num(s.strength) + " (steps x strength >= 1)",
                     std::to_string(s.steps));
  if (!(s.guidance >= 0.0 && s.guidance <= 1e3)) throw InputError("guidance", "a number in [0, 1000]", num(s.guidance));
  if (!(std::abs(s.semantic_scale) <= 1e3))
    throw InputError("semantic-scale", "a number in [-1000, 1000]", num(s.semantic_scale));
  const auto& samplers = sampler_names();
  if (std::find(samplers.begin(), samplers.end(), s.sampler) == samplers.end())
    throw InputError("sampler", sampler_choices(), "'" + s.sampler + "'");
  if (!(s.cfg_cutoff == -1.0 || (s.cfg_cutoff >= 0.0 && s.cfg_cutoff <= 1.0)))
    throw InputError("cfg-cutoff", "a number in [0, 1]", num(s.cfg_cutoff));
  if (s.roi != "auto" && s.roi != "full") throw InputError("roi", "auto or full", "'" + s.roi + "'");
  if (s.roi_padding < 0) throw InputError("roi-padding", "an integer >= 0", std::to_string(s.roi_padding));
  if (s.roi_min_size == 0 || s.roi_min_size < -1)
    throw InputError("roi-min-size", "an integer >= 1", std::to_string(s.roi_min_size));
  if (!(s.blur_sigma == -1.0 || (s.blur_sigma >= 0.0 && s.blur_sigma <= 1e4)))
    throw InputError("blur-sigma", "a number in [0, 10000]", num(s.blur_sigma));
}

namespace {

EngineDirError wrong_type(const nlohmann::json::exception& e) {
  return EngineDirError("scheduler/scheduler_config.json has a value of the wrong type (" + std::string(e.what()) +
                        "); rebuild the engine dir");
}

DDIM make_ddim(const nlohmann::json& config) {
  try {
    return DDIM(config);
  } catch (const nlohmann::json::exception& e) {
    throw wrong_type(e);
  }
}

}  // namespace

Synthesizer::Synthesizer(const std::string& engine_dir, const BackendOptions& options, bool verify)
    : dir_(engine_dir, verify),
      geometry_(dir_.geometry()),
      scheduler_config_(dir_.scheduler_config()),
      ddim_(make_ddim(scheduler_config_)),
      low_memory_(options.low_memory) {
  BackendOptions opts = options;
  if (opts.backend == "openvino" && opts.cache_dir.empty()) opts.cache_dir = openvino_cache_dir(dir_);
  for (const char* name : {"vae_encoder", "unet", "vae_decoder"}) {
    Artifact art = dir_.artifact(name, opts.backend);
    std::string why;
    if (art.precision == "int8" && opts.device.rfind("CPU", 0) == 0 && !int8_gate_holds_here(art.record, &why)) {
      art = dir_.artifact(name, opts.backend, "fp32");  // what the gate measured is not what would run here
      load_notes_.push_back(std::string(name) + ": fp32 instead of INT8, because " + why);
      log_message(opts, LogLevel::kWarning, load_notes_.back());  // the caller's callback; stderr by default
    }
    engines_[name] = open_engine(name, art, opts);
    // fp16 SD VAEs overflow on some inputs: an fp32 variant, where the dir ships one, reruns them (as Python).
    const bool guarded = std::string(name) != "unet";
    const std::string variant_format = opts.backend == "tensorrt" ? "tensorrt" : "onnx";
    if (guarded && art.precision != "fp32" && dir_.has_artifact(name, variant_format, "fp32"))
      engines_[std::string(name) + "_fp32"] = open_engine(name, dir_.artifact(name, opts.backend, "fp32"), opts);
  }
}

std::vector<std::string> Synthesizer::describe() const {
  std::vector<std::string> out;
  for (const auto& [name, engine] : engines_) out.push_back(name + ": " + engine->describe());
  return out;
}

// An engine's output is read only after its shape matched what the manifest's geometry implies: an engine dir
// nobody vouched for (a swapped model, a hand-edited manifest) must be an error, never a read past a buffer.
void Synthesizer::expect_shape(const std::string& component, const std::string& output, const Tensor& t,
                               const std::vector<int64_t>& want) const {
  if (t.shape != want || t.data.size() != Tensor::count(want))
    throw EngineDirError(component + ": output '" + output + "' has shape " + shape_str(t.shape) + ", the manifest's " +
                         "geometry implies " + shape_str(want) + "; rebuild the engine dir");
}

// With --low-memory one engine's compiled weights and buffers are resident at a time: each is released when its
// stage ends and compiled again (from OpenVINO's model cache) when the next window or run needs it.
void Synthesizer::done(const std::string& name) {
  if (!low_memory_) return;
  for (const std::string& n : {name, name + "_fp32"}) {
    auto it = engines_.find(n);
    if (it != engines_.end()) it->second->release();
  }
}

std::map<std::string, Tensor> Synthesizer::guarded(const std::string& name, const Feeds& feeds, Result& result) {
  auto outs = engines_.at(name)->run(feeds);
  auto fallback = engines_.find(name + "_fp32");
  if (fallback != engines_.end() && !finite(outs)) {
    result.notes.push_back(name + "_fp32_fallback");
    outs = fallback->second->run(feeds);
  }
  return outs;
}

Tensor Synthesizer::sample(const Tensor& image, const Tensor& mask, const Bank& bank, const Settings& s,
                           uint64_t seed, Result& result) {
  const Geometry& g = geometry_;
  const int64_t H = image.dim(1), W = image.dim(2), C = g.channels;
  const int64_t h = H / g.scale_factor, w = W / g.scale_factor, hw = h * w;
  TorchGenerator gen(seed);
  const bool cfg = s.guidance > 1.0;
  const int64_t rows = cfg ? 2 : 1;

  auto t0 = Clock::now();
  Tensor pair({2, 3, H, W});  // the image and the image with the mask cut out, in [-1, 1]
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t i = 0; i < H * W; ++i) {
      const float x = image.data[c * H * W + i] * 2.0f - 1.0f;
      pair.data[c * H * W + i] = x;
      pair.data[(3 + c) * H * W + i] = mask.data[i] < 0.5f ? x : 0.0f;
    }
  const Tensor moments = guarded("vae_encoder", {{"image", &pair}}, result).at("latent_moments");
  expect_shape("vae_encoder", "latent_moments", moments, {2, 2 * C, h, w});  // mean and log-variance per image
  const float sf = static_cast<float>(g.scaling_factor);
  const Tensor image_latent = sample_latent(moments.ptr(), C, hw, gen, sf);
  const Tensor masked_latent = sample_latent(moments.ptr() + 2 * C * hw, C, hw, gen, sf);
  const Tensor mask_latent = latent_mask(mask, h, w);
  result.timings["vae_encode"] += since(t0);
  done("vae_encoder");

  t0 = Clock::now();
  const std::vector<int64_t> timesteps = ddim_.timesteps(s.steps, s.strength);
  std::unique_ptr<Stepper> stepper;
  try {
    stepper = make_stepper(s.sampler, ddim_, scheduler_config_, timesteps);
  } catch (const nlohmann::json::exception& e) {
    throw wrong_type(e);
  }
  Tensor noise({1, C, h, w});
  noise.data = gen.randn(static_cast<size_t>(C * hw));
  Tensor latents;
  if (s.strength >= 1.0) {
    latents = noise;  // init_noise_sigma is 1 for both samplers
  } else {
    stepper->add_noise(image_latent, noise, latents);
  }
  latents.shape = {1, C, h, w};
  // UNet inputs, made once: [latents | mask | masked latents] per row; with CFG the unconditional row first.
  Tensor unet_in({rows, 2 * C + 1, h, w});
  for (int64_t r = 0; r < rows; ++r) {
    float* base = unet_in.ptr() + r * (2 * C + 1) * hw;
    std::copy_n(mask_latent.ptr(), hw, base + C * hw);
    std::copy_n(masked_latent.ptr(), C * hw, base + (C + 1) * hw);
  }
  Tensor tstep({rows});
  Tensor text = cfg ? bank.text_embeds : row(bank.text_embeds, 1);
  Tensor semantic = cfg ? bank.semantic_tokens : row(bank.semantic_tokens, 1);
  Tensor lam({1}, static_cast<float>(s.semantic_scale));
  const Feeds feeds = {{"sample", &unet_in},
                       {"timestep", &tstep},
                       {"text_embeds", &text},
                       {"semantic_tokens", &semantic},
                       {"semantic_scale", &lam}};
  // After a CFG cut-off the UNet runs the conditional row alone (batch 1), as the Python sampler does.
  Tensor cond_in({1, 2 * C + 1, h, w}), tstep1({1});
  std::copy_n(unet_in.ptr() + (rows - 1) * (2 * C + 1) * hw, (2 * C + 1) * hw, cond_in.ptr());
  Tensor text1 = row(bank.text_embeds, 1), semantic1 = row(bank.semantic_tokens, 1);
  const Feeds cond_feeds = {{"sample", &cond_in},
                            {"timestep", &tstep1},
                            {"text_embeds", &text1},
                            {"semantic_tokens", &semantic1},
                            {"semantic_scale", &lam}};
  const auto n_calls = static_cast<int64_t>(timesteps.size());
  const int64_t cfg_steps = s.cfg_cutoff < 0 ? n_calls : static_cast<int64_t>(std::nearbyint(s.cfg_cutoff * n_calls));
  Tensor guided({1, C, h, w});  // CFG's combination of the two rows, written each step
  const float gs = static_cast<float>(s.guidance);
  for (int64_t i = 0; i < n_calls; ++i) {
    const int64_t t = timesteps[i];
    const bool both = cfg && i < cfg_steps;
    Tensor pred;
    if (both || !cfg) {
      for (int64_t r = 0; r < rows; ++r) std::copy_n(latents.ptr(), C * hw, unet_in.ptr() + r * (2 * C + 1) * hw);
      std::fill(tstep.data.begin(), tstep.data.end(), static_cast<float>(t));
      pred = engines_.at("unet")->run(feeds).at("noise_pred");
      expect_shape("unet", "noise_pred", pred, {rows, C, h, w});
    } else {
      std::copy_n(latents.ptr(), C * hw, cond_in.ptr());
      tstep1.data[0] = static_cast<float>(t);
      pred = engines_.at("unet")->run(cond_feeds).at("noise_pred");
      expect_shape("unet", "noise_pred", pred, {1, C, h, w});
    }
    if (both) {
      for (int64_t k = 0; k < C * hw; ++k) {
        const float u = pred.data[k], c = pred.data[C * hw + k];
        guided.data[k] = u + gs * (c - u);
      }
    }
    stepper->step(both ? guided : pred, static_cast<size_t>(i), latents);
  }
  result.timings["denoise"] += since(t0);
  result.timings["denoise_steps"] = static_cast<double>(timesteps.size());
  done("unet");

  t0 = Clock::now();
  Tensor scaled = latents;
  for (auto& v : scaled.data) v /= sf;
  Tensor decoded = guarded("vae_decoder", {{"latents", &scaled}}, result).at("image");
  expect_shape("vae_decoder", "image", decoded, {1, 3, H, W});
  decoded.shape = {3, H, W};
  for (auto& v : decoded.data) v = std::min(std::max((v + 1.0f) / 2.0f, 0.0f), 1.0f);
  result.timings["vae_decode"] += since(t0);
  done("vae_decoder");
  return decoded;
}

void Synthesizer::check_bank(const Bank& bank) {
  // What sample() reads of a bank, whoever built it: two rows (CFG's negative or unconditional row, then the
  // prompt's or reference's), each [L, D], and the values the shape says. A caller's [1, L, D] bank would otherwise
  // be read past its end.
  for (const auto& [name, t] : {std::pair<const char*, const Tensor*>{"text_embeds", &bank.text_embeds},
                                {"semantic_tokens", &bank.semantic_tokens}}) {
    if (t->shape.size() != 3 || t->shape[0] != 2 || t->shape[1] < 1 || t->shape[2] < 1)
      throw InputError("bank", std::string(name) + " of shape [2, L, D] (L, D >= 1)", shape_str(t->shape));
    const size_t n = Tensor::count(t->shape, "bank");
    if (t->data.size() != n)
      throw InputError("bank", std::string(name) + " of shape " + shape_str(t->shape) + " holding " +
                                   std::to_string(n) + " values",
                       std::to_string(t->data.size()) + " values");
  }
  try {  // .at() throughout: a manifest is a file nobody vouched for, a missing key must throw, never read past
    for (const auto& spec : dir_.manifest().at("components").at("unet").at("inputs")) {
      const std::string name = spec.at("name").get<std::string>();
      const Tensor* t = name == "text_embeds" ? &bank.text_embeds : name == "semantic_tokens" ? &bank.semantic_tokens
                                                                                                : nullptr;
      if (!t) continue;
      const int64_t rows = spec.at("shape").at(1).get<int64_t>(), width = spec.at("shape").at(2).get<int64_t>();
      if (t->dim(1) != rows || t->dim(2) != width)  // a bank of another model cannot fit
        throw InputError("bank", name + " of shape [2, " + std::to_string(rows) + ", " + std::to_string(width) + "]",
                         shape_str(t->shape));
    }
  } catch (const nlohmann::json::exception& e) {
    throw EngineDirError("manifest.json: the unet's inputs are malformed (" + std::string(e.what()) + ")");
  }
}

Result Synthesizer::run(const Picture& image, const Tensor& mask, const Bank& bank, const Settings& s) {
  const auto start = Clock::now();
  check_settings(s);
  // The public types' invariants, whoever built them (read_png and read_mask make only ones that hold them).
  check_picture(image, "image");
  mask.check("mask", 2);
  if (mask.dim(0) != image.height || mask.dim(1) != image.width)
    throw InputError("mask", "the size of image (H x W = " + std::to_string(image.height) + " x " +
                                 std::to_string(image.width) + ")",
                     std::to_string(mask.dim(0)) + " x " + std::to_string(mask.dim(1)));
  std::vector<uint8_t> binary(mask.numel());
  bool any = false;
  for (size_t i = 0; i < mask.numel(); ++i) any |= (binary[i] = mask.data[i] > 0.5f);
  if (!any) throw InputError("mask", "a mask with at least one defect pixel (value > 0.5)", "an empty mask");
  check_bank(bank);

  const int64_t mh = geometry_.height, mw = geometry_.width;
  Result result;
  result.notes = load_notes_;
  result.label = mask;
  if (s.roi == "full") {
    result.windows = {Window{0, 0, image.height, image.width}};
  } else {
    const int64_t min_size = s.roi_min_size > 0 ? s.roi_min_size : std::max(mh, mw) / 2;
    result.windows = plan_windows(binary, image.height, image.width, mh, mw, s.roi_padding, min_size, &result.notes);
  }
  std::vector<Patch> patches;
  Tensor label3({1, mask.dim(0), mask.dim(1)});
  label3.data = mask.data;
  for (size_t k = 0; k < result.windows.size(); ++k) {
    const Window& win = result.windows[k];
    const Tensor pixels = resize_image(image.rgb(win), mh, mw);
    Tensor label = crop(label3, win, /*replicate=*/false);
    label.shape = {win.height, win.width};
    const Tensor model_mask = resize_mask(label, mh, mw);
    const Tensor generated = sample(pixels, model_mask, bank, s, window_seed(s.seed, static_cast<int64_t>(k)), result);
    const double sigma = s.blur_sigma >= 0.0 ? s.blur_sigma : feather_sigma(win, mh, mw);
    patches.push_back({win, resize_image(generated, win.height, win.width), blend_mask(label, sigma)});
  }
  result.image = compose(image, patches);
  result.timings["total"] = since(start);
  return result;
}

}  // namespace acsdk
