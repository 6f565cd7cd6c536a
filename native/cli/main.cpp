// acsdk-native: run an engine dir on one image without Python. `acsdk-native synth --help` lists the flags.
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

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

constexpr int64_t kMaxSteps = 100000;   // far past any schedule (DDIM caps the calls at the timesteps it has)
constexpr int64_t kMaxRepeat = 100000;

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

// Every numeric flag: the whole text parsed (strtoll / strtoull / strtod), in [lo, hi]; otherwise an InputError
// naming the flag, the range and the text that came (a value out of range is never narrowed or wrapped).
int64_t integer(const Args& a, const std::string& name, int64_t fallback, int64_t lo, int64_t hi) {
  auto it = a.values.find(name);
  if (it == a.values.end()) return fallback;
  const char* text = it->second.c_str();
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text, &end, 10);
  const bool digits = end != text && !*end;  // an integer, maybe past long long (ERANGE)
  const bool parsed = digits && errno == 0;
  if (!parsed || v < lo || v > hi)  // an integer out of range as it came; other text quoted
    throw acsdk::InputError(name, "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]",
                            digits ? it->second : "'" + it->second + "'");
  return v;
}

std::string shown(double v) {
  std::ostringstream out;
  out << v;
  return out.str();
}

// lo_open: (lo, hi] instead of [lo, hi].
double real(const Args& a, const std::string& name, double fallback, double lo, double hi, bool lo_open = false) {
  auto it = a.values.find(name);
  if (it == a.values.end()) return fallback;
  const char* text = it->second.c_str();
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(text, &end);
  const bool parsed = !errno && end != text && !*end && std::isfinite(v);
  if (!parsed || (lo_open ? v <= lo : v < lo) || v > hi)
    throw acsdk::InputError(name, std::string("a number in ") + (lo_open ? "(" : "[") + shown(lo) + ", " + shown(hi) + "]",
                            parsed ? it->second : "'" + it->second + "'");
  return v;
}

// --seed: torch's generator takes 0 .. 2^64 - 1, as `acsdk synth --seed`.
uint64_t seed_of(const Args& a) {
  auto it = a.values.find("seed");
  if (it == a.values.end()) return 0;
  const std::string& text = it->second;
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  const bool digits = !text.empty() && std::isdigit(static_cast<unsigned char>(text[0]));  // strtoull takes "-1"
  if (!digits || errno || *end)
    throw acsdk::InputError("seed", "an integer in [0, " + std::to_string(std::numeric_limits<uint64_t>::max()) + "]",
                            digits && !*end ? text : "'" + text + "'");
  return v;
}

std::string default_mask_out(const std::string& out) {
  const std::filesystem::path p(out);
  return (p.parent_path() / (p.stem().string() + "_mask.png")).string();
}

int synth(const Args& a) {
  acsdk::Settings s;
  s.seed = seed_of(a);
  s.steps = integer(a, "steps", s.steps, 1, kMaxSteps);
  s.strength = real(a, "strength", s.strength, 0.0, 1.0, /*lo_open=*/true);
  s.guidance = real(a, "guidance", s.guidance, 0.0, 1e3);
  s.semantic_scale = real(a, "semantic-scale", s.semantic_scale, -1e3, 1e3);
  s.roi = a.values.count("roi") ? a.values.at("roi") : s.roi;
  // No image side is longer than kMaxPixels: a padding or minimum size past it changes nothing (and 2 x padding
  // cannot overflow).
  s.roi_padding = integer(a, "roi-padding", s.roi_padding, 0, acsdk::kMaxPixels);
  s.roi_min_size = integer(a, "roi-min-size", s.roi_min_size, 1, acsdk::kMaxPixels);
  s.blur_sigma = real(a, "blur-sigma", s.blur_sigma, 0.0, 1e4);
  s.sampler = a.values.count("sampler") ? a.values.at("sampler") : s.sampler;
  s.cfg_cutoff = real(a, "cfg-cutoff", s.cfg_cutoff, 0.0, 1.0);
  const int64_t repeat = integer(a, "repeat", 1, 1, kMaxRepeat);
  const int bit_depth = static_cast<int>(integer(a, "bit-depth", 0, 1, 16));  // the file's depth is checked on reading
  acsdk::check_settings(s);  // before anything is opened: a bad flag costs nothing
  namespace fs = std::filesystem;
  const std::string out = a.values.at("out");
  const std::string mask_out = a.values.count("mask-out") ? a.values.at("mask-out") : default_mask_out(out);
  for (const char* input : {"image", "mask"}) {  // the result never replaces an input
    std::error_code ec;
    for (const char* output : {"out", "mask-out"}) {
      const std::string& target = output == std::string("out") ? out : mask_out;
      if (fs::equivalent(a.values.at(input), target, ec))
        throw acsdk::InputError(output, std::string("a path other than --") + input, "'" + target + "'");
    }
  }
  // Both outputs writable before any work: not a directory, in a writable directory, not another user's file in a
  // sticky one (what the commit could not replace). The commit renames both or neither all the same.
  acsdk::check_output_path(out, "out");
  acsdk::check_output_path(mask_out, "mask-out");

  std::error_code ec1, ec2;
  if (fs::weakly_canonical(mask_out, ec1) == fs::weakly_canonical(out, ec2) && !ec1 && !ec2)
    throw acsdk::InputError("mask-out", "a path other than --out", "'" + mask_out + "'");

  acsdk::Picture image = acsdk::read_png(a.values.at("image"), "image");
  if (bit_depth) acsdk::declare_bit_depth(image, bit_depth, "image");
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

  nlohmann::json summary = {{"out", out},     {"mask_out", mask_out}, {"seed", s.seed},
                            {"timings", result.timings}, {"notes", result.notes}, {"engines", synth.describe()}};
  summary["peak_rss_mib"] = {{"load", load_peak}, {"run", run_peak}};  // engines opened + bank; the synthesis
  if (repeat > 1) summary["runs"] = runs;
  for (const auto& w : result.windows)
    summary["windows"].push_back({{"top", w.top}, {"left", w.left}, {"height", w.height}, {"width", w.width}});
  // Everything that can fail happens before the first rename: the report is rendered (paths that are not UTF-8
  // are replaced, not thrown on) and both files are staged in full; then both are renamed into place, or neither
  // (commit_all puts back the first when the second cannot be placed).
  const std::string report =
      a.flags.count("json")
          ? summary.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"
          : "wrote " + out + " and " + mask_out + " (" + std::to_string(result.windows.size()) + " window(s), " +
                std::to_string(result.timings.at("total")) + " s)\n";
  acsdk::StagedFile image_file(out, acsdk::encode_png(result.image, out, "out"), "out");
  acsdk::StagedFile label_file(mask_out, acsdk::encode_png(acsdk::mask_picture(result.label), mask_out, "mask-out"),
                               "mask-out");
  acsdk::commit_all({&image_file, &label_file});
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
