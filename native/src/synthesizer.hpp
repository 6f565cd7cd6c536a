// The target side of AnomalyControl on engines: windows -> VAE encode -> DDIM or DPM-Solver++ with CFG on the SGA UNet ->
// VAE decode -> soft paste, as acsdk.Synthesizer.run does it with a bank's text embeddings and semantic tokens.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bank.hpp"
#include "ddim.hpp"
#include "engine.hpp"
#include "engine_dir.hpp"
#include "picture.hpp"

namespace acsdk {

struct Settings {
  uint64_t seed = 0;
  int64_t steps = 50;
  double strength = 0.7;
  double guidance = 7.0;
  double semantic_scale = 1.0;
  std::string roi = "auto";  // "auto": context windows around the mask; "full": the whole image
  int64_t roi_padding = 32;
  int64_t roi_min_size = -1;  // -1: half the model's size
  double blur_sigma = -1.0;   // -1: 5 model pixels of the window
  std::string sampler = "ddim";  // or "dpmpp-2m" (samplers.hpp)
  double cfg_cutoff = -1.0;      // -1: guidance on every call; else the fraction of calls that run both rows
};

// Checks the settings as Synthesizer.run_batch does; InputError naming the setting otherwise.
void check_settings(const Settings& s);

struct Result {
  Picture image;                 // the input's size, layout and depth
  Tensor label;                  // [H, W] {0, 1}: the input mask
  std::vector<Window> windows;   // where it was generated
  std::vector<std::string> notes;
  std::map<std::string, double> timings;  // seconds: vae_encode, denoise, vae_decode, total
};

class Synthesizer {
 public:
  // Opens the engine dir's components on `options`' backend; what it has to warn about (an INT8 UNet opened as
  // fp32 on a CPU its gate does not cover) goes to options.log (stderr by default) and into every Result's notes.
  Synthesizer(const std::string& engine_dir, const BackendOptions& options, bool verify = true);
  // Checks every argument before any model runs (InputError naming it): `settings` as check_settings, `image` as
  // check_picture, `mask` [H, W] of the image's size holding H x W values with at least one above 0.5, the bank's
  // text_embeds and semantic_tokens [2, L, D] (the manifest's L and D) holding their shapes' counts of values.
  Result run(const Picture& image, const Tensor& mask, const Bank& bank, const Settings& settings);

  EngineDir& engine_dir() { return dir_; }
  std::vector<std::string> describe() const;

 private:
  void check_bank(const Bank& bank);
  // One window at model size: [3, h, w] image and [h, w] mask in -> generated [3, h, w] in [0, 1].
  Tensor sample(const Tensor& image, const Tensor& mask, const Bank& bank, const Settings& s, uint64_t seed,
                Result& result);
  std::map<std::string, Tensor> guarded(const std::string& name, const Feeds& feeds, Result& result);
  void done(const std::string& name);  // --low-memory: release `name` (and its fp32 variant) when its stage ends
  void expect_shape(const std::string& component, const std::string& output, const Tensor& t,
                    const std::vector<int64_t>& want) const;

  EngineDir dir_;
  Geometry geometry_;
  nlohmann::json scheduler_config_;
  DDIM ddim_;  // the schedule: visited timesteps, and DDIM's step
  std::map<std::string, std::unique_ptr<Engine>> engines_;  // vae_encoder, unet, vae_decoder (+ _fp32 variants)
  std::vector<std::string> load_notes_;  // e.g. an INT8 UNet whose gate does not cover this CPU, run as fp32
  bool low_memory_ = false;
};

}  // namespace acsdk
