// An engine dir written by `python -m export.build`: its manifest, checked like the Python runtime checks it.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

namespace acsdk {

constexpr int kManifestSchema = 1;  // runtime/manifest.py SCHEMA_VERSION

// What a component runs from: the artifact's main file (ONNX or OpenVINO IR) and the precision it holds.
struct Artifact {
  std::string format;     // "onnx", "openvino", "tensorrt"
  std::string precision;  // "fp32", "fp16", "int8"
  std::string path;       // absolute, sha256 checked
  // The main file's bytes (a plan, an ONNX graph, an IR's XML) and an IR's weights: the very bytes whose sha256
  // was checked, so no file is re-read by path after its check. An ONNX with external data (over 2 GiB) is the
  // exception: its data files are checked, then read by the backend from `path`.
  std::shared_ptr<const std::string> bytes, weights;
  bool external_data = false;
  nlohmann::json inputs, outputs;  // the component's IO from the manifest (names, dtypes, shapes)
  nlohmann::json record;           // the artifact's manifest entry (a plan's TensorRT version, GPU, verification)
};

struct Geometry {
  int64_t height = 0, width = 0;  // model resolution in pixels
  int64_t scale_factor = 8;       // pixels per latent pixel
  int64_t channels = 4;           // latent channels
  double scaling_factor = 0.18215;
};

class EngineDir {
 public:
  // Reads and checks manifest.json (schema version, required keys, every path inside the dir). `verify`:
  // check each file's sha256 before it is used.
  EngineDir(const std::string& root, bool verify = true);

  const std::string& root() const { return root_; }
  const nlohmann::json& manifest() const { return manifest_; }
  const std::string& digest() const { return digest_; }  // sha256 of manifest.json: the dir's identity
  Geometry geometry() const;
  nlohmann::json scheduler_config();

  // A listed file's absolute path, after its sha256 matched the manifest (IntegrityError naming it otherwise).
  std::string path(const std::string& rel);
  // A listed file's bytes, checked against the manifest's sha256 as read (the bytes hashed are the ones returned).
  std::string read(const std::string& rel);
  // The artifact `component` runs from on `backend` ("openvino": OpenVINO IR, else ONNX, of the component's
  // precision, else its fp32 ONNX; "tensorrt": the plan), with every file it consists of checked.
  Artifact artifact(const std::string& component, const std::string& backend, const std::string& precision = "");
  bool has_component(const std::string& name) const { return manifest_["components"].contains(name); }
  bool has_artifact(const std::string& component, const std::string& format, const std::string& precision) const;

 private:
  Artifact find_artifact(const std::string& component, const std::string& backend, const std::string& precision);
  std::string listed(const std::string& rel) const;  // the absolute path of a file the manifest lists
  static const nlohmann::json* find_in(const nlohmann::json& entry, const std::string& format,
                                       const std::string& precision);

  std::string root_;
  nlohmann::json manifest_;
  std::string digest_;
  bool verify_;
  std::set<std::string> verified_;
  std::mutex lock_;
};

// Where OpenVINO keeps compiled models: <engines>/cache/openvino when writable, else the user's acsdk cache.
std::string openvino_cache_dir(const EngineDir& dir);

}  // namespace acsdk
