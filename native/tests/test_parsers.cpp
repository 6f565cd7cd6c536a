// test_parsers FIXTURES_DIR: every parser of a file nobody vouched for, fed malformed files, throws a typed error
// (no OpenVINO is loaded, so this runs under AddressSanitizer too: CI builds it with -DACSDK_SANITIZE=...).
#include <cstdio>
#include <functional>
#include <string>

#include "bank.hpp"
#include "engine_dir.hpp"
#include "errors.hpp"
#include "picture.hpp"
#include "safetensors.hpp"

namespace {

int failures = 0;

template <typename E>
void refused(const std::string& what, const std::function<void()>& parse) {
  std::string got = "nothing thrown";
  bool ok = false;
  try {
    parse();
  } catch (const E& e) {
    ok = true;
    got = e.what();
  } catch (const std::exception& e) {
    got = std::string("another error: ") + e.what();
  }
  failures += !ok;
  std::printf("%-36s %s: %s\n", what.c_str(), ok ? "ok" : "FAIL", got.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: test_parsers FIXTURES_DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  const std::string tiny_digest = acsdk::EngineDir(dir + "/engines/tiny").digest();
  refused<acsdk::InputError>("safetensors, negative dimension", [&] {
    acsdk::read_safetensors(dir + "/banks/bad_negative_dim/bank.safetensors", "bank");
  });
  refused<acsdk::InputError>("safetensors, shape past the file", [&] {
    acsdk::read_safetensors(dir + "/banks/bad_huge_shape/bank.safetensors", "bank");
  });
  refused<acsdk::InputError>("safetensors, header only", [&] {
    acsdk::parse_safetensors(std::string("\x10\0\0\0\0\0\0\0{\"a\":", 14), "x", "bank");
  });
  refused<acsdk::InputError>("bank, rank-2 tokens", [&] { acsdk::load_bank(dir + "/banks/bad_rank2", tiny_digest); });
  refused<acsdk::EngineDirError>("manifest without the UNet's inputs", [&] {
    acsdk::EngineDir engines(dir + "/engines/bad_manifest");
    engines.artifact("unet", "openvino");
  });
  refused<acsdk::InputError>("truncated PNG", [&] { acsdk::read_png(dir + "/inputs/truncated.png", "image"); });
  refused<acsdk::InputError>("truncated PNG as a mask", [&] { acsdk::read_mask(dir + "/inputs/truncated.png", "mask"); });
  return failures == 0 ? 0 : 1;
}
