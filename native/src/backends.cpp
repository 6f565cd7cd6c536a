// open_engine: the one place a backend is chosen; TensorRT only in builds where CMake found it.
#include "engine.hpp"
#include "errors.hpp"

namespace acsdk {

std::unique_ptr<Engine> open_openvino(const std::string& name, const Artifact& artifact, const BackendOptions& options);
#ifdef ACSDK_HAVE_TENSORRT
std::unique_ptr<Engine> open_tensorrt(const std::string& name, const Artifact& artifact, const BackendOptions& options);
#endif

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
