#include "engine_dir.hpp"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "errors.hpp"
#include "files.hpp"

namespace fs = std::filesystem;

namespace acsdk {

namespace {

// A relative POSIX path without ".." or a root: the only kind an engine dir may name.
bool confined(const std::string& rel) {
  const fs::path p(rel);
  if (rel.empty() || p.is_absolute()) return false;
  for (const auto& part : p)
    if (part == "..") return false;
  return true;
}

}  // namespace

EngineDir::EngineDir(const std::string& root, bool verify) : root_(root), verify_(verify) {
  if (!fs::is_directory(root))
    throw EngineDirError("engine dir '" + root + "' does not exist; build one with `python -m export.build`");
  const std::string file = (fs::path(root) / "manifest.json").string();
  if (!fs::is_regular_file(file))
    throw EngineDirError("'" + root + "' has no manifest.json: not an engine dir, or its build did not finish");
  const std::string text = read_file(file, "engines");
  try {
    manifest_ = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw EngineDirError(file + " is not readable JSON (" + e.what() + ")");
  }
  const auto version = manifest_.value("schema_version", nlohmann::json());
  if (version != kManifestSchema)
    throw EngineDirError(file + " has schema_version " + version.dump() + "; this runtime reads " +
                         std::to_string(kManifestSchema) + ". Rebuild the engine dir with this version's export.build.");
  for (const char* key : {"components", "files", "settings", "model"})
    if (!manifest_.contains(key)) throw EngineDirError(file + " lacks '" + key + "'; rebuild the engine dir");
  for (const auto& [rel, sha] : manifest_["files"].items()) {
    if (!confined(rel)) throw EngineDirError(file + " names a path outside the engine dir ('" + rel + "')");
    if (!sha.is_string()) throw EngineDirError(file + " records no sha256 string for '" + rel + "'");
  }
  digest_ = sha256_hex(text);
}

Geometry EngineDir::geometry() const {
  try {
    const auto& s = manifest_["settings"];
    const auto& m = manifest_["model"];
    Geometry g;
    g.height = s.at("height").get<int64_t>();
    g.width = s.at("width").get<int64_t>();
    g.scale_factor = m.at("vae_scale_factor").get<int64_t>();
    g.channels = m.at("latent_channels").get<int64_t>();
    g.scaling_factor = m.at("vae_scaling_factor").get<double>();
    if (g.height < 1 || g.width < 1 || g.scale_factor < 1 || g.channels < 1) throw EngineDirError("bad geometry");
    return g;
  } catch (const std::exception& e) {
    throw EngineDirError(root_ + "/manifest.json has no usable model geometry (" + e.what() + "); rebuild the dir");
  }
}

nlohmann::json EngineDir::scheduler_config() {
  const std::string file = path("scheduler/scheduler_config.json");
  try {
    return nlohmann::json::parse(read_file(file, "engines"));
  } catch (const nlohmann::json::exception& e) {
    throw EngineDirError(file + " is not readable JSON (" + e.what() + ")");
  }
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
  if (!fs::is_regular_file(full))
    throw EngineDirError("engine file '" + rel + "' is missing from " + root_ + "; rebuild the engine dir");
  return full;
}

std::string EngineDir::path(const std::string& rel) {
  const std::string full = listed(rel);
  std::lock_guard<std::mutex> guard(lock_);
  if (verify_ && !verified_.count(rel)) {
    const std::string expected = manifest_["files"][rel].get<std::string>();
    const std::string actual = sha256_file(full, "engines");
    if (actual != expected) throw tampered(rel, actual, expected);
    verified_.insert(rel);
  }
  return full;
}

std::string EngineDir::read(const std::string& rel) {
  std::string bytes = read_file(listed(rel), "engines");
  if (verify_) {
    const std::string expected = manifest_["files"][rel].get<std::string>();
    const std::string actual = sha256_hex(bytes);
    if (actual != expected) throw tampered(rel, actual, expected);
  }
  return bytes;
}

Artifact EngineDir::artifact(const std::string& component, const std::string& backend, const std::string& precision) {
  try {
    return find_artifact(component, backend, precision);
  } catch (const nlohmann::json::exception& e) {
    throw EngineDirError(root_ + "/manifest.json: component '" + component + "' is malformed (" + e.what() +
                         "); rebuild the engine dir");
  }
}

const nlohmann::json* EngineDir::find_in(const nlohmann::json& entry, const std::string& format,
                                         const std::string& precision) {
  for (const auto& a : entry.at("artifacts"))
    if (a.at("format") == format && a.at("precision") == precision) return &a;
  return nullptr;
}

bool EngineDir::has_artifact(const std::string& component, const std::string& format,
                             const std::string& precision) const {
  return has_component(component) && find_in(manifest_["components"][component], format, precision) != nullptr;
}

Artifact EngineDir::find_artifact(const std::string& component, const std::string& backend,
                                  const std::string& precision) {
  if (!has_component(component))
    throw EngineDirError(root_ + "/manifest.json has no component '" + component + "'");
  const auto& entry = manifest_["components"][component];
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
  out.format = art->at("format").get<std::string>();
  out.precision = art->at("precision").get<std::string>();
  const std::string file = art->at("file").get<std::string>();
  const auto data_files = art->value("data_files", std::vector<std::string>{});
  out.path = listed(file);
  out.bytes = std::make_shared<const std::string>(read(file));
  if (out.format == "openvino" && data_files.size() == 1) {
    out.weights = std::make_shared<const std::string>(read(data_files[0]));
  } else {
    for (const auto& rel : data_files) path(rel);
    out.external_data = !data_files.empty();
  }
  out.inputs = entry.at("inputs");
  out.outputs = entry.at("outputs");
  out.record = *art;
  return out;
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
