// test_core GOLDEN_DIR: the DDIM and DPM-Solver++ ports and torch's generator against vectors Python wrote (fixtures.py make).
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "compare.hpp"
#include "ddim.hpp"
#include "engine.hpp"
#include "errors.hpp"
#include "files.hpp"
#include "safetensors.hpp"
#include "samplers.hpp"
#include "torch_rng.hpp"

namespace {

int failures = 0;

// Whether `got` matches `want` within `tol`, printed; a NaN anywhere fails (compare.hpp).
bool check(const std::string& name, const std::vector<float>& got, const std::vector<float>& want, double tol,
           bool relative = false, bool count = true) {
  const double worst = acsdk_test::max_error(got, want, relative);
  const bool ok = acsdk_test::within(worst, tol);
  failures += count && !ok;
  std::printf("%-40s %zu values, max %s diff %.3g (tolerance %.3g): %s\n", name.c_str(), want.size(),
              relative ? "relative" : "abs", worst, tol, ok ? "ok" : count ? "FAIL" : "not within");
  return ok;
}

// The comparison itself: an output of NaNs (all, or one among good values), an infinity where a finite value is
// expected or a short output must fail at any tolerance; equal values, infinities included, pass at 0.
void check_the_comparison() {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const std::vector<float> want = {0.5f, -1.0f, 2.0f};
  struct Case {
    const char* name;
    std::vector<float> got;
    bool relative, passes;
  };
  const Case cases[] = {
      {"all NaN", {nan, nan, nan}, false, false},       {"all NaN, relative", {nan, nan, nan}, true, false},
      {"one NaN last", {0.5f, -1.0f, nan}, false, false}, {"one NaN first", {nan, -1.0f, 2.0f}, true, false},
      {"an infinity", {0.5f, inf, 2.0f}, false, false}, {"one value short", {0.5f, -1.0f}, false, false},
      {"equal", {0.5f, -1.0f, 2.0f}, false, true},
  };
  for (const Case& c : cases) {
    std::printf("  (the comparison on %s output, which must %s:)\n", c.name, c.passes ? "pass" : "fail");
    const bool ok = check(std::string("compare: ") + c.name, c.got, want, 0.0, c.relative, false) == c.passes;
    failures += !ok;
    std::printf("%-40s %s\n", (std::string("compare: ") + c.name + (c.passes ? " passes" : " fails")).c_str(),
                ok ? "ok" : "FAIL");
  }
  const std::vector<float> infs = {inf, -inf};
  const bool same_inf = check("compare: equal infinities", infs, infs, 0.0, false, false);
  failures += !same_inf;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: test_core FIXTURES_DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  check_the_comparison();
  auto golden = acsdk::read_safetensors(dir + "/golden_core.safetensors", "golden");

  for (int k = 0; k < 3; ++k) {
    const std::string p = "ddim/" + std::to_string(k) + "/";
    const acsdk::DDIM ddim(nlohmann::json::parse(acsdk::read_file(dir + "/ddim_" + std::to_string(k) + ".json", "config")));
    // Exactly diffusers': torch's float32 linspace (torch_linspace), squared in float32 for scaled_linear, the
    // cumprod accumulated in double as torch's is. (Before, a double linspace: 307 of SD's 1000 betas 1-3 ulp off.)
    check(p + "betas (exact)", ddim.betas(), golden.at(p + "betas").data, 0.0);
    check(p + "alphas_cumprod (exact)", ddim.alphas_cumprod(), golden.at(p + "alphas_cumprod").data, 0.0);
    // Every step count 1..200 at strengths 1 and 0.7 against diffusers (length-prefixed runs in one vector).
    const auto& sweep = golden.at(p + "sweep").data;
    std::vector<float> got;
    for (int64_t steps = 1; steps <= 200; ++steps)
      for (double strength : {1.0, 0.7}) {
        const auto ts = ddim.diffusers_timesteps(steps, strength);
        got.push_back(static_cast<float>(ts.size()));
        got.insert(got.end(), ts.begin(), ts.end());
      }
    check(p + "timesteps, steps 1..200 x 2 strengths", got, sweep, 0.0);
    // What a run visits (the start-point rule): every step count 1..200 at strengths 1, 0.7, 0.3 against Python.
    const auto& visited = golden.at(p + "visited").data;
    std::vector<float> runs;
    for (int64_t steps = 1; steps <= 200; ++steps)
      for (double strength : {1.0, 0.7, 0.3}) {
        if (static_cast<int64_t>(steps * strength) < 1) continue;
        const auto ts = ddim.timesteps(steps, strength);
        runs.push_back(static_cast<float>(ts.size()));
        runs.insert(runs.end(), ts.begin(), ts.end());
      }
    check(p + "visited timesteps, steps 1..200 x 3 strengths", runs, visited, 0.0);
    for (auto [steps, strength] : {std::pair<int, double>{50, 0.7}, {10, 1.0}, {7, 0.5}}) {
      const auto ts = ddim.diffusers_timesteps(steps, strength);
      const std::string key = p + "timesteps_" + std::to_string(steps) + "_" + std::to_string(int(strength * 100));
      check(key, std::vector<float>(ts.begin(), ts.end()), golden.at(key).data, 0.0);
    }
    const int64_t t = static_cast<int64_t>(golden.at(p + "t").data[0]);
    acsdk::Tensor noisy;
    ddim.add_noise(golden.at(p + "x0"), golden.at(p + "noise"), t, noisy);
    check(p + "add_noise", noisy.data, golden.at(p + "add_noise").data, 1e-5);
    acsdk::Tensor latents = golden.at(p + "x0");
    ddim.step(golden.at(p + "model_output"), t, t - 100, latents);  // diffusers' DDIM at 10 steps goes back 100
    check(p + "step", latents.data, golden.at(p + "step").data, 1e-5);

    // DPM-Solver++ over a run's timesteps (7 and 21 calls): the noised start and every step after it, each on a
    // given model output; the last step to DDIM's end point (sigma 0 only under set_alpha_to_one).
    const auto config = nlohmann::json::parse(acsdk::read_file(dir + "/ddim_" + std::to_string(k) + ".json", "config"));
    for (int steps : {10, 30}) {
      const std::string q = "dpmpp/" + std::to_string(k) + "/" + std::to_string(steps) + "/";
      const auto& want_ts = golden.at(q + "timesteps").data;
      const auto ts = ddim.timesteps(steps, 0.7);
      check(q + "timesteps", std::vector<float>(ts.begin(), ts.end()), want_ts, 0.0);
      auto dpm = acsdk::make_stepper("dpmpp-2m", ddim, config, ts);
      const acsdk::Tensor& outputs = golden.at(q + "model_outputs");
      const size_t n = golden.at(p + "x0").numel();
      std::vector<float> trajectory;
      dpm->add_noise(golden.at(p + "x0"), golden.at(p + "noise"), latents);
      trajectory.insert(trajectory.end(), latents.data.begin(), latents.data.end());
      for (size_t i = 0; i < ts.size(); ++i) {
        acsdk::Tensor out(latents.shape);
        std::copy_n(outputs.ptr() + i * n, n, out.ptr());
        dpm->step(out, i, latents);
        trajectory.insert(trajectory.end(), latents.data.begin(), latents.data.end());
      }
      check(q + "add_noise and " + std::to_string(ts.size()) + " steps", trajectory, golden.at(q + "trajectory").data,
            1e-5);
    }
  }

  for (const auto& [name, want] : golden) {
    if (name.rfind("randn/", 0) != 0) continue;
    acsdk::TorchGenerator gen(std::stoull(name.substr(6)));
    std::vector<float> got;
    for (size_t n : {1024, 36, 4 * 16 * 16}) {
      const auto draw = gen.randn(n);
      got.insert(got.end(), draw.begin(), draw.end());
    }
    check(name + " (torch.randn)", got, want.data, 1e-5);
  }

  // torch.linspace(start, end, n, dtype=torch.float32), value for value: fixtures.py's LINSPACE_ENDS and
  // LINSPACE_COUNTS (the ends as Python computes them: beta ** 0.5 is pow(beta, 0.5)); n = 1 gives start.
  const std::pair<double, double> ends[] = {{0.0001, 0.02},
                                            {std::pow(0.00085, 0.5), std::pow(0.012, 0.5)},
                                            {-1.0, 3.0},
                                            {0.3, 0.1},
                                            {2.5, 2.5}};
  for (size_t i = 0; i < std::size(ends); ++i)
    for (int64_t n : {1, 2, 3, 7, 16, 17, 50, 999, 1000, 4096}) {
      const std::string key = "linspace/" + std::to_string(i) + "/" + std::to_string(n);
      check(key + " (exact)", acsdk::torch_linspace(ends[i].first, ends[i].second, n), golden.at(key).data, 0.0);
    }

  // DDIM::add_noise and step (public ddim.hpp) check their tensors and timesteps: an InputError naming the argument,
  // never a read past a buffer or std::out_of_range.
  {
    const acsdk::DDIM ddim(nlohmann::json::parse(acsdk::read_file(dir + "/ddim_0.json", "config")));
    const acsdk::Tensor& x0 = golden.at("ddim/0/x0");
    acsdk::Tensor short_tensor = x0, out;
    short_tensor.data.resize(x0.numel() - 1);
    acsdk::Tensor half({1, static_cast<int64_t>(x0.numel() / 2)});
    acsdk::Tensor latents = x0;
    const std::vector<std::pair<std::string, std::function<void()>>> cases = {
        {"noise", [&] { ddim.add_noise(x0, half, 500, out); }},
        {"noise", [&] { ddim.add_noise(x0, short_tensor, 500, out); }},
        {"x0", [&] { ddim.add_noise(short_tensor, x0, 500, out); }},
        {"timestep", [&] { ddim.add_noise(x0, x0, 1000, out); }},
        {"timestep", [&] { ddim.add_noise(x0, x0, -1, out); }},
        {"model_output", [&] { ddim.step(half, 500, 480, latents); }},
        {"model_output", [&] { ddim.step(short_tensor, 500, 480, latents); }},
        {"latents", [&] { ddim.step(x0, 500, 480, short_tensor); }},
        {"timestep", [&] { ddim.step(x0, 1000, 980, latents); }},
        {"prev", [&] { ddim.step(x0, 500, 1000, latents); }},
        {"prev", [&] { ddim.step(x0, 500, -2, latents); }},
    };
    for (const auto& [argument, call] : cases) {
      std::string got = "accepted";
      bool ok = false;
      try {
        call();
      } catch (const acsdk::InputError& e) {
        got = e.what();
        ok = got.rfind(argument + ": ", 0) == 0;
      } catch (const std::exception& e) {
        got = std::string("not an InputError: ") + e.what();
      }
      failures += !ok;
      std::printf("%-40s %s: %s\n", ("DDIM refuses a bad " + argument).c_str(), ok ? "ok" : "FAIL", got.c_str());
    }
    acsdk::Tensor flat({1, 4, 64});  // x0's 256 values in another shape: the sampler's own layout, accepted
    ddim.add_noise(x0, flat, 500, out);
    ddim.step(flat, 500, 480, latents);
  }

  // safetensors round trip and sha256 of a known string.
  acsdk::Tensor t({2, 3});
  for (size_t i = 0; i < t.numel(); ++i) t.data[i] = 0.5f * i - 1.0f;
  acsdk::write_safetensors(dir + "/roundtrip.safetensors", {{"t", t}});
  check("safetensors round trip", acsdk::read_safetensors(dir + "/roundtrip.safetensors", "x").at("t").data, t.data, 0.0);
  const bool sha_ok = acsdk::sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
  failures += !sha_ok;
  std::printf("%-40s %s\n", "sha256(\"abc\")", sha_ok ? "ok" : "FAIL");

  // Atomic writes leave the mode a plain open() would (umask applied; a replaced file keeps its own), no temporary.
  const std::string modes = dir + "/modes";
  ::mkdir(modes.c_str(), 0777);
  auto mode_of = [](const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 ? static_cast<int>(st.st_mode & 07777) : -1;
  };
  for (mode_t mask : {022, 002, 077}) {
    const mode_t old = ::umask(mask);
    const std::string file = modes + "/new_" + std::to_string(mask) + ".png";
    ::unlink(file.c_str());
    acsdk::write_file_atomic(file, "x", "--out");
    ::umask(old);
    const bool ok = mode_of(file) == static_cast<int>(0666 & ~mask);
    failures += !ok;
    std::printf("%-40s %o (umask %03o): %s\n", "atomic write mode", mode_of(file), mask, ok ? "ok" : "FAIL");
  }
  const std::string kept = modes + "/kept.png";
  acsdk::write_file_atomic(kept, "old", "--out");
  ::chmod(kept.c_str(), 0640);
  acsdk::write_file_atomic(kept, "new", "--out");
  const bool kept_ok = mode_of(kept) == 0640 && acsdk::read_file(kept, "x") == "new";
  failures += !kept_ok;
  std::printf("%-40s %s\n", "replaced file keeps its mode", kept_ok ? "ok" : "FAIL");
  {  // staged but never committed (a later output failed): neither the target nor a temporary is left
    const std::string never = modes + "/never.png";
    ::unlink(never.c_str());
    acsdk::StagedFile staged(never, "x", "--out");
  }
  const bool never_ok = mode_of(modes + "/never.png") == -1;
  failures += !never_ok;
  std::printf("%-40s %s\n", "uncommitted staged file leaves nothing", never_ok ? "ok" : "FAIL");
  int leftovers = 0;
  if (DIR* d = ::opendir(modes.c_str())) {
    while (const dirent* e = ::readdir(d)) leftovers += std::string(e->d_name).find(".tmp-") != std::string::npos;
    ::closedir(d);
  }
  failures += leftovers != 0;
  std::printf("%-40s %d: %s\n", "temporaries left", leftovers, leftovers == 0 ? "ok" : "FAIL");

  // TensorRT's --device: the accepted spellings, and text that is not a device refused rather than read as GPU 0.
  for (const auto& [text, want] : std::vector<std::pair<std::string, int>>{
           {"GPU", 0}, {"cuda", 0}, {"GPU.1", 1}, {"cuda:2", 2}, {"3", 3}, {"gpu", -1}, {"GPU.x", -1},
           {"cuda:", -1}, {"CPU", -1}, {"", -1}, {"1x", -1}, {"-1", -1}, {"99999", -1}}) {
    int got = -1;
    try {
      got = acsdk::cuda_device_index(text);
    } catch (const acsdk::InputError& e) {
      got = std::string(e.what()).rfind("device: expected", 0) == 0 ? -1 : -2;
    }
    failures += got != want;
    std::printf("%-40s %d: %s\n", ("cuda_device_index('" + text + "')").c_str(), got, got == want ? "ok" : "FAIL");
  }
  return failures == 0 ? 0 : 1;
}
