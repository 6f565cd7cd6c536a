#include "engine_dir.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "errors.hpp"
#include "files.hpp"
#include "json_read.hpp"
#include "onnx_external.hpp"

namespace fs = std::filesystem;

namespace acsdk {

namespace {

// A JSON library's message without its "[json.exception.type_error.302] " prefix: the line names the file instead.
std::string json_why(const nlohmann::json::exception& e) {
  const std::string what = e.what();
  const size_t end = what.find("] ");
  return what.rfind("[json.exception.", 0) == 0 && end != std::string::npos ? what.substr(end + 2) : what;
}

const char* kind_of(const nlohmann::json& v) {
  if (v.is_null()) return "null";
  if (v.is_object()) return "an object";
  if (v.is_array()) return "a list";
  if (v.is_string()) return "a string";
  if (v.is_boolean()) return "a boolean";
  return "a number";
}

// What each component the synthesizer runs must list among its outputs: the names it reads from the results.
const std::map<std::string, std::vector<std::string>> kReadOutputs = {
    {"vae_encoder", {"latent_moments"}}, {"unet", {"noise_pred"}}, {"vae_decoder", {"image"}}};

// A relative POSIX path without ".." or a root: the only kind an engine dir may name. (Lexical: where it resolves
// to, symlinks followed, is checked when the file is opened: EngineDir::listed.)
bool confined(const std::string& rel) {
  const fs::path p(rel);
  if (rel.empty() || p.is_absolute()) return false;
  for (const auto& part : p)
    if (part == "..") return false;
  return true;
}

// `path` with every symlink resolved (realpath), "" when it cannot be resolved.
std::string resolved(const std::string& path) {
  char* real = ::realpath(path.c_str(), nullptr);
  if (!real) return "";
  std::string out(real);
  std::free(real);
  return out;
}

}  // namespace

EngineDir::EngineDir(const std::string& root, bool verify) : root_(root), verify_(verify) {
  if (path_kind(root, "engines") != PathKind::kDirectory)
    throw EngineDirError("engine dir '" + root + "' does not exist; build one with `python -m export.build`");
  const std::string file = (fs::path(root) / "manifest.json").string();
  if (path_kind(file, "engines") != PathKind::kFile)
    throw EngineDirError("'" + root + "' has no manifest.json: not an engine dir, or its build did not finish");
  const std::string text = read_file(file, "engines");
  try {
    manifest_ = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw EngineDirError(file + " is not readable JSON (" + json_why(e) + ")");
  }
  if (!manifest_.is_object())
    throw EngineDirError(file + " holds " + kind_of(manifest_) + ", not a JSON object: not a manifest written by "
                         "`python -m export.build`; rebuild the engine dir");
  const auto found = manifest_.find("schema_version");
  const nlohmann::json version = found == manifest_.end() ? nlohmann::json() : *found;
  if (version != kManifestSchema)
    throw EngineDirError(file + " has schema_version " + json_read::shown(version) + "; this runtime reads " +
                         std::to_string(kManifestSchema) + ". Rebuild the engine dir with this version's export.build.");
  for (const char* key : {"components", "files", "settings", "model"}) {
    if (!manifest_.contains(key)) throw EngineDirError(file + " lacks '" + key + "'; rebuild the engine dir");
    if (!manifest_[key].is_object())
      throw EngineDirError(file + ": '" + key + "' is " + kind_of(manifest_[key]) + ", expected an object; rebuild "
                           "the engine dir");
  }
  for (const auto& [rel, sha] : manifest_["files"].items()) {
    if (!confined(rel)) throw EngineDirError(file + " names a path outside the engine dir ('" + rel + "')");
    if (!sha.is_string()) throw EngineDirError(file + " records no sha256 string for '" + rel + "'");
  }
  digest_ = sha256_hex(text);
  real_root_ = resolved(root);
  if (real_root_.empty()) throw EngineDirError("engine dir '" + root + "' cannot be resolved to a real path");
}

Geometry EngineDir::geometry() const {
  const std::string file = root_ + "/manifest.json";
  auto bad = [&](const std::string& field, const std::string& expected, const std::string& got) {
    return EngineDirError(file + ": " + field + ": expected " + expected + ", got " + got + "; rebuild the engine dir");
  };
  auto integer = [&](const char* section, const char* key, int64_t lo, int64_t hi) {
    const nlohmann::json& s = manifest_[section];
    const std::string field = std::string(section) + "." + key;
    if (!s.contains(key)) throw bad(field, "an integer in " + json_read::range(lo, hi), "nothing");
    const auto v = json_read::integer(s[key], lo, hi);
    if (!v) throw bad(field, "an integer in " + json_read::range(lo, hi), json_read::shown(s[key]));
    return *v;
  };
  Geometry g;
  g.scale_factor = integer("model", "vae_scale_factor", 1, kMaxScaleFactor);
  g.height = integer("settings", "height", 1, kMaxModelSide);
  g.width = integer("settings", "width", 1, kMaxModelSide);
  g.channels = integer("model", "latent_channels", 1, kMaxLatentChannels);
  const nlohmann::json& m = manifest_["model"];
  const auto scaling = m.contains("vae_scaling_factor") ? json_read::real(m["vae_scaling_factor"], 0.0, kMaxScalingFactor)
                                                        : std::nullopt;
  if (!scaling || *scaling <= 0.0)
    throw bad("model.vae_scaling_factor", "a finite number in (0, 1000]",
              m.contains("vae_scaling_factor") ? json_read::shown(m["vae_scaling_factor"]) : "nothing");
  g.scaling_factor = *scaling;
  for (const auto& [name, side] : {std::pair<const char*, int64_t>{"settings.height", g.height}, {"settings.width", g.width}})
    if (side % g.scale_factor != 0)
      throw bad(name, "a multiple of model.vae_scale_factor (" + std::to_string(g.scale_factor) + ")",
                std::to_string(side));
  const int64_t latent = g.channels * (g.height / g.scale_factor) * (g.width / g.scale_factor);  // < 2^43: no overflow
  if (latent < kMinLatentValues)
    throw bad("model geometry", "a latent of at least " + std::to_string(kMinLatentValues) + " values (channels x h x w)",
              std::to_string(g.channels) + " x " + std::to_string(g.height / g.scale_factor) + " x " +
                  std::to_string(g.width / g.scale_factor));
  return g;
}

nlohmann::json EngineDir::scheduler_config() {
  const std::string rel = "scheduler/scheduler_config.json";
  const std::string file = (fs::path(root_) / rel).string();
  const std::string bytes = read(rel);  // read once: the bytes hashed are the bytes parsed
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(bytes);
  } catch (const nlohmann::json::exception& e) {
    throw EngineDirError(file + " is not readable JSON (" + json_why(e) + ")");
  }
  if (!config.is_object())
    throw EngineDirError(file + " holds " + kind_of(config) + ", not a JSON object; rebuild the engine dir");
  return config;
}

namespace {

IntegrityError tampered(const std::string& rel, const std::string& actual, const std::string& expected) {
  return IntegrityError("engines", "engine file '" + rel + "' has sha256 " + actual.substr(0, 12) +
                                       "..., the manifest recorded " + expected.substr(0, 12) +
                                       "...: the file was changed or corrupted; rebuild the engine dir");
}

}  // namespace

std::string EngineDir::listed(const std::string& rel) const {
  if (!manifest_["files"].contains(rel)) throw EngineDirError("'" + rel + "' is not listed in " + root_ + "/manifest.json");
  const std::string full = (fs::path(root_) / rel).string();
  if (path_kind(full, "engines") != PathKind::kFile)
    throw EngineDirError("engine file '" + rel + "' is missing from " + root_ + "; rebuild the engine dir");
  // A symlink (the file's or a directory's on the way) must not lead out of the dir: the file read is the dir's.
  const std::string real = resolved(full), inside = real_root_ == "/" ? "/" : real_root_ + "/";
  if (real.compare(0, inside.size(), inside) != 0)
    throw EngineDirError("engine file '" + rel + "' resolves to '" + (real.empty() ? std::string("nothing") : real) +
                         "', outside the engine dir " + real_root_ + " (a symlink); rebuild the engine dir");
  return full;
}

void EngineDir::check_hash(const std::string& rel, const std::string& actual) const {
  const std::string expected = manifest_["files"][rel].get<std::string>();  // a string: the constructor checked
  if (actual != expected) throw tampered(rel, actual, expected);
}

std::string EngineDir::path(const std::string& rel) {
  const std::string full = listed(rel);
  std::lock_guard<std::mutex> guard(lock_);
  if (!verified_.count(rel)) {
    FileStamp stamp;
    if (verify_) {
      check_hash(rel, sha256_file(full, "engines", &stamp));
    } else {
      stamp = file_stamp(full);
    }
    verified_[rel] = stamp;
  }
  return full;
}

std::string EngineDir::read(const std::string& rel) {
  std::string bytes = read_file(listed(rel), "engines");
  if (verify_) check_hash(rel, sha256_hex(bytes));
  return bytes;
}

std::shared_ptr<const FileBytes> EngineDir::map(const std::string& rel) {
  auto bytes = FileBytes::open(listed(rel), "engines");
  if (verify_) check_hash(rel, sha256_hex(bytes->view()));  // the mapping hashed is the mapping handed on
  return bytes;
}

Artifact EngineDir::artifact(const std::string& component, const std::string& backend, const std::string& precision) {
  try {
    return find_artifact(component, backend, precision);
  } catch (const nlohmann::json::exception& e) {  // checked below before use: a last guard, still one typed line
    throw EngineDirError(root_ + "/manifest.json: component '" + component + "' is malformed (" + json_why(e) +
                         "); rebuild the engine dir");
  }
}

const nlohmann::json& EngineDir::component_entry(const std::string& component) const {
  const std::string where = root_ + "/manifest.json: component '" + component + "' is malformed: ";
  auto bad = [&](const std::string& field, const std::string& expected, const nlohmann::json* got) {
    return EngineDirError(where + field + ": expected " + expected + ", got " +
                          (got ? json_read::shown(*got) : std::string("nothing")) + "; rebuild the engine dir");
  };
  const nlohmann::json& entry = manifest_["components"][component];
  if (!entry.is_object()) throw bad("its entry", "an object", &entry);
  if (entry.contains("precision") && !entry["precision"].is_string())
    throw bad("precision", "a string", &entry["precision"]);
  const auto artifacts = entry.find("artifacts");
  if (artifacts == entry.end() || !artifacts->is_array())
    throw bad("artifacts", "a list", artifacts == entry.end() ? nullptr : &*artifacts);
  for (size_t i = 0; i < artifacts->size(); ++i) {
    const nlohmann::json& a = (*artifacts)[i];
    const std::string field = "artifacts[" + std::to_string(i) + "]";
    if (!a.is_object()) throw bad(field, "an object", &a);
    for (const char* key : {"format", "precision", "file"})
      if (!a.contains(key) || !a[key].is_string())
        throw bad(field + "." + key, "a string", a.contains(key) ? &a[key] : nullptr);
    if (a.contains("data_files")) {
      const nlohmann::json& d = a["data_files"];
      if (!d.is_array()) throw bad(field + ".data_files", "a list of paths", &d);
      for (const auto& rel : d)
        if (!rel.is_string()) throw bad(field + ".data_files", "a list of paths", &rel);
    }
  }
  for (const char* io : {"inputs", "outputs"}) {
    const auto specs = entry.find(io);
    if (specs == entry.end() || !specs->is_array())
      throw bad(io, "a list of {name, dtype, shape}", specs == entry.end() ? nullptr : &*specs);
    for (size_t i = 0; i < specs->size(); ++i) {
      const nlohmann::json& spec = (*specs)[i];
      const std::string field = std::string(io) + "[" + std::to_string(i) + "]";
      if (!spec.is_object()) throw bad(field, "an object", &spec);
      if (!spec.contains("name") || !spec["name"].is_string())
        throw bad(field + ".name", "a string", spec.contains("name") ? &spec["name"] : nullptr);
      if (!spec.contains("shape")) continue;
      const nlohmann::json& shape = spec["shape"];
      if (!shape.is_array()) throw bad(field + ".shape", "a list", &shape);
      for (const auto& d : shape)  // a dynamic dimension's name, or a size
        if (!d.is_string() && !json_read::integer(d, -1, std::numeric_limits<int32_t>::max()))
          throw bad(field + ".shape", "names or integers in [-1, 2147483647]", &d);
    }
  }
  const auto read = kReadOutputs.find(component);
  if (read != kReadOutputs.end())
    for (const std::string& name : read->second) {
      bool listed = false;
      for (const auto& spec : entry["outputs"]) listed |= spec["name"] == name;
      if (!listed)
        throw EngineDirError(where + "outputs: expected one named '" + name + "' (what the runtime reads), got " +
                             json_read::shown(entry["outputs"]) + "; rebuild the engine dir");
    }
  return entry;
}

const nlohmann::json* EngineDir::find_in(const nlohmann::json& entry, const std::string& format,
                                         const std::string& precision) {
  for (const auto& a : entry["artifacts"])  // component_entry checked every artifact's format and precision
    if (a["format"] == format && a["precision"] == precision) return &a;
  return nullptr;
}

bool EngineDir::has_artifact(const std::string& component, const std::string& format,
                             const std::string& precision) const {
  return has_component(component) && find_in(component_entry(component), format, precision) != nullptr;
}

Artifact EngineDir::find_artifact(const std::string& component, const std::string& backend,
                                  const std::string& precision) {
  if (!has_component(component))
    throw EngineDirError(root_ + "/manifest.json has no component '" + component + "'");
  const auto& entry = component_entry(component);
  const std::string want = precision.empty() ? entry.value("precision", "fp32") : precision;
  auto find = [&](const std::string& format, const std::string& prec) { return find_in(entry, format, prec); };
  const nlohmann::json* art = nullptr;
  if (backend == "tensorrt") {
    art = find("tensorrt", want);
    if (!art) art = find("tensorrt", "fp32");
  } else {
    art = find("openvino", want);
    if (!art) art = find("onnx", want);
    if (!art) art = find("onnx", "fp32");
  }
  if (!art)
    throw EngineDirError("component '" + component + "' has no " + (backend == "tensorrt" ? "TensorRT plan" : "ONNX") +
                         " artifact in " + root_ + "; rebuild the engine dir" +
                         (backend == "tensorrt" ? " with --backend tensorrt" : ""));
  Artifact out;
  out.format = (*art)["format"].get<std::string>();
  out.precision = (*art)["precision"].get<std::string>();
  const std::string file = (*art)["file"].get<std::string>();
  const auto data_files = art->value("data_files", std::vector<std::string>{});
  const std::string where = root_ + "/manifest.json: component '" + component + "': ";
  out.path = listed(file);
  out.bytes = map(file);
  if (out.format == "openvino") {  // an IR: its XML and at most one weights file, both handed over as checked bytes
    if (data_files.size() > 1)
      throw EngineDirError(where + "an OpenVINO IR lists " + std::to_string(data_files.size()) +
                           " data_files, expected its one weights file; rebuild the engine dir");
    if (!data_files.empty()) out.weights = map(data_files[0]);
  } else {
    for (const auto& rel : data_files) {
      const std::string full = path(rel);
      std::lock_guard<std::mutex> guard(lock_);
      out.data_files.emplace_back(full, verified_.at(rel));
    }
    if (out.format == "onnx") {
      // OpenVINO opens every external location the graph names, relative to the graph's directory: each must be
      // one of the data_files just checked, never a path the manifest does not hash or one outside the dir.
      // A location must not hold "..": the kernel resolves "x/.." from where a symlink x leads, not lexically.
      const fs::path dir = fs::path(file).parent_path();
      for (const std::string& location : onnx_external_locations(out.bytes->view(), root_ + "/" + file)) {
        const std::string rel = (dir / location).lexically_normal().generic_string();
        const bool listed_here = std::find(data_files.begin(), data_files.end(), rel) != data_files.end();
        if (!confined(location) || !listed_here)
          throw EngineDirError(where + "'" + file + "' names external data '" + location + "', which is not one of " +
                               "its data_files (each sha256-checked, inside the dir); rebuild the engine dir");
        out.external_data = true;
      }
    }
  }
  out.inputs = entry["inputs"];
  out.outputs = entry["outputs"];
  out.record = *art;
  return out;
}

PlanRecord plan_record(const nlohmann::json& record, const std::string& component) {
  auto bad = [&](const std::string& field, const std::string& expected, const nlohmann::json& got) {
    return EngineDirError("manifest.json: component '" + component + "': its TensorRT plan's " + field + ": expected " +
                          expected + ", got " + json_read::shown(got) + "; rebuild the engine dir");
  };
  PlanRecord out;
  if (!record.is_object()) throw bad("entry", "an object", record);
  for (const auto& [key, field] : {std::pair<const char*, std::string*>{"tensorrt_version", &out.tensorrt_version},
                                   {"compute_capability", &out.compute_capability}}) {
    if (!record.contains(key) || record[key].is_null()) continue;
    if (!record[key].is_string()) throw bad(key, "a string", record[key]);
    *field = record[key].get<std::string>();
  }
  if (record.contains("verification") && !record["verification"].is_null()) {
    const nlohmann::json& v = record["verification"];
    if (!v.is_object()) throw bad("verification", "an object", v);
    if (v.contains("passed") && !v["passed"].is_boolean()) throw bad("verification.passed", "true or false", v["passed"]);
    out.verified = v.value("passed", false);
  }
  return out;
}

std::vector<std::string> output_names(const std::string& component, const Artifact& artifact) {
  const nlohmann::json& outputs = artifact.outputs;
  if (!outputs.is_array())
    throw EngineDirError("manifest.json: component '" + component + "': outputs: expected a list, got " +
                         json_read::shown(outputs) + "; rebuild the engine dir");
  std::vector<std::string> names;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const auto& o = outputs[i];
    if (!o.is_object() || !o.contains("name") || !o["name"].is_string())
      throw EngineDirError("manifest.json: component '" + component + "': outputs[" + std::to_string(i) +
                           "].name: expected a string, got " + json_read::shown(o) + "; rebuild the engine dir");
    names.push_back(o["name"].get<std::string>());
  }
  return names;
}

void check_data_files(const std::string& component, const Artifact& artifact) {
  for (const auto& [path, stamp] : artifact.data_files)
    if (file_stamp(path) != stamp)
      throw IntegrityError("engines", component + ": engine file '" + path + "' changed after its sha256 was checked "
                                      "(replaced or written while the engine opened); rebuild or restore the engine dir");
}

EngineDirError missing_output(const std::string& component, const std::string& name,
                              const std::vector<std::string>& produced) {
  std::string got;
  for (const auto& n : produced) got += (got.empty() ? "'" : ", '") + n + "'";
  return EngineDirError(component + ": the model has no output '" + name + "', which manifest.json lists (it has " +
                        (got.empty() ? std::string("none") : got) + "); rebuild the engine dir");
}

// Per host in the user's acsdk cache, as the Python runtime keeps it: never in the (shared, read-only) engine dir,
// where OpenVINO's in-place blob writes could be read half-written by another node.
std::string openvino_cache_dir(const EngineDir& dir) {
  fs::path base;
  if (const char* env = std::getenv("ACSDK_CACHE"); env && *env) {
    base = env;
  } else {
    const char* xdg = std::getenv("XDG_CACHE_HOME");
    const char* home = std::getenv("HOME");
    base = fs::path(xdg && *xdg ? xdg : std::string(home ? home : ".") + "/.cache") / "acsdk";
  }
  char host[256] = {0};
  if (::gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "unknown-host");
  return (base / "openvino" / (dir.digest().substr(0, 16) + "-" + host)).string();
}

}  // namespace acsdk
