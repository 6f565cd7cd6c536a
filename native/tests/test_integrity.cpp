// test_integrity WORK_DIR (issue 34 §5): memory and integrity where model files are read, without OpenVINO (so it
// runs under ASan too). read_file holds one copy of a file (it went through an ostringstream and str(): twice the
// file at its peak); FileBytes maps a file instead of copying it into this process's own memory; EngineDir::map
// hashes the very mapping it hands on. An ONNX graph's external-data locations, which OpenVINO opens beside it, must
// each be one of its artifact's hashed, confined data_files; a listed file must not resolve, through a symlink, to a
// file outside the engine dir; an external data file replaced after its check is caught by check_data_files.
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "check.hpp"
#include "engine_dir.hpp"
#include "errors.hpp"
#include "files.hpp"
#include "onnx_external.hpp"

namespace {

using acsdk_test::expect;
using acsdk_test::failures;
using acsdk_test::refused;

void accepted(const std::string& what, const std::function<void()>& f) {
  try {
    f();
    expect(true, what);
  } catch (const std::exception& e) {
    expect(false, what, e.what());
  }
}

void write(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// /proc/self/status's field in KiB (VmHWM: peak resident; RssAnon: own memory, no mapped files); -1 where absent.
long status_kib(const std::string& field) {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind(field + ":", 0) == 0) return std::strtol(line.c_str() + field.size() + 1, nullptr, 10);
  return -1;
}

// The protobuf wire format, for ONNX graphs made by hand.
std::string varint(uint64_t v) {
  std::string out;
  do {
    out += static_cast<char>((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
    v >>= 7;
  } while (v);
  return out;
}
std::string bytes_field(int field, const std::string& body) { return varint(uint64_t(field) << 3 | 2) + varint(body.size()) + body; }
std::string varint_field(int field, uint64_t v) { return varint(uint64_t(field) << 3) + varint(v); }

// A TensorProto stored externally at `location` (data_location EXTERNAL, external_data {location, offset, length}).
std::string external_tensor(const std::string& name, const std::string& location) {
  auto entry = [](const std::string& k, const std::string& v) { return bytes_field(13, bytes_field(1, k) + bytes_field(2, v)); };
  return varint_field(2, 1) + bytes_field(8, name) + entry("location", location) + entry("offset", "0") +
         entry("length", "4") + varint_field(14, 1);
}
std::string graph_with_initializer(const std::string& location) {
  return bytes_field(5, external_tensor("w", location));
}
std::string model(const std::string& graph) { return varint_field(1, 9) + bytes_field(7, graph); }

void onnx_locations() {
  const auto found = [](const std::string& m) { return acsdk::onnx_external_locations(m, "m.onnx"); };
  expect(found(model(graph_with_initializer("w.data"))) == std::vector<std::string>{"w.data"},
         "onnx: an initializer's external location");
  // A Constant node's tensor attribute, in a subgraph (an If's branch), in a sparse initializer, in a function.
  const std::string constant_node = bytes_field(1, bytes_field(5, bytes_field(5, external_tensor("c", "c.data"))));
  const std::string branch = bytes_field(1, bytes_field(5, bytes_field(6, graph_with_initializer("b.data"))));
  const std::string sparse = bytes_field(15, bytes_field(1, external_tensor("s", "s.data")));
  const std::string function = bytes_field(25, bytes_field(7, bytes_field(5, bytes_field(5, external_tensor("f", "f.data")))));
  const auto all = found(model(constant_node + branch + sparse) + function);
  expect(all == std::vector<std::string>{"c.data", "b.data", "s.data", "f.data"},
         "onnx: locations in Constant attributes, subgraphs, sparse tensors, functions");
  expect(found(model(bytes_field(5, varint_field(2, 1) + bytes_field(9, std::string(64, 'x'))))).empty(),
         "onnx: a graph with its data inside has no location");
  refused<acsdk::EngineDirError>("onnx: a length past the end", "not a well-formed ONNX model",
                                 [&] { found(model(graph_with_initializer("w.data")).substr(0, 12)); });
  refused<acsdk::EngineDirError>("onnx: an external tensor without a location", "names no location",
                                 [&] { found(model(bytes_field(5, varint_field(14, 1)))); });
  refused<acsdk::EngineDirError>("onnx: a wire type 7", "wire type 7", [&] { found(std::string("\x0f", 1)); });
  std::string deep = graph_with_initializer("d.data");
  for (int i = 0; i < 40; ++i) deep = bytes_field(1, bytes_field(5, bytes_field(6, deep)));  // 120 levels
  refused<acsdk::EngineDirError>("onnx: subgraphs nested past 64 messages", "nested deeper", [&] { found(model(deep)); });
}

// An engine dir with one component "custom" whose ONNX artifact is `graph` with `data_files`; every file hashed.
std::string engine_dir(const std::string& root, const std::string& graph, const std::vector<std::string>& data_files) {
  std::system(("rm -rf '" + root + "' && mkdir -p '" + root + "/onnx'").c_str());
  nlohmann::json files = nlohmann::json::object();
  write(root + "/onnx/custom.onnx", graph);
  files["onnx/custom.onnx"] = acsdk::sha256_hex(graph);
  for (const auto& rel : data_files) {
    write(root + "/" + rel, "weights of " + rel);
    files[rel] = acsdk::sha256_hex("weights of " + rel);
  }
  const nlohmann::json manifest = {
      {"schema_version", 1},
      {"files", files},
      {"settings", {{"height", 64}, {"width", 64}}},
      {"model", {{"vae_scale_factor", 8}, {"latent_channels", 4}, {"vae_scaling_factor", 0.18215}}},
      {"components",
       {{"custom",
         {{"artifacts", {{{"format", "onnx"}, {"precision", "fp32"}, {"file", "onnx/custom.onnx"}, {"data_files", data_files}}}},
          {"inputs", nlohmann::json::array({{{"name", "x"}}})},
          {"outputs", nlohmann::json::array({{{"name", "y"}}})}}}}}};
  write(root + "/manifest.json", manifest.dump());
  return root;
}

void external_data_tied(const std::string& work) {
  const std::string root = work + "/engines";
  auto artifact = [&](const std::string& dir) { return acsdk::EngineDir(dir).artifact("custom", "openvino"); };
  accepted("external data: a location that is a listed data file", [&] {
    const auto a = artifact(engine_dir(root, model(graph_with_initializer("custom.onnx.data")), {"onnx/custom.onnx.data"}));
    if (!a.external_data || a.data_files.size() != 1) throw std::runtime_error("not marked as external data");
  });
  refused<acsdk::EngineDirError>("external data: a location the manifest does not list", "names external data 'secret.bin'",
                                 [&] { artifact(engine_dir(root, model(graph_with_initializer("secret.bin")), {})); });
  refused<acsdk::EngineDirError>(
      "external data: a present but unlisted file", "names external data 'other.data'", [&] {
        engine_dir(root, model(graph_with_initializer("other.data")), {"onnx/custom.onnx.data"});
        write(root + "/onnx/other.data", "unhashed");
        artifact(root);
      });
  refused<acsdk::EngineDirError>("external data: '../' out of the dir", "names external data '../../etc/passwd'", [&] {
    artifact(engine_dir(root, model(graph_with_initializer("../../etc/passwd")), {"onnx/custom.onnx.data"}));
  });
  refused<acsdk::EngineDirError>("external data: an absolute location", "names external data '/etc/passwd'", [&] {
    artifact(engine_dir(root, model(graph_with_initializer("/etc/passwd")), {"onnx/custom.onnx.data"}));
  });
  accepted("external data: a './' spelling of a listed file", [&] {
    artifact(engine_dir(root, model(graph_with_initializer("./custom.onnx.data")), {"onnx/custom.onnx.data"}));
  });
  // Lexically the listed file, but the kernel resolves "x/.." from wherever a symlink x leads.
  refused<acsdk::EngineDirError>("external data: 'x/../' before a listed file's name", "names external data 'x/../", [&] {
    artifact(engine_dir(root, model(graph_with_initializer("x/../custom.onnx.data")), {"onnx/custom.onnx.data"}));
  });
  refused<acsdk::IntegrityError>("external data: a listed data file changed", "has sha256", [&] {
    engine_dir(root, model(graph_with_initializer("custom.onnx.data")), {"onnx/custom.onnx.data"});
    write(root + "/onnx/custom.onnx.data", "other weights");
    artifact(root);
  });
  // Checked, then replaced before the backend opened it by path: check_data_files says so.
  refused<acsdk::IntegrityError>("external data: replaced after its check", "changed after its sha256 was checked", [&] {
    const auto a = artifact(engine_dir(root, model(graph_with_initializer("custom.onnx.data")), {"onnx/custom.onnx.data"}));
    write(root + "/onnx/replacement", "weights of onnx/custom.onnx.data, and more");
    ::rename((root + "/onnx/replacement").c_str(), (root + "/onnx/custom.onnx.data").c_str());
    acsdk::check_data_files("custom", a);
  });
  accepted("external data: unchanged since its check", [&] {
    acsdk::check_data_files("custom", artifact(engine_dir(root, model(graph_with_initializer("custom.onnx.data")),
                                                          {"onnx/custom.onnx.data"})));
  });
}

void symlinks_resolved(const std::string& work) {
  const std::string root = work + "/engines";
  const std::string graph = model(bytes_field(1, ""));
  const std::string outside = work + "/outside.onnx";
  refused<acsdk::EngineDirError>("symlink: a listed file linking out of the dir", "outside the engine dir", [&] {
    engine_dir(root, graph, {});
    write(outside, graph);  // the same bytes: the hash alone would not tell
    ::unlink((root + "/onnx/custom.onnx").c_str());
    if (::symlink(outside.c_str(), (root + "/onnx/custom.onnx").c_str()) != 0) throw std::runtime_error("symlink");
    acsdk::EngineDir(root).artifact("custom", "openvino");
  });
  refused<acsdk::EngineDirError>("symlink: a directory on the way linking out", "outside the engine dir", [&] {
    engine_dir(root, graph, {});
    std::system(("rm -rf '" + work + "/elsewhere' && mv '" + root + "/onnx' '" + work + "/elsewhere'").c_str());
    if (::symlink((work + "/elsewhere").c_str(), (root + "/onnx").c_str()) != 0) throw std::runtime_error("symlink");
    acsdk::EngineDir(root).artifact("custom", "openvino");
  });
  accepted("symlink: a listed file linking inside the dir", [&] {
    engine_dir(root, graph, {});
    ::rename((root + "/onnx/custom.onnx").c_str(), (root + "/onnx/real.onnx").c_str());
    if (::symlink("real.onnx", (root + "/onnx/custom.onnx").c_str()) != 0) throw std::runtime_error("symlink");
    acsdk::EngineDir(root).artifact("custom", "openvino");
  });
  accepted("symlink: the engine dir itself reached through a symlink", [&] {
    engine_dir(root, graph, {});
    ::unlink((work + "/engines-link").c_str());
    if (::symlink(root.c_str(), (work + "/engines-link").c_str()) != 0) throw std::runtime_error("symlink");
    acsdk::EngineDir(work + "/engines-link").artifact("custom", "openvino");
  });
}

// read_file's peak is one copy of the file; FileBytes adds none of this process's own memory. First in main, while
// the process is small: VmHWM is a high-water mark.
void memory(const std::string& work) {
  const size_t size = size_t{96} << 20;
  const std::string path = work + "/big.bin";
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);  // a MiB at a time: no peak of its own to hide one
    std::string mib(size_t{1} << 20, '\0');
    for (size_t at = 0; at < size; at += mib.size()) {
      for (size_t i = 0; i < mib.size(); i += 4096) mib[i] = static_cast<char>((at + i) >> 12);
      out.write(mib.data(), static_cast<std::streamsize>(mib.size()));
    }
  }
  std::ofstream("/proc/self/clear_refs") << "5";  // VmHWM back to the current RSS (Linux 4.0+)
  const long before = status_kib("VmHWM");
  const bool measurable = before > 0 && before - status_kib("VmRSS") < 4 * 1024;
  std::string bytes = acsdk::read_file(path, "big");
  const long peak = status_kib("VmHWM") - before;
  const long mib = static_cast<long>(size >> 20);
  expect(bytes.size() == size && bytes[4096 * 7] == 7, "read_file: the bytes");
  if (measurable) {
    expect(peak <= mib * 1024 * 5 / 4,
           "read_file: peak memory one copy of a " + std::to_string(mib) + " MiB file (at most 1.25x)",
           "peak rose " + std::to_string(peak / 1024) + " MiB");
  } else {
    std::printf("read_file: peak memory not measured (VmHWM cannot be reset here)\n");
  }
  const std::string digest = acsdk::sha256_hex(bytes);
  bytes = std::string();
  const long anon = status_kib("RssAnon");
  const auto mapped = acsdk::FileBytes::open(path, "big");
  const bool same = acsdk::sha256_hex(mapped->view()) == digest;  // every page read
  const long grew = status_kib("RssAnon") - anon;
  expect(mapped->mapped() && same, "FileBytes: mapped, the same bytes");
  expect(anon >= 0 && grew < 8 * 1024, "FileBytes: hashing the mapping adds no own memory (RssAnon)",
         "grew " + std::to_string(grew) + " KiB");
  // What cannot be mapped is read: an empty file, a pipe.
  write(work + "/empty.bin", "");
  const auto empty = acsdk::FileBytes::open(work + "/empty.bin", "empty");
  expect(empty->size() == 0 && !empty->mapped(), "FileBytes: an empty file");
  const std::string fifo = work + "/fifo";
  ::unlink(fifo.c_str());
  if (::mkfifo(fifo.c_str(), 0600) == 0) {
    const pid_t child = ::fork();
    if (child == 0) {
      std::ofstream(fifo) << "through a pipe";
      ::_exit(0);
    }
    const std::string piped = acsdk::read_file(fifo, "fifo");
    expect(piped == "through a pipe", "read_file: a pipe (no size to read ahead)", piped);
  }
  refused<acsdk::InputError>("read_file: a directory", "a directory", [&] { acsdk::read_file(work, "dir"); });
  ::unlink(path.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: test_integrity WORK_DIR\n");
    return 2;
  }
  const std::string work = std::string(argv[1]) + "/integrity";
  std::system(("rm -rf '" + work + "' && mkdir -p '" + work + "'").c_str());
  try {
    memory(work);
    onnx_locations();
    external_data_tied(work);
    symlinks_resolved(work);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "test_integrity: %s\n", e.what());
    return 1;
  }
  return failures == 0 ? 0 : 1;
}
