// acsdk-native: run an engine dir on one image without Python. `acsdk-native synth --help` lists the flags.
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>

#include "bank.hpp"
#include "cpu.hpp"
#include "errors.hpp"
#include "files.hpp"
#include "picture.hpp"
#include "synthesizer.hpp"
#include "version.hpp"

namespace {

const char* kUsage = R"(usage: acsdk-native synth --engines DIR --bank DIR --image IN.png --mask MASK.png --out OUT.png
                          [--mask-out PATH] [--seed N] [--steps N] [--strength F] [--guidance F]
                          [--semantic-scale F] [--roi auto|full] [--roi-padding N] [--roi-min-size N]
                          [--blur-sigma F] [--backend openvino|tensorrt] [--device CPU|GPU|...]
                          [--bit-depth N] [--sampler ddim|dpmpp-2m] [--cfg-cutoff F] [--no-verify] [--json]
                          [--repeat N] [--low-memory]
       acsdk-native --version

Paints the defect type prepared in --bank (`acsdk prepare`) into --image inside --mask with the engine dir's
VAE and SGA UNet, as `acsdk synth` does; a seed gives the same noise as the Python runtime. Writes --out (the
input's size, layout and depth) and the label (default: OUT_mask.png). Defaults: seed 0, steps 50, strength
0.7, guidance 7, semantic scale 1, roi auto with padding 32, sampler ddim (or dpmpp-2m, DPM-Solver++ 2M) starting
where DDIM-50 starts at the strength (as the Python runtime), guidance on every call, backend openvino on device
CPU. --repeat N runs the same synthesis N times in this process (for benchmarks: --json then lists each run's
timings). --low-memory holds one engine's compiled weights at a time (each released when its stage ends and
compiled again, from OpenVINO's model cache, when next needed): a lower peak for a little compile time per stage.
)";

struct Args {
  std::map<std::string, std::string> values;
  std::map<std::string, bool> flags;
};

const std::map<std::string, bool> kOptions = {  // name -> takes a value
    {"engines", true},   {"bank", true},       {"image", true},   {"mask", true},       {"out", true},
    {"mask-out", true},  {"seed", true},       {"steps", true},   {"strength", true},   {"guidance", true},
    {"semantic-scale", true}, {"roi", true},   {"roi-padding", true}, {"roi-min-size", true},
    {"blur-sigma", true}, {"backend", true},   {"device", true},  {"no-verify", false}, {"json", false},
    {"repeat", true},    {"bit-depth", true},  {"sampler", true}, {"cfg-cutoff", true},
    {"low-memory", false}};

Args parse(int argc, char** argv, int first) {
  Args a;
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0 || !kOptions.count(arg.substr(2)))
      throw acsdk::InputError("arguments", "a flag of `acsdk-native synth --help`", "'" + arg + "'");
    const std::string name = arg.substr(2);
    if (!kOptions.at(name)) {
      a.flags[name] = true;
    } else {
      if (i + 1 >= argc) throw acsdk::InputError(name, "a value after --" + name, "nothing");
      a.values[name] = argv[++i];
    }
  }
  for (const char* required : {"engines", "bank", "image", "mask", "out"})
    if (!a.values.count(required)) throw acsdk::InputError(required, "--" + std::string(required) + " PATH", "nothing");
  return a;
}

// The value of --name parsed as T (strtoll / strtod: the whole text, in range, finite), or `fallback` when absent.
template <typename T>
T number(const Args& a, const std::string& name, T fallback) {
  auto it = a.values.find(name);
  if (it == a.values.end()) return fallback;
  const char* text = it->second.c_str();
  char* end = nullptr;
  errno = 0;
  const T v = std::is_integral_v<T> ? static_cast<T>(std::strtoll(text, &end, 10)) : static_cast<T>(std::strtod(text, &end));
  if (errno || end == text || *end || !std::isfinite(static_cast<double>(v)))
    throw acsdk::InputError(name, std::is_integral_v<T> ? "an integer" : "a finite number", "'" + it->second + "'");
  return v;
}

int64_t to_int(const Args& a, const std::string& name, int64_t fallback) { return number<int64_t>(a, name, fallback); }
double to_real(const Args& a, const std::string& name, double fallback) { return number<double>(a, name, fallback); }

std::string default_mask_out(const std::string& out) {
  const std::filesystem::path p(out);
  return (p.parent_path() / (p.stem().string() + "_mask.png")).string();
}

int synth(const Args& a) {
  acsdk::Settings s;
  const int64_t seed = to_int(a, "seed", 0);
  if (seed < 0) throw acsdk::InputError("seed", "an integer >= 0", std::to_string(seed));
  s.seed = static_cast<uint64_t>(seed);
  s.steps = to_int(a, "steps", s.steps);
  s.strength = to_real(a, "strength", s.strength);
  s.guidance = to_real(a, "guidance", s.guidance);
  s.semantic_scale = to_real(a, "semantic-scale", s.semantic_scale);
  s.roi = a.values.count("roi") ? a.values.at("roi") : s.roi;
  s.roi_padding = to_int(a, "roi-padding", s.roi_padding);
  s.roi_min_size = to_int(a, "roi-min-size", s.roi_min_size);
  if (a.values.count("roi-min-size") && s.roi_min_size < 1)
    throw acsdk::InputError("roi-min-size", "an integer >= 1", std::to_string(s.roi_min_size));
  s.blur_sigma = to_real(a, "blur-sigma", s.blur_sigma);
  if (a.values.count("blur-sigma") && s.blur_sigma < 0)
    throw acsdk::InputError("blur-sigma", "a number >= 0", a.values.at("blur-sigma"));
  s.sampler = a.values.count("sampler") ? a.values.at("sampler") : s.sampler;
  s.cfg_cutoff = to_real(a, "cfg-cutoff", s.cfg_cutoff);
  if (a.values.count("cfg-cutoff") && !(s.cfg_cutoff >= 0.0 && s.cfg_cutoff <= 1.0))
    throw acsdk::InputError("cfg-cutoff", "a number in [0, 1]", a.values.at("cfg-cutoff"));
  const int64_t repeat = to_int(a, "repeat", 1);
  if (repeat < 1) throw acsdk::InputError("repeat", "an integer >= 1", std::to_string(repeat));
  acsdk::check_settings(s);  // before anything is opened: a bad flag costs nothing
  namespace fs = std::filesystem;
  for (const char* input : {"image", "mask"}) {  // the result never replaces an input
    std::error_code ec;
    for (const char* output : {"out", "mask-out"}) {
      const std::string target = output == std::string("out") ? a.values.at("out")
                                 : a.values.count("mask-out") ? a.values.at("mask-out")
                                                              : default_mask_out(a.values.at("out"));
      if (fs::equivalent(a.values.at(input), target, ec))
        throw acsdk::InputError(output, std::string("a path other than --") + input, "'" + target + "'");
    }
  }

  const std::string mask_target = a.values.count("mask-out") ? a.values.at("mask-out") : default_mask_out(a.values.at("out"));
  std::error_code ec1, ec2;
  if (fs::weakly_canonical(mask_target, ec1) == fs::weakly_canonical(a.values.at("out"), ec2) && !ec1 && !ec2)
    throw acsdk::InputError("mask-out", "a path other than --out", "'" + mask_target + "'");

  acsdk::Picture image = acsdk::read_png(a.values.at("image"), "image");
  if (a.values.count("bit-depth")) acsdk::declare_bit_depth(image, static_cast<int>(to_int(a, "bit-depth", 0)), "image");
  const acsdk::Tensor mask = acsdk::read_mask(a.values.at("mask"), "mask");
  acsdk::BackendOptions options;
  options.backend = a.values.count("backend") ? a.values.at("backend") : "openvino";
  options.device = a.values.count("device") ? a.values.at("device") : "CPU";
  options.low_memory = a.flags.count("low-memory") > 0;
  acsdk::reset_peak_rss();
  acsdk::Synthesizer synth(a.values.at("engines"), options, !a.flags.count("no-verify"));
  const acsdk::Bank bank = acsdk::load_bank(a.values.at("bank"), synth.engine_dir().digest());
  const double load_peak = acsdk::peak_rss_mib();
  acsdk::reset_peak_rss();
  nlohmann::json runs = nlohmann::json::array();
  acsdk::Result result;
  for (int64_t i = 0; i < repeat; ++i) {
    result = synth.run(image, mask, bank, s);
    runs.push_back(result.timings);
  }
  const double run_peak = acsdk::peak_rss_mib();

  const std::string out = a.values.at("out");
  const std::string mask_out = a.values.count("mask-out") ? a.values.at("mask-out") : default_mask_out(out);
  nlohmann::json summary = {{"out", out},     {"mask_out", mask_out}, {"seed", s.seed},
                            {"timings", result.timings}, {"notes", result.notes}, {"engines", synth.describe()}};
  summary["peak_rss_mib"] = {{"load", load_peak}, {"run", run_peak}};  // engines opened + bank; the synthesis
  if (repeat > 1) summary["runs"] = runs;
  for (const auto& w : result.windows)
    summary["windows"].push_back({{"top", w.top}, {"left", w.left}, {"height", w.height}, {"width", w.width}});
  // Everything that can fail happens before the first rename: the report is rendered (paths that are not UTF-8
  // are replaced, not thrown on) and both files are staged in full; then both are renamed into place.
  const std::string report =
      a.flags.count("json")
          ? summary.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"
          : "wrote " + out + " and " + mask_out + " (" + std::to_string(result.windows.size()) + " window(s), " +
                std::to_string(result.timings.at("total")) + " s)\n";
  acsdk::StagedFile image_file(out, acsdk::encode_png(result.image, out, "out"), "out");
  acsdk::StagedFile label_file(mask_out, acsdk::encode_png(acsdk::mask_picture(result.label), mask_out, "mask-out"),
                               "mask-out");
  image_file.commit();
  label_file.commit();
  std::cout << report;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string command = argc > 1 ? argv[1] : "";
  if (command == "--version") {
    std::cout << "acsdk-native " << ACSDK_NATIVE_VERSION << "\n";
    return 0;
  }
  if (command == "-h" || command == "--help" || (command == "synth" && argc > 2 && std::string(argv[2]) == "--help")) {
    std::cout << kUsage;
    return 0;
  }
  if (command != "synth") {
    std::cerr << kUsage << "acsdk-native: error: command: expected synth or --version, got '" << command << "'\n";
    return 2;
  }
  try {
    return synth(parse(argc, argv, 2));
  } catch (const acsdk::InputError& e) {
    std::cerr << "acsdk-native synth: error: " << e.what() << "\n";
    return 2;
  } catch (const acsdk::Error& e) {
    std::cerr << "acsdk-native synth: error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "acsdk-native synth: failed: " << e.what() << "\n";
    return 1;
  }
}
