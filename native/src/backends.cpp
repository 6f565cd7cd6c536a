// open_engine: the one place a backend is chosen; TensorRT only in builds where CMake found it.
#include <algorithm>
#include <cctype>
#include <cstdio>

#include "engine.hpp"
#include "errors.hpp"

namespace acsdk {

std::unique_ptr<Engine> open_openvino(const std::string& name, const Artifact& artifact, const BackendOptions& options);
#ifdef ACSDK_HAVE_TENSORRT
std::unique_ptr<Engine> open_tensorrt(const std::string& name, const Artifact& artifact, const BackendOptions& options);
#endif

// "GPU" or "cuda" (device 0), "GPU.N", "cuda:N" or "N" -> the CUDA device index; anything else is refused, never
// read as device 0.
int cuda_device_index(const std::string& device) {
  std::string digits = device;
  for (const char* prefix : {"GPU.", "cuda:"})
    if (device.rfind(prefix, 0) == 0) digits = device.substr(std::char_traits<char>::length(prefix));
  if (device == "GPU" || device == "cuda") return 0;
  const bool numeric = !digits.empty() && digits.size() <= 4 &&
                       std::all_of(digits.begin(), digits.end(), [](unsigned char c) { return std::isdigit(c); });
  if (!numeric) throw InputError("device", "GPU, GPU.N, cuda:N or a CUDA device index N", "'" + device + "'");
  return std::stoi(digits);
}

void log_to_stderr(LogLevel, const std::string& message) {
  std::fprintf(stderr, "acsdk-native: warning: %s\n", message.c_str());
}

void log_message(const BackendOptions& options, LogLevel level, const std::string& message) {
  if (options.log) {
    options.log(level, message);
  } else {
    log_to_stderr(level, message);
  }
}

std::vector<std::string> compiled_backends() {
#ifdef ACSDK_HAVE_TENSORRT
  return {"openvino", "tensorrt"};
#else
  return {"openvino"};
#endif
}

std::unique_ptr<Engine> open_engine(const std::string& name, const Artifact& artifact, const BackendOptions& options) {
  if (options.backend == "openvino") return open_openvino(name, artifact, options);
#ifdef ACSDK_HAVE_TENSORRT
  if (options.backend == "tensorrt") return open_tensorrt(name, artifact, options);
#endif
  if (options.backend == "tensorrt")
    throw InputError("backend", "openvino (this build found no TensorRT at configure time; reconfigure where "
                                "TensorRT 10 is installed)", "'tensorrt'");
  throw InputError("backend", "openvino or tensorrt", "'" + options.backend + "'");
}

}  // namespace acsdk
