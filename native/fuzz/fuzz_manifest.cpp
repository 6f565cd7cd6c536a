// fuzz_manifest: an engine dir whose manifest.json is the input, read as Synthesizer's constructor reads it: the
// EngineDir checks, geometry(), scheduler_config(), then every component's artifact for each backend and precision
// (has_artifact, artifact, output_names, plan_record). The dir holds small stand-ins for the files the real engine
// dirs list (the seeds name them; onnx/unet.onnx is a graph whose weights are external, in onnx/unet.onnx.data, as
// a real-size UNet's are, and onnx/empty.onnx is empty), so artifact() reads past its checks; sha256 checking is on
// for inputs of odd length (the stand-ins never match: IntegrityError) and off for even ones, so both paths run.
#include <cstdint>
#include <string>
#include <vector>

#include "engine_dir.hpp"
#include "errors.hpp"
#include "fuzz_common.hpp"

namespace {

// A protobuf length-delimited field: tag byte, length (< 128), bytes.
std::string field(char tag, const std::string& bytes) { return std::string(1, tag) + char(bytes.size()) + bytes; }

// ModelProto{graph{initializer{data_location: EXTERNAL, external_data{key: "location", value: "unet.onnx.data"}}}}
std::string external_unet() {
  const std::string entry = field('\x0a', "location") + field('\x12', "unet.onnx.data");
  const std::string tensor = field('\x6a', entry) + "\x70\x01";
  return field('\x3a', field('\x2a', tensor));
}

const std::string& engine_dir() {
  static const std::string root = [] {
    const std::string dir = fuzz::scratch() + "/engines";
    for (const char* rel : {"acsdk.json", "onnx/csm_qformer.onnx", "onnx/csm_vision.onnx", "onnx/csm_vision.fp16.onnx",
                            "onnx/text_encoder.onnx", "onnx/text_encoder.fp16.onnx",
                            "onnx/unet.fp16.onnx", "onnx/unet.onnx.data", "onnx/vae_decoder.onnx",
                            "onnx/vae_decoder.fp16.onnx", "onnx/vae_encoder.onnx", "onnx/vae_encoder.fp16.onnx",
                            "openvino/unet.int8.xml", "openvino/unet.int8.bin", "tensorrt/unet.plan",
                            "tensorrt/vae_encoder.plan", "tensorrt/vae_decoder.plan", "tokenizer/tokenizer.json"})
      fuzz::put(dir + "/" + rel, std::string("stand-in for ") + rel);
    fuzz::put(dir + "/onnx/unet.onnx", external_unet());
    fuzz::put(dir + "/onnx/empty.onnx", "");
    fuzz::put(dir + "/scheduler/scheduler_config.json",
              R"({"_class_name": "DDIMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", )"
              R"("beta_start": 0.00085, "num_train_timesteps": 1000, "steps_offset": 1})");
    return dir;
  }();
  return root;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& root = engine_dir();
  fuzz::put(root + "/manifest.json", data, size);
  std::vector<std::string> components{"vae_encoder", "unet", "vae_decoder", "text_encoder"};
  try {
    acsdk::EngineDir dir(root, /*verify=*/size % 2 == 1);
    if (dir.digest().size() != 64) fuzz::broken("digest is not a sha256");
    try {
      const acsdk::Geometry g = dir.geometry();
      if (g.height < 1 || g.width < 1 || g.scale_factor < 1 || g.channels < 1 || g.height % g.scale_factor != 0 ||
          g.width % g.scale_factor != 0 || !(g.scaling_factor > 0.0))
        fuzz::broken("geometry() returned a geometry outside its documented bounds");
    } catch (const acsdk::Error&) {
    }
    try {
      if (!dir.scheduler_config().is_object()) fuzz::broken("scheduler_config() returned a non-object");
    } catch (const acsdk::Error&) {
    }
    int extra = 0;  // a few of the manifest's own component names too
    for (const auto& [name, entry] : dir.manifest()["components"].items())
      if (extra++ < 4) components.push_back(name);
    for (const std::string& name : components) {
      for (const char* format : {"onnx", "openvino", "tensorrt"}) {
        try {
          dir.has_artifact(name, format, "fp32");
        } catch (const acsdk::Error&) {
        }
      }
      for (const char* backend : {"openvino", "tensorrt"})
        for (const char* precision : {"", "fp32", "fp16", "int8"}) {
          try {
            const acsdk::Artifact a = dir.artifact(name, backend, precision);
            if (!a.bytes) fuzz::broken("artifact() returned no bytes");
            acsdk::output_names(name, a);
            acsdk::plan_record(a.record, name);
          } catch (const acsdk::Error&) {
          }
        }
    }
  } catch (const acsdk::Error&) {
  }
  return 0;
}
