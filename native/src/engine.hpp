// One compiled component (VAE encoder, SGA UNet, VAE decoder) on a backend: named float tensors in and out.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine_dir.hpp"
#include "tensor.hpp"

namespace acsdk {

using Feeds = std::map<std::string, const Tensor*>;

class Engine {
 public:
  virtual ~Engine() = default;
  // Runs on the shapes of `inputs` (compiled once per set of shapes); outputs as float32.
  virtual std::map<std::string, Tensor> run(const Feeds& inputs) = 0;
  virtual std::string describe() const = 0;  // backend, device, precision: for logs and --json
  // Frees what running compiled (weights laid out for the device's kernels, activation buffers); the next run
  // compiles again (OpenVINO: from its model cache). For --low-memory, between the stages that use an engine.
  virtual void release() {}
};

// What the library reports outside results and errors: warnings (an INT8 UNet opened as fp32 because its accuracy
// gate does not cover this CPU), written nowhere but where the callback writes them.
enum class LogLevel { kWarning };
using LogCallback = std::function<void(LogLevel level, const std::string& message)>;
// The default: "acsdk-native: warning: <message>" on stderr.
void log_to_stderr(LogLevel level, const std::string& message);

struct BackendOptions {
  std::string backend = "openvino";  // "openvino" or "tensorrt" (where this build has it)
  std::string device = "CPU";        // OpenVINO device (CPU, GPU, NPU); TensorRT: the CUDA device index
  std::string cache_dir;             // OpenVINO's compiled-model cache ("" = none)
  bool low_memory = false;           // one compiled input shape per engine; each engine released after its stage
  // Where warnings go, called on the thread that opens or runs (a Synthesizer's constructor, Engine::run); an
  // empty function is log_to_stderr. [](acsdk::LogLevel, const std::string&) {} silences them; they are also in
  // Result::notes where they concern a run.
  LogCallback log = log_to_stderr;
};
// `options.log` with `message`, or stderr when it is empty; an exception the callback throws propagates.
void log_message(const BackendOptions& options, LogLevel level, const std::string& message);

// Opens `artifact` on the chosen backend. BackendError when the backend or device is not here.
std::unique_ptr<Engine> open_engine(const std::string& name, const Artifact& artifact, const BackendOptions& options);

// TensorRT's --device: "GPU"/"cuda" (0), "GPU.N", "cuda:N" or "N"; InputError naming `device` otherwise.
int cuda_device_index(const std::string& device);

// The backends this build was compiled with ("openvino", and "tensorrt" where CMake found TensorRT).
std::vector<std::string> compiled_backends();

}  // namespace acsdk
