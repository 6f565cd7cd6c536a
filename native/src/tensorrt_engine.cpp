// TensorRT 10.x / 11.x backend (built only where CMake finds TensorRT): a plan checked against this machine before it
// is deserialised, as runtime/tensorrt_engine.py does; float32 IO through device buffers kept between calls.
#include <NvInfer.h>
#include <cuda_runtime_api.h>

#include <cstdlib>
#include <memory>
#include <sstream>
#include <type_traits>

#include "engine.hpp"
#include "errors.hpp"
#include "files.hpp"

namespace acsdk {

namespace {

void cuda_check(cudaError_t status, const std::string& what) {
  if (status != cudaSuccess) throw BackendError("device", what + ": " + cudaGetErrorString(status));
}

// Keeps TensorRT's errors for the exception that reports them (the CLI prints one line).
class Logger : public nvinfer1::ILogger {
 public:
  void log(Severity severity, const char* message) noexcept override {
    if (severity <= Severity::kERROR) last_error = message;
  }
  std::string last_error;
};

// major.minor.patch of the TensorRT library loaded at run time.
std::string library_version() {
  const int v = getInferLibVersion();
  const int major = v >= 100000 ? v / 10000 : v / 1000;  // TensorRT 10 encodes major * 10000
  const int rest = v >= 100000 ? v % 10000 : v % 1000;
  return std::to_string(major) + "." + std::to_string(rest / 100) + "." + std::to_string(rest % 100);
}

// The most dimensions a TensorRT shape holds (Dims::MAX_DIMS, 8): the size of Dims' array, whatever header declares it.
constexpr int32_t kMaxDims = static_cast<int32_t>(std::extent<decltype(nvinfer1::Dims::d)>::value);

struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void reserve(size_t n) {
    if (n <= bytes) return;
    if (ptr) cudaFree(ptr);
    ptr = nullptr;
    bytes = 0;
    cuda_check(cudaMalloc(&ptr, n), "cudaMalloc");
    bytes = n;
  }
  ~DeviceBuffer() {
    if (ptr) cudaFree(ptr);
  }
};

class TensorRTEngine : public Engine {
 public:
  TensorRTEngine(const std::string& name, const Artifact& artifact, const BackendOptions& options)
      : name_(name), device_(cuda_device_index(options.device)), precision_(artifact.precision),
        outputs_(output_names(name, artifact)), path_(artifact.path), plan_(artifact.bytes) {
    int count = 0;
    cuda_check(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
    if (device_ >= count)
      throw InputError("device", "a CUDA device index below " + std::to_string(count), "'" + options.device + "'");
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    check_compatible(artifact.record);
    if (!plan_) throw EngineDirError(name + ": the artifact holds no plan bytes (EngineDir::artifact reads them)");
    load();
    cuda_check(cudaStreamCreate(&stream_), "cudaStreamCreate");
  }

  ~TensorRTEngine() override {
    if (stream_) cudaStreamDestroy(stream_);
  }

  std::map<std::string, Tensor> run(const Feeds& inputs) override {
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    if (!context_) load();  // released (--low-memory): deserialised again from the plan's checked bytes
    std::vector<std::pair<std::string, Tensor>> outputs;
    for (int i = 0; i < engine_->getNbIOTensors(); ++i) {
      const char* io = engine_->getIOTensorName(i);
      if (engine_->getTensorDataType(io) != nvinfer1::DataType::kFLOAT)
        throw BackendError("engines", name_ + ": tensor '" + io + "' is not float32; rebuild the plan with export.build");
      if (engine_->getTensorIOMode(io) != nvinfer1::TensorIOMode::kINPUT) continue;
      auto it = inputs.find(io);
      if (it == inputs.end() || !it->second)
        throw BackendError("engines", name_ + ": the plan's input '" + io + "' was not fed");
      const Tensor& t = *it->second;
      // A caller's Tensor (Engine::run is public): its data the shape's count, its rank one TensorRT's Dims holds.
      const std::string argument = name_ + " input '" + io + "'";
      t.check(argument);
      if (t.shape.size() > static_cast<size_t>(kMaxDims))
        throw InputError(argument, "a tensor of rank <= " + std::to_string(kMaxDims) + " (TensorRT's Dims::MAX_DIMS)",
                         "shape " + shape_str(t.shape));
      nvinfer1::Dims dims{};
      dims.nbDims = static_cast<int32_t>(t.shape.size());
      for (size_t d = 0; d < t.shape.size(); ++d) dims.d[d] = t.shape[d];
      if (!context_->setInputShape(io, dims))
        throw BackendError("engines", name_ + ": TensorRT refused shape " + shape_str(t.shape) + " for '" + io +
                                          "': outside the plan's profile (rebuild with a larger --max-batch)");
      DeviceBuffer& buf = buffers_[io];
      buf.reserve(t.numel() * sizeof(float));
      cuda_check(cudaMemcpyAsync(buf.ptr, t.ptr(), t.numel() * sizeof(float), cudaMemcpyHostToDevice, stream_),
                 "cudaMemcpyAsync");
      bind(io, buf.ptr);
    }
    for (int i = 0; i < engine_->getNbIOTensors(); ++i) {
      const char* io = engine_->getIOTensorName(i);
      if (engine_->getTensorIOMode(io) != nvinfer1::TensorIOMode::kOUTPUT) continue;
      Tensor t(output_shape(io));
      DeviceBuffer& buf = buffers_[io];
      buf.reserve(t.numel() * sizeof(float));
      bind(io, buf.ptr);
      outputs.emplace_back(io, std::move(t));
    }
    if (!context_->enqueueV3(stream_))
      throw BackendError("engines", name_ + ": TensorRT execution failed (" + logger_.last_error + ")");
    std::map<std::string, Tensor> result;
    for (auto& [io, t] : outputs) {
      cuda_check(cudaMemcpyAsync(t.ptr(), buffers_[io].ptr, t.numel() * sizeof(float), cudaMemcpyDeviceToHost, stream_),
                 "cudaMemcpyAsync");
      result.emplace(io, std::move(t));
    }
    cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    for (const auto& spec : outputs_)  // what the caller reads by the manifest's names: never a map::at
      if (!result.count(spec)) {
        std::vector<std::string> produced;
        for (const auto& [n, t] : result) produced.push_back(n);
        throw missing_output(name_, spec, produced);
      }
    return result;
  }

  void bind(const char* io, void* ptr) {
    if (!context_->setTensorAddress(io, ptr))
      throw BackendError("engines", name_ + ": TensorRT refused the buffer of '" + std::string(io) + "' (" +
                                        logger_.last_error + ")");
  }

  std::string describe() const override {
    return "tensorrt " + library_version() + " cuda:" + std::to_string(device_) + " " + precision_;
  }

  // --low-memory: the execution context, the deserialised engine (the weights on the GPU) and the IO buffers freed;
  // the next run deserialises the plan again from the bytes kept (a mapping of the checked file: no copy held).
  void release() override {
    buffers_.clear();
    context_.reset();
    engine_.reset();
  }

 private:
  void load() {
    if (!runtime_) runtime_.reset(nvinfer1::createInferRuntime(logger_));
    if (runtime_) engine_.reset(runtime_->deserializeCudaEngine(plan_->data(), plan_->size()));
    if (engine_) context_.reset(engine_->createExecutionContext());
    if (!context_) {
      engine_.reset();
      throw BackendError("engines", name_ + ": TensorRT could not load " + path_ + " (" + logger_.last_error +
                                        "); rebuild the plan on this machine");
    }
  }

  // What TensorRT says an output's shape is for the inputs set: every extent known (nbDims -1 is its error value;
  // a -1 extent an unresolved dynamic dimension) and the count addressable, a BackendError naming it otherwise.
  std::vector<int64_t> output_shape(const char* io) const {
    const nvinfer1::Dims dims = context_->getTensorShape(io);
    auto refuse = [&](const std::string& why) {
      return BackendError("engines", name_ + ": TensorRT gives output '" + io + "' " + why + " for these inputs" +
                                         (logger_.last_error.empty() ? "" : " (" + logger_.last_error + ")") +
                                         "; rebuild the plan with export.build");
    };
    if (dims.nbDims < 0 || dims.nbDims > kMaxDims) throw refuse("no shape (nbDims " + std::to_string(dims.nbDims) + ")");
    std::vector<int64_t> shape(dims.d, dims.d + dims.nbDims);
    for (const int64_t d : shape)
      if (d < 0) throw refuse("the unresolved shape " + shape_str(shape));
    try {
      Tensor::count(shape, io);
    } catch (const InputError&) {
      throw refuse("the shape " + shape_str(shape) + ", past what this machine can address");
    }
    return shape;
  }

  // A plan runs only on the TensorRT version and GPU architecture that built it, and only verified plans run.
  void check_compatible(const nlohmann::json& record) const {
    cudaDeviceProp prop{};
    cuda_check(cudaGetDeviceProperties(&prop, device_), "cudaGetDeviceProperties");
    const std::string cc = std::to_string(prop.major) + "." + std::to_string(prop.minor);
    const PlanRecord plan = plan_record(record, name_);  // each field typed: EngineDirError naming a wrong one
    const std::string& built = plan.tensorrt_version;
    const std::string here = library_version();
    std::vector<std::string> problems;
    if (built.rfind(here, 0) != 0 || (built.size() > here.size() && built[here.size()] != '.'))
      problems.push_back("built with TensorRT " + built + " but this machine has TensorRT " + here);
    if (plan.compute_capability != cc)
      problems.push_back("built for compute capability " + plan.compute_capability + " but this GPU is " + cc);
    if (!plan.verified) problems.push_back("the plan was not verified against its ONNX graph at build time");
    if (problems.empty()) return;
    std::string all;
    for (const auto& p : problems) all += (all.empty() ? "" : "; ") + p;
    throw BackendError("engines", name_ + ": TensorRT plan is incompatible with this machine: " + all +
                                      ". To fix: rebuild the plans on this machine with `python -m export.build`");
  }

  std::string name_;
  int device_ = 0;
  std::string precision_;
  std::vector<std::string> outputs_;  // the manifest's output names
  std::string path_;
  std::shared_ptr<const FileBytes> plan_;  // the plan's checked bytes, kept to deserialise again after release()
  Logger logger_;
  std::unique_ptr<nvinfer1::IRuntime> runtime_;
  std::unique_ptr<nvinfer1::ICudaEngine> engine_;
  std::unique_ptr<nvinfer1::IExecutionContext> context_;
  cudaStream_t stream_ = nullptr;
  std::map<std::string, DeviceBuffer> buffers_;
};

}  // namespace

std::unique_ptr<Engine> open_tensorrt(const std::string& name, const Artifact& artifact, const BackendOptions& options) {
  return std::make_unique<TensorRTEngine>(name, artifact, options);
}

}  // namespace acsdk
