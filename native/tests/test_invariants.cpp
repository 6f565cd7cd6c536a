// test_invariants FIXTURES_DIR: Synthesizer::run holds what a caller builds by hand (Bank, Tensor, Picture: public
// structs of installed headers) to their invariants before any model runs: an InputError naming the argument, never
// a read past a buffer. Before, a [1, L, D] bank (a caller's "one prompt") was read past its end as the CFG row.
// Loads OpenVINO (the tiny fixture engines), so it is not in the ASan job (native/README.md, "Sanitizers").
#include <cstdio>
#include <functional>
#include <string>

#include "bank.hpp"
#include "engine.hpp"
#include "errors.hpp"
#include "picture.hpp"
#include "synthesizer.hpp"

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
  failures += !ok;
  std::printf("%-60s %s\n", what.c_str(), ok ? "ok" : "FAIL");
}

// `f` throws acsdk::InputError whose message starts with `argument` + ": ".
void refused(const std::string& what, const std::string& argument, const std::function<void()>& f) {
  std::string why = "accepted";
  bool ok = false;
  try {
    f();
  } catch (const acsdk::InputError& e) {
    why = e.what();
    ok = why.rfind(argument + ": ", 0) == 0;
  } catch (const std::exception& e) {
    why = std::string("not an InputError: ") + e.what();
  }
  expect(ok, what);
  std::printf("  %s\n", why.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: test_invariants FIXTURES_DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  try {
    acsdk::Synthesizer synth(dir + "/engines/tiny", acsdk::BackendOptions{});
    const acsdk::Bank bank = acsdk::load_bank(dir + "/banks/tiny_plain", synth.engine_dir().digest());
    const acsdk::Picture image = acsdk::read_png(dir + "/inputs/rgb64.png", "image");
    const acsdk::Tensor mask = acsdk::read_mask(dir + "/inputs/rgb64_mask.png", "mask");
    acsdk::Settings settings;
    settings.seed = 1;
    settings.steps = 2;
    settings.strength = 0.5;

    // The control: the arguments as the readers make them run.
    const acsdk::Result r = synth.run(image, mask, bank, settings);
    expect(r.image.height == image.height && r.image.width == image.width, "unspoiled arguments run");

    auto with_bank = [&](const std::string& what, const std::function<void(acsdk::Bank&)>& spoil) {
      acsdk::Bank b = bank;
      spoil(b);
      refused("bank: " + what, "bank", [&] { synth.run(image, mask, b, settings); });
    };
    const int64_t L = bank.text_embeds.shape.at(1), D = bank.text_embeds.shape.at(2);
    with_bank("text_embeds [1, L, D] (one row)", [&](acsdk::Bank& b) {
      b.text_embeds.shape = {1, L, D};
      b.text_embeds.data.resize(static_cast<size_t>(L * D));
    });
    with_bank("semantic_tokens [1, T, D] (one row)", [&](acsdk::Bank& b) {
      b.semantic_tokens.shape[0] = 1;
      b.semantic_tokens.data.resize(b.semantic_tokens.data.size() / 2);
    });
    with_bank("text_embeds [3, L, D]", [&](acsdk::Bank& b) {
      b.text_embeds.shape[0] = 3;
      b.text_embeds.data.resize(static_cast<size_t>(3 * L * D));
    });
    with_bank("text_embeds data shorter than its shape", [](acsdk::Bank& b) { b.text_embeds.data.resize(7); });
    with_bank("semantic_tokens data longer than its shape", [](acsdk::Bank& b) { b.semantic_tokens.data.push_back(0); });
    with_bank("text_embeds of rank 2", [&](acsdk::Bank& b) { b.text_embeds.shape = {2 * L, D}; });
    with_bank("semantic_tokens with an overflowing shape",
              [](acsdk::Bank& b) { b.semantic_tokens.shape = {2, int64_t{1} << 40, int64_t{1} << 40}; });
    with_bank("semantic_tokens with a negative dimension",
              [](acsdk::Bank& b) { b.semantic_tokens.shape = {2, -1, 5}; });
    with_bank("a default-constructed bank", [](acsdk::Bank& b) { b = acsdk::Bank{}; });

    auto with_mask = [&](const std::string& what, const std::function<void(acsdk::Tensor&)>& spoil) {
      acsdk::Tensor m = mask;
      spoil(m);
      refused("mask: " + what, "mask", [&] { synth.run(image, m, bank, settings); });
    };
    with_mask("data shorter than its shape", [](acsdk::Tensor& m) { m.data.resize(m.data.size() / 2); });
    with_mask("rank 1", [](acsdk::Tensor& m) { m.shape = {m.shape[0] * m.shape[1]}; });
    with_mask("rank 3", [](acsdk::Tensor& m) { m.shape = {1, m.shape[0], m.shape[1]}; });
    with_mask("another size", [](acsdk::Tensor& m) { m = acsdk::Tensor({32, 32}, 1.0f); });

    auto with_image = [&](const std::string& what, const std::function<void(acsdk::Picture&)>& spoil) {
      acsdk::Picture p = image;
      spoil(p);
      refused("image: " + what, "image", [&] { synth.run(p, mask, bank, settings); });
    };
    with_image("pixels shorter than height x width x channels", [](acsdk::Picture& p) { p.pixels.resize(10); });
    with_image("channels 4 over RGB pixels", [](acsdk::Picture& p) { p.channels = 4; });
    with_image("channels 0", [](acsdk::Picture& p) { p.channels = 0; });
    with_image("bit_depth 40", [](acsdk::Picture& p) { p.bit_depth = 40; });
    with_image("value_bits past bit_depth", [](acsdk::Picture& p) { p.value_bits = 9; });
    with_image("a value past 8 bits", [](acsdk::Picture& p) { p.pixels[0] = 256; });
    with_image("negative width", [](acsdk::Picture& p) { p.width = -p.width; });

    // Engine::run (public engine.hpp): a fed Tensor holding other than its shape's count of values, or none at
    // all, is refused before OpenVINO is handed its pointer and shape.
    const auto engine = acsdk::open_engine("vae_encoder", synth.engine_dir().artifact("vae_encoder", "openvino"),
                                           acsdk::BackendOptions{});
    acsdk::Tensor pair({2, 3, 64, 64}, 0.5f);
    engine->run({{"image", &pair}});
    expect(true, "engine: a well-formed input runs");
    acsdk::Tensor short_pair = pair;
    short_pair.data.resize(short_pair.data.size() / 2);
    refused("engine: input data shorter than its shape", "vae_encoder input 'image'",
            [&] { engine->run({{"image", &short_pair}}); });
    acsdk::Tensor long_pair = pair;
    long_pair.data.push_back(0.0f);
    refused("engine: input data longer than its shape", "vae_encoder input 'image'",
            [&] { engine->run({{"image", &long_pair}}); });
    refused("engine: input fed as a null pointer", "vae_encoder input 'image'",
            [&] { engine->run({{"image", nullptr}}); });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "test_invariants: %s\n", e.what());
    return 1;
  }
  return failures == 0 ? 0 : 1;
}
