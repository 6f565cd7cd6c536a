// test_library FIXTURES_DIR: the C++ API as native/README.md shows it, on a parity case: one Synthesizer, two
// images through it, each equal to the Python runtime's output; a repeated image gives the same bytes.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "bank.hpp"
#include "files.hpp"
#include "picture.hpp"
#include "synthesizer.hpp"

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
  failures += !ok;
  std::printf("%-60s %s\n", what.c_str(), ok ? "ok" : "FAIL");
}

// Max |a - b| over two pictures of one layout, in the pictures' own units (-1 when the layouts differ).
int max_diff(const acsdk::Picture& a, const acsdk::Picture& b) {
  if (a.height != b.height || a.width != b.width || a.channels != b.channels || a.bit_depth != b.bit_depth) return -1;
  int worst = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i) worst = std::max(worst, std::abs(int(a.pixels[i]) - int(b.pixels[i])));
  return worst;
}

// What `f` writes to stderr (file descriptor 2), f's exceptions passed on once stderr is back.
std::string stderr_of(const std::function<void()>& f) {
  std::fflush(stderr);
  char name[] = "/tmp/acsdk-test-stderr-XXXXXX";
  const int file = ::mkstemp(name);
  const int saved = ::dup(2);
  ::dup2(file, 2);
  auto restore = [&] {
    std::fflush(stderr);
    ::dup2(saved, 2);
    ::close(saved);
  };
  try {
    f();
  } catch (...) {
    restore();
    ::close(file);
    ::unlink(name);
    throw;
  }
  restore();
  std::string text;
  char buf[4096];
  ::lseek(file, 0, SEEK_SET);
  for (ssize_t n; (n = ::read(file, buf, sizeof buf)) > 0;) text.append(buf, static_cast<size_t>(n));
  ::close(file);
  ::unlink(name);
  return text;
}

// The log callback: the warning a constructor has (an INT8 UNet whose gate does not cover this CPU, opened as fp32)
// goes to BackendOptions::log and nowhere else; left at its default, to stderr as before.
void log_callback(const std::string& fixtures) {
  const std::string dir = fixtures + "/engines/demo_int8_other_cpu";
  std::vector<std::pair<acsdk::LogLevel, std::string>> logged;
  acsdk::BackendOptions options;
  options.log = [&](acsdk::LogLevel level, const std::string& message) { logged.emplace_back(level, message); };
  const std::string quiet = stderr_of([&] { acsdk::Synthesizer synth(dir, options); });
  const bool got = logged.size() == 1 && logged[0].first == acsdk::LogLevel::kWarning &&
                   logged[0].second.rfind("unet: fp32 instead of INT8, because ", 0) == 0;
  expect(got, "log callback: the INT8 gate's warning reaches BackendOptions::log");
  if (!logged.empty()) std::printf("  %s\n", logged[0].second.c_str());
  expect(quiet.find("warning") == std::string::npos, "log callback: nothing on stderr" +
                                                         (quiet.empty() ? std::string() : " (got: " + quiet + ")"));
  const std::string loud = stderr_of([&] { acsdk::Synthesizer synth(dir, acsdk::BackendOptions{}); });
  expect(loud.find("acsdk-native: warning: unet: fp32 instead of INT8") != std::string::npos,
         "log callback: left at its default, the warning on stderr");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: test_library FIXTURES_DIR\n");
    return 2;
  }
  const auto cases = nlohmann::json::parse(acsdk::read_file(std::string(argv[1]) + "/cases.json", "cases"));
  const auto& first = cases.at("tiny_rgb_full");
  const auto& second = cases.at("tiny_rgba_strength1");  // same engines and bank, another image and settings
  acsdk::Synthesizer synth(first["args"]["engines"].get<std::string>(), acsdk::BackendOptions{});
  const acsdk::Bank bank = acsdk::load_bank(first["args"]["bank"].get<std::string>(), synth.engine_dir().digest());

  auto settings_of = [](const nlohmann::json& args) {
    acsdk::Settings s;
    s.seed = std::stoull(args["seed"].get<std::string>());
    s.steps = std::stoll(args["steps"].get<std::string>());
    s.strength = std::stod(args["strength"].get<std::string>());
    s.guidance = std::stod(args["guidance"].get<std::string>());
    if (args.contains("roi")) s.roi = args["roi"].get<std::string>();
    if (args.contains("blur_sigma")) s.blur_sigma = std::stod(args["blur_sigma"].get<std::string>());
    return s;
  };
  std::vector<acsdk::Picture> outputs;
  for (const auto* c : {&first, &second, &first}) {
    const auto& args = (*c)["args"];
    const acsdk::Picture image = acsdk::read_png(args["image"].get<std::string>(), "image");
    const acsdk::Tensor mask = acsdk::read_mask(args["mask"].get<std::string>(), "mask");
    const acsdk::Result r = synth.run(image, mask, bank, settings_of(args));
    const acsdk::Picture expected = acsdk::read_png((*c)["expected"].get<std::string>(), "expected");
    const int diff = max_diff(r.image, expected);
    expect(diff >= 0 && diff <= 1, args["image"].get<std::string>() + ": equals Python within 1 grey level (" +
                                       std::to_string(diff) + ")");
    expect(r.windows.size() == (*c)["windows"].size() && r.label.numel() == mask.numel(), "  windows and label");
    outputs.push_back(r.image);
  }
  expect(max_diff(outputs[0], outputs[2]) == 0, "the same image again through the same Synthesizer: same bytes");
  log_callback(argv[1]);
  return failures == 0 ? 0 : 1;
}
