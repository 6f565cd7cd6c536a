// An engine dir written by `python -m export.build`: its manifest, checked like the Python runtime checks it.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "errors.hpp"

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

// The geometry a manifest may declare (EngineDirError naming the field otherwise): a model side of 1 to
// kMaxModelSide pixels, a multiple of the VAE's scale factor (1 to kMaxScaleFactor), 1 to kMaxLatentChannels latent
// channels, a latent of at least kMinLatentValues values (torch draws fewer than 16 normals another way) and a VAE
// scaling factor in (0, kMaxScalingFactor]. Above these a manifest would ask for allocations no model needs (SD
// runs at 512 to 1024 px, scale factor 8, 4 or 16 channels, scaling factors 0.13 to 1.5).
constexpr int64_t kMaxModelSide = 8192;
constexpr int64_t kMaxScaleFactor = 64;
constexpr int64_t kMaxLatentChannels = 256;
constexpr int64_t kMinLatentValues = 16;
constexpr double kMaxScalingFactor = 1e3;

// What check_compatible reads from a TensorRT plan's manifest entry: "?" for a field the entry does not record.
struct PlanRecord {
  std::string tensorrt_version = "?", compute_capability = "?";
  bool verified = false;  // verification.passed
};
// EngineDirError naming the field when the entry records one with the wrong type.
PlanRecord plan_record(const nlohmann::json& record, const std::string& component);

// The output names an artifact's manifest entry lists (EngineDir::artifact checked them; an Artifact a caller
// built may not have been): EngineDirError naming the component otherwise.
std::vector<std::string> output_names(const std::string& component, const Artifact& artifact);
// What a backend throws when a model lacks an output the manifest lists (the runtime reads outputs by these names).
EngineDirError missing_output(const std::string& component, const std::string& name,
                              const std::vector<std::string>& produced);

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

  // Every value read from the manifest is checked for its type and range where it is read: an EngineDirError (one
  // line naming the file and field), never a JSON library's exception or a conversion out of range.
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
  // The component's manifest entry, its artifacts and IO specs checked for shape and type.
  const nlohmann::json& component_entry(const std::string& component) const;
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
