// consumer ENGINES BANK IMAGE MASK OUT: one image through the installed library, written to OUT.
#include <acsdk/bank.hpp>
#include <acsdk/errors.hpp>
#include <acsdk/picture.hpp>
#include <acsdk/synthesizer.hpp>
#include <acsdk/version.hpp>
#include <cstdio>
#include <exception>

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: consumer ENGINES BANK IMAGE MASK OUT\n");
    return 2;
  }
  try {
    acsdk::Synthesizer synth(argv[1], acsdk::BackendOptions{});
    const acsdk::Bank bank = acsdk::load_bank(argv[2], synth.engine_dir().digest());
    acsdk::Settings settings;
    settings.seed = 3;
    settings.steps = 4;
    settings.strength = 0.5;
    const acsdk::Picture image = acsdk::read_png(argv[3], "image");
    const acsdk::Result r = synth.run(image, acsdk::read_mask(argv[4], "mask"), bank, settings);
    acsdk::write_png(argv[5], r.image, "out");
    std::printf("acsdk %s: wrote %s, %lld x %lld\n", ACSDK_NATIVE_VERSION, argv[5], (long long)r.image.height,
                (long long)r.image.width);
  } catch (const acsdk::InputError& e) {  // errors.hpp: bad input exits 2, as acsdk-native does
    std::fprintf(stderr, "consumer: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "consumer: %s\n", e.what());
    return 1;
  }
  return 0;
}
