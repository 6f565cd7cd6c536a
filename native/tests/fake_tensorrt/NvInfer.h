// Declarations of the TensorRT 10 API subset src/tensorrt_engine.cpp uses, as TensorRT's headers declare them:
// where TensorRT is not installed, the backend is still compiled (not linked) against them, so a typo or a
// type error in it fails this build instead of the first build on a Jetson. Not an implementation.
#pragma once
#include <cstddef>
#include <cstdint>

#include "cuda_runtime_api.h"

namespace nvinfer1 {
constexpr int32_t MAX_DIMS = 8;
struct Dims64 {
  int32_t nbDims;
  int64_t d[MAX_DIMS];
};
using Dims = Dims64;
enum class DataType : int32_t { kFLOAT = 0, kHALF = 1, kINT8 = 2, kINT32 = 3, kBOOL = 4, kINT64 = 8 };
enum class TensorIOMode : int32_t { kNONE = 0, kINPUT = 1, kOUTPUT = 2 };
class ILogger {
 public:
  enum class Severity : int32_t { kINTERNAL_ERROR = 0, kERROR = 1, kWARNING = 2, kINFO = 3, kVERBOSE = 4 };
  virtual void log(Severity severity, const char* msg) noexcept = 0;
  virtual ~ILogger() = default;
};
class IExecutionContext {
 public:
  virtual ~IExecutionContext() noexcept = default;
  bool setInputShape(const char* tensorName, const Dims& dims) noexcept;
  Dims getTensorShape(const char* tensorName) const noexcept;
  bool setTensorAddress(const char* tensorName, void* data) noexcept;
  bool enqueueV3(cudaStream_t stream) noexcept;
};
class ICudaEngine {
 public:
  virtual ~ICudaEngine() noexcept = default;
  int32_t getNbIOTensors() const noexcept;
  const char* getIOTensorName(int32_t index) const noexcept;
  TensorIOMode getTensorIOMode(const char* tensorName) const noexcept;
  DataType getTensorDataType(const char* tensorName) const noexcept;
  IExecutionContext* createExecutionContext() noexcept;
};
class IRuntime {
 public:
  virtual ~IRuntime() noexcept = default;
  ICudaEngine* deserializeCudaEngine(const void* blob, std::size_t size) noexcept;
};
IRuntime* createInferRuntime(ILogger& logger) noexcept;
}  // namespace nvinfer1

extern "C" int32_t getInferLibVersion() noexcept;
