// test_tensorrt: src/tensorrt_engine.cpp run against a scripted implementation of the fake TensorRT and CUDA
// declarations (fake_tensorrt/): host memory for device memory, an engine with one input "x" and one output "y"
// that copies x into y, and counters of what is alive. Built where TensorRT is not (the compile check's build).
// Checks what a GPU is not needed for: a caller's Tensor checked before TensorRT sees it (data the shape's count,
// rank at most Dims::MAX_DIMS), an output shape TensorRT leaves unknown (nbDims -1, a -1 extent) refused rather than
// trusted, and release() (--low-memory) freeing the context, the engine and the device buffers, deserialising again.
#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine.hpp"
#include "check.hpp"
#include "errors.hpp"
#include "files.hpp"

namespace acsdk {
std::unique_ptr<Engine> open_tensorrt(const std::string& name, const Artifact& artifact, const BackendOptions& options);
}

namespace fake {

enum class OutputShape { kAsInput, kNoShape, kUnresolved, kTooManyDims };
OutputShape output_shape = OutputShape::kAsInput;
int live_runtimes = 0, live_engines = 0, live_contexts = 0, live_buffers = 0, deserialised = 0;
int shapes_set = 0;              // setInputShape calls
nvinfer1::Dims input_dims{};     // the last shape set
std::map<std::string, void*> addresses;

class Context : public nvinfer1::IExecutionContext {
 public:
  Context() { ++live_contexts; }
  ~Context() noexcept override { --live_contexts; }
};
class Engine : public nvinfer1::ICudaEngine {
 public:
  Engine() { ++live_engines; }
  ~Engine() noexcept override { --live_engines; }
};
class Runtime : public nvinfer1::IRuntime {
 public:
  Runtime() { ++live_runtimes; }
  ~Runtime() noexcept override { --live_runtimes; }
};
struct Stream {};
Stream the_stream;

int64_t count(const nvinfer1::Dims& d) {
  int64_t n = 1;
  for (int i = 0; i < d.nbDims; ++i) n *= d.d[i];
  return n;
}

}  // namespace fake

namespace nvinfer1 {
bool IExecutionContext::setInputShape(const char*, const Dims& dims) noexcept {
  ++fake::shapes_set;
  fake::input_dims = dims;
  return dims.nbDims >= 0 && dims.nbDims <= MAX_DIMS;
}
Dims IExecutionContext::getTensorShape(const char* name) const noexcept {
  Dims d = fake::input_dims;
  if (std::string(name) != "y") return d;
  switch (fake::output_shape) {
    case fake::OutputShape::kAsInput:
      break;
    case fake::OutputShape::kNoShape:  // what TensorRT returns for an error
      d.nbDims = -1;
      break;
    case fake::OutputShape::kUnresolved:  // a dynamic dimension the inputs set did not resolve
      d.d[d.nbDims - 1] = -1;
      break;
    case fake::OutputShape::kTooManyDims:
      d.nbDims = MAX_DIMS + 1;
      break;
  }
  return d;
}
bool IExecutionContext::setTensorAddress(const char* name, void* data) noexcept {
  fake::addresses[name] = data;
  return true;
}
bool IExecutionContext::enqueueV3(cudaStream_t) noexcept {
  std::memcpy(fake::addresses["y"], fake::addresses["x"], fake::count(fake::input_dims) * sizeof(float));
  return true;
}
int32_t ICudaEngine::getNbIOTensors() const noexcept { return 2; }
const char* ICudaEngine::getIOTensorName(int32_t index) const noexcept { return index == 0 ? "x" : "y"; }
TensorIOMode ICudaEngine::getTensorIOMode(const char* name) const noexcept {
  return std::string(name) == "x" ? TensorIOMode::kINPUT : TensorIOMode::kOUTPUT;
}
DataType ICudaEngine::getTensorDataType(const char*) const noexcept { return DataType::kFLOAT; }
IExecutionContext* ICudaEngine::createExecutionContext() noexcept { return new fake::Context(); }
ICudaEngine* IRuntime::deserializeCudaEngine(const void*, std::size_t) noexcept {
  ++fake::deserialised;
  return new fake::Engine();
}
IRuntime* createInferRuntime(ILogger&) noexcept { return new fake::Runtime(); }
}  // namespace nvinfer1

extern "C" int32_t getInferLibVersion() noexcept { return 100100; }  // 10.1.0

const char* cudaGetErrorString(cudaError_t) { return "fake CUDA error"; }
cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int) { return cudaSuccess; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int) {
  prop->major = 8;
  prop->minor = 7;
  return cudaSuccess;
}
cudaError_t cudaMalloc(void** ptr, size_t size) {
  *ptr = std::malloc(size ? size : 1);
  ++fake::live_buffers;
  return cudaSuccess;
}
cudaError_t cudaFree(void* ptr) {
  std::free(ptr);
  --fake::live_buffers;
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind, cudaStream_t) {
  std::memcpy(dst, src, count);
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  *stream = reinterpret_cast<cudaStream_t>(&fake::the_stream);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

namespace {

using acsdk_test::expect;
using acsdk_test::failures;
using acsdk_test::refused;

}  // namespace

int main() {
  acsdk::Artifact plan;
  plan.format = "tensorrt";
  plan.precision = "fp32";
  plan.path = "engines/tensorrt/unet.plan";
  plan.bytes = std::make_shared<const acsdk::FileBytes>(std::string("a plan's bytes"));
  plan.outputs = nlohmann::json::array({{{"name", "y"}}});
  plan.record = {{"tensorrt_version", "10.1.0"}, {"compute_capability", "8.7"}, {"verification", {{"passed", true}}}};
  acsdk::BackendOptions options;
  options.backend = "tensorrt";
  options.device = "0";
  try {
    auto engine = acsdk::open_tensorrt("unet", plan, options);
    acsdk::Tensor x({1, 2, 3});
    for (size_t i = 0; i < x.numel(); ++i) x.data[i] = 0.5f * static_cast<float>(i);
    auto out = engine->run({{"x", &x}});
    expect(out.count("y") && out["y"].shape == x.shape && out["y"].data == x.data, "a run: y = x through the fakes");

    // A caller's tensors (Engine::run is public), checked before TensorRT or a copy reads them.
    acsdk::Tensor short_data = x;
    short_data.data.resize(4);
    refused<acsdk::InputError>("input data shorter than its shape", "unet input 'x': expected a tensor of shape",
                               [&] { engine->run({{"x", &short_data}}); });
    const int shapes_before = fake::shapes_set;
    acsdk::Tensor rank9(std::vector<int64_t>(9, 1));
    refused<acsdk::InputError>("input of rank 9 (past Dims::MAX_DIMS)", "a tensor of rank <= 8",
                               [&] { engine->run({{"x", &rank9}}); });
    expect(fake::shapes_set == shapes_before, "  ... refused before a Dims was filled past its end");
    refused<acsdk::BackendError>("an input fed as a null pointer", "input 'x' was not fed",
                                 [&] { engine->run({{"x", nullptr}}); });

    // What TensorRT says of an output's shape is checked, not trusted.
    fake::output_shape = fake::OutputShape::kNoShape;
    refused<acsdk::BackendError>("output nbDims -1 (TensorRT's error value)", "output 'y' no shape (nbDims -1)",
                                 [&] { engine->run({{"x", &x}}); });
    fake::output_shape = fake::OutputShape::kUnresolved;
    refused<acsdk::BackendError>("output extent -1 (unresolved)", "output 'y' the unresolved shape [1, 2, -1]",
                                 [&] { engine->run({{"x", &x}}); });
    fake::output_shape = fake::OutputShape::kTooManyDims;
    refused<acsdk::BackendError>("output nbDims 9", "output 'y' no shape (nbDims 9)", [&] { engine->run({{"x", &x}}); });
    fake::output_shape = fake::OutputShape::kAsInput;

    // --low-memory: release() frees what the engine holds on the device; the next run deserialises again.
    engine->run({{"x", &x}});
    const int before = fake::deserialised;
    expect(fake::live_contexts == 1 && fake::live_engines == 1 && fake::live_buffers == 2,
           "before release: one context, one engine, two device buffers");
    engine->release();
    expect(fake::live_contexts == 0 && fake::live_engines == 0 && fake::live_buffers == 0,
           "release() frees the context, the engine and the device buffers",
           std::to_string(fake::live_contexts) + " contexts, " + std::to_string(fake::live_engines) + " engines, " +
               std::to_string(fake::live_buffers) + " buffers alive");
    out = engine->run({{"x", &x}});
    expect(fake::deserialised == before + 1 && out["y"].data == x.data, "the run after release deserialises again");
    engine.reset();
    expect(fake::live_runtimes == 0 && fake::live_contexts == 0 && fake::live_engines == 0 && fake::live_buffers == 0,
           "nothing left once the engine is gone");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "test_tensorrt: %s\n", e.what());
    return 1;
  }
  return failures == 0 ? 0 : 1;
}
