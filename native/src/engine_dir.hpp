// An engine dir written by `python -m export.build`: its manifest, checked like the Python runtime checks it.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <utility>
#include <string>
#include <vector>

#include "errors.hpp"
#include "file_bytes.hpp"

namespace acsdk {

constexpr int kManifestSchema = 1;  // runtime/manifest.py SCHEMA_VERSION

// What a component runs from: the artifact's main file (ONNX or OpenVINO IR) and the precision it holds.
struct Artifact {
  std::string format;     // "onnx", "openvino", "tensorrt"
  std::string precision;  // "fp32", "fp16", "int8"
  std::string path;       // the main file's path: root/rel (for messages, and the directory external data is in)
  // The main file's bytes (a plan, an ONNX graph, an IR's XML) and an IR's weights, mapped read-only (FileBytes):
  // the very bytes whose sha256 was checked, so no file is re-read by path after its check, and no copy of them is
  // this process's own memory. An ONNX with external data (over 2 GiB) is the exception: its data files are read by
  // the backend from beside `path`; every location the graph names is one of the entry's data_files, each checked
  // (sha256, inside the dir), and `data_files` holds their stamps as checked for check_data_files.
  std::shared_ptr<const FileBytes> bytes, weights;
  bool external_data = false;
  std::vector<std::pair<std::string, FileStamp>> data_files;  // absolute path, the stamp of what was hashed
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
// After a backend opened an ONNX's external data by path: IntegrityError naming the file when one is no longer the
// file whose sha256 was checked (replaced or written since: another inode, size or modification time).
void check_data_files(const std::string& component, const Artifact& artifact);
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
  // A listed file's path (root/rel), after its sha256 matched the manifest (IntegrityError naming it otherwise).
  // Every listed file must resolve, symlinks followed, to a file inside the engine dir (EngineDirError otherwise).
  std::string path(const std::string& rel);
  // A listed file's bytes, checked against the manifest's sha256 as read (the bytes hashed are the ones returned).
  std::string read(const std::string& rel);
  // The same, mapped read-only (FileBytes): for model files, whose bytes should not be this process's own memory.
  std::shared_ptr<const FileBytes> map(const std::string& rel);
  // The artifact `component` runs from on `backend` ("openvino": OpenVINO IR, else ONNX, of the component's
  // precision, else its fp32 ONNX; "tensorrt": the plan), with every file it consists of checked.
  Artifact artifact(const std::string& component, const std::string& backend, const std::string& precision = "");
  bool has_component(const std::string& name) const { return manifest_["components"].contains(name); }
  bool has_artifact(const std::string& component, const std::string& format, const std::string& precision) const;

 private:
  Artifact find_artifact(const std::string& component, const std::string& backend, const std::string& precision);
  // The path of a file the manifest lists, checked to exist and to resolve (symlinks followed) inside the dir.
  std::string listed(const std::string& rel) const;
  void check_hash(const std::string& rel, const std::string& actual) const;
  // The component's manifest entry, its artifacts and IO specs checked for shape and type.
  const nlohmann::json& component_entry(const std::string& component) const;
  static const nlohmann::json* find_in(const nlohmann::json& entry, const std::string& format,
                                       const std::string& precision);

  std::string root_;
  std::string real_root_;  // root_ with every symlink resolved: where every listed file must resolve to
  nlohmann::json manifest_;
  std::string digest_;
  bool verify_;
  std::map<std::string, FileStamp> verified_;  // files hashed by path(), with the stamp of what was hashed
  std::mutex lock_;
};

// Where OpenVINO keeps compiled models: the user's acsdk cache, per engine dir and host
// ($ACSDK_CACHE, else $XDG_CACHE_HOME/acsdk, else ~/.cache/acsdk; then openvino/<manifest sha256[:16]>-<hostname>),
// as the Python runtime keeps it; never inside the engine dir, which may be shared and read-only.
std::string openvino_cache_dir(const EngineDir& dir);

}  // namespace acsdk
