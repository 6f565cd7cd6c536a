// test_failures WORK_DIR: the library's failures (issue 34 §4), without OpenVINO (so it runs under ASan too):
// manifests, scheduler configs, banks and safetensors headers of the wrong shape or type are one typed error naming
// the file and field, never a JSON or std:: library's own exception; the atomic writes retry write() on EINTR,
// check close(), fsync the directory, fit NAME_MAX, refuse a directory target and commit several files all or none.
// write / close / fsync are interposed below (only for this test's temporaries) to make the kernel's rare answers
// happen on demand.
#include <dlfcn.h>
#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bank.hpp"
#include "ddim.hpp"
#include "engine_dir.hpp"
#include "errors.hpp"
#include "files.hpp"
#include "safetensors.hpp"
#include "torch_rng.hpp"

namespace {

// What the interposed calls do to a file whose name has ".tmp-" (a staged output), each once when armed.
bool eintr_next_write = false, eio_next_close = false;
int directory_fsyncs = 0;

bool staged_fd(int fd) {
  char link[64], target[PATH_MAX + 1] = {0};
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  const ssize_t n = ::readlink(link, target, PATH_MAX);
  return n > 0 && std::strstr(target, ".tmp-") != nullptr;
}

template <typename F>
F real(const char* name) {
  return reinterpret_cast<F>(::dlsym(RTLD_NEXT, name));
}

}  // namespace

extern "C" {
ssize_t write(int fd, const void* buf, size_t n) {
  static const auto next = real<ssize_t (*)(int, const void*, size_t)>("write");
  if (eintr_next_write && staged_fd(fd)) {  // a signal arrived before anything was written
    eintr_next_write = false;
    errno = EINTR;
    return -1;
  }
  return next(fd, buf, n);
}
int close(int fd) {
  static const auto next = real<int (*)(int)>("close");
  if (eio_next_close && staged_fd(fd)) {  // NFS: the write-back failed; the descriptor is freed all the same
    eio_next_close = false;
    next(fd);
    errno = EIO;
    return -1;
  }
  return next(fd);
}
int fsync(int fd) {
  static const auto next = real<int (*)(int)>("fsync");
  struct stat st {};
  if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) ++directory_fsyncs;
  return next(fd);
}
}

namespace {

int failures = 0;

void expect(bool ok, const std::string& what, const std::string& detail = "") {
  failures += !ok;
  std::printf("%-66s %s%s%s\n", what.c_str(), ok ? "ok" : "FAIL", detail.empty() ? "" : ": ", detail.c_str());
}

// `body` throws E whose message contains every one of `needles` and no library text of its own.
template <typename E>
void refused(const std::string& what, const std::vector<std::string>& needles, const std::function<void()>& body) {
  std::string got = "nothing thrown";
  bool ok = false;
  try {
    body();
  } catch (const E& e) {
    got = e.what();
    ok = true;
    for (const auto& n : needles) ok = ok && got.find(n) != std::string::npos;
    for (const char* raw : {"json.exception", "map::at", "_M_range_check", "filesystem error", "std::"})
      ok = ok && got.find(raw) == std::string::npos;
  } catch (const std::exception& e) {
    got = std::string("another exception: ") + e.what();
  }
  expect(ok, what, got);
}

void write_text(const std::string& path, const std::string& text) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) {
    std::perror(path.c_str());
    std::exit(2);
  }
  std::fwrite(text.data(), 1, text.size(), f);
  std::fclose(f);
}

std::string read_text(const std::string& path) {
  try {
    return acsdk::read_file(path, "test");
  } catch (const acsdk::Error&) {
    return "<absent>";
  }
}

int mode_of(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 ? static_cast<int>(st.st_mode & 07777) : -1;
}

bool is_dir(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

int temporaries(const std::string& dir) {
  int n = 0;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (const dirent* e = ::readdir(d))
      n += std::strstr(e->d_name, ".tmp-") != nullptr || std::strstr(e->d_name, ".old-") != nullptr;
    ::closedir(d);
  }
  return n;
}

void fresh_dir(const std::string& dir) {
  const std::string cmd = "rm -rf '" + dir + "' && mkdir -p '" + dir + "'";
  if (std::system(cmd.c_str()) != 0) std::exit(2);
}

// A manifest EngineDir accepts, with one VAE encoder component; `edit` changes it.
nlohmann::json manifest() {
  return nlohmann::json::parse(R"({
    "schema_version": 1, "acsdk_version": "0",
    "settings": {"height": 64, "width": 64},
    "model": {"vae_scale_factor": 8, "latent_channels": 4, "vae_scaling_factor": 0.18215},
    "files": {"onnx/vae_encoder.onnx": "0000"},
    "components": {"vae_encoder": {
      "precision": "fp32",
      "artifacts": [{"format": "onnx", "precision": "fp32", "file": "onnx/vae_encoder.onnx", "data_files": []}],
      "inputs": [{"name": "image", "dtype": "float32", "shape": ["batch", 3, 64, 64]}],
      "outputs": [{"name": "latent_moments", "dtype": "float32", "shape": ["batch", 8, 8, 8]}]}}})");
}

std::string engine_dir(const std::string& work, const std::string& name, const std::string& text) {
  const std::string dir = work + "/" + name;
  fresh_dir(dir);
  write_text(dir + "/manifest.json", text);
  return dir;
}

std::string engine_dir(const std::string& work, const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json m = manifest();
  edit(m);
  return engine_dir(work, name, m.dump());
}

nlohmann::json scheduler() {
  return nlohmann::json::parse(R"({"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "steps_offset": 1, "set_alpha_to_one": false, "clip_sample": false,
    "prediction_type": "epsilon", "timestep_spacing": "leading", "trained_betas": null})");
}

// Runs `check` in a child process as nobody (uid/gid 65534): a directory root may always search, a sticky
// directory's rule root is exempt from. false where this process is not root (the caller skips).
bool as_nobody(const std::function<bool()>& check, bool& passed) {
  if (::geteuid() != 0) return false;
  std::fflush(stdout);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const gid_t none[1] = {65534};
    if (::setgroups(1, none) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(3);
    const bool ok = check();
    std::fflush(stdout);
    ::_exit(ok ? 0 : 1);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  passed = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  return true;
}

void manifests(const std::string& work) {
  using acsdk::EngineDirError;
  refused<EngineDirError>("manifest.json [1, 2]", {"manifest.json holds a list, not a JSON object"},
                          [&] { acsdk::EngineDir(engine_dir(work, "root_array", "[1, 2]")); });
  refused<EngineDirError>("manifest.json \"text\"", {"manifest.json holds a string"},
                          [&] { acsdk::EngineDir(engine_dir(work, "root_string", "\"text\"")); });
  refused<EngineDirError>("manifest.json components: []", {"'components' is a list, expected an object"}, [&] {
    acsdk::EngineDir(engine_dir(work, "components_list", [](auto& m) { m["components"] = nlohmann::json::array(); }));
  });
  refused<EngineDirError>("manifest.json files: \"x\"", {"'files' is a string, expected an object"}, [&] {
    acsdk::EngineDir(engine_dir(work, "files_string", [](auto& m) { m["files"] = "x"; }));
  });

  // Geometry: typed, bounded above and below, integers read without a conversion out of range.
  auto geometry = [&](const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
    return [=] { acsdk::EngineDir(engine_dir(work, name, edit)).geometry(); };
  };
  refused<EngineDirError>("geometry: height 1e300", {"settings.height: expected an integer in [1, 8192], got 1e+300"},
                          geometry("height_1e300", [](auto& m) { m["settings"]["height"] = 1e300; }));
  refused<EngineDirError>("geometry: width 100000", {"settings.width: expected an integer in [1, 8192], got 100000"},
                          geometry("width_huge", [](auto& m) { m["settings"]["width"] = 100000; }));
  refused<EngineDirError>("geometry: height \"64\"", {"settings.height", "got \"64\""},
                          geometry("height_string", [](auto& m) { m["settings"]["height"] = "64"; }));
  refused<EngineDirError>("geometry: no width", {"settings.width", "got nothing"},
                          geometry("no_width", [](auto& m) { m["settings"].erase("width"); }));
  refused<EngineDirError>("geometry: latent_channels 2^40", {"model.latent_channels: expected an integer in [1, 256]"},
                          geometry("channels_huge", [](auto& m) { m["model"]["latent_channels"] = int64_t{1} << 40; }));
  refused<EngineDirError>("geometry: vae_scale_factor 0", {"model.vae_scale_factor"},
                          geometry("scale_zero", [](auto& m) { m["model"]["vae_scale_factor"] = 0; }));
  refused<EngineDirError>("geometry: vae_scaling_factor 0", {"model.vae_scaling_factor: expected a finite number in (0, 1000], got 0"},
                          geometry("scaling_zero", [](auto& m) { m["model"]["vae_scaling_factor"] = 0; }));
  refused<EngineDirError>("geometry: vae_scaling_factor -0.18", {"model.vae_scaling_factor", "got -0.18"},
                          geometry("scaling_negative", [](auto& m) { m["model"]["vae_scaling_factor"] = -0.18; }));
  refused<EngineDirError>("geometry: vae_scaling_factor 1e300", {"model.vae_scaling_factor"},
                          geometry("scaling_huge", [](auto& m) { m["model"]["vae_scaling_factor"] = 1e300; }));
  refused<EngineDirError>("geometry: side not a multiple of the scale", {"settings.height: expected a multiple of"},
                          geometry("height_60", [](auto& m) { m["settings"]["height"] = 60; }));
  refused<EngineDirError>("geometry: a latent under 16 values", {"a latent of at least 16 values", "got 4 x 1 x 1"},
                          geometry("latent_4", [](auto& m) { m["settings"] = {{"height", 8}, {"width", 8}}; }));
  bool geometry_ok = false;
  try {
    const acsdk::Geometry g = acsdk::EngineDir(engine_dir(work, "sound", [](auto&) {})).geometry();
    geometry_ok = g.height == 64 && g.width == 64 && g.scale_factor == 8 && g.channels == 4 && g.scaling_factor > 0.18;
  } catch (const std::exception& e) {
    std::printf("%s\n", e.what());
  }
  expect(geometry_ok, "geometry: a sound manifest reads");

  // Components: every field the runtime reads typed, where it is read (has_artifact included).
  refused<EngineDirError>("has_artifact: an artifact without its precision",
                          {"component 'vae_encoder' is malformed: artifacts[1].precision: expected a string"}, [&] {
                            acsdk::EngineDir dir(engine_dir(work, "artifact_no_precision", [](auto& m) {
                              m["components"]["vae_encoder"]["artifacts"].push_back({{"format", "onnx"}});
                            }));
                            dir.has_artifact("vae_encoder", "onnx", "fp16");
                          });
  refused<EngineDirError>("artifact: artifacts is an object", {"artifacts: expected a list"}, [&] {
    acsdk::EngineDir dir(engine_dir(work, "artifacts_object", [](auto& m) {
      m["components"]["vae_encoder"]["artifacts"] = nlohmann::json::object();
    }));
    dir.artifact("vae_encoder", "openvino");
  });
  refused<EngineDirError>("artifact: data_files [1]", {"artifacts[0].data_files: expected a list of paths"}, [&] {
    acsdk::EngineDir dir(engine_dir(work, "data_files_numbers", [](auto& m) {
      m["components"]["vae_encoder"]["artifacts"][0]["data_files"] = {1};
    }));
    dir.artifact("vae_encoder", "openvino");
  });
  refused<EngineDirError>("artifact: an output without a name", {"outputs[0].name: expected a string, got nothing"}, [&] {
    acsdk::EngineDir dir(engine_dir(work, "output_no_name", [](auto& m) {
      m["components"]["vae_encoder"]["outputs"] = {{{"dtype", "float32"}}};
    }));
    dir.artifact("vae_encoder", "openvino");
  });
  refused<EngineDirError>("artifact: outputs without latent_moments", {"outputs: expected one named 'latent_moments'"}, [&] {
    acsdk::EngineDir dir(engine_dir(work, "output_renamed", [](auto& m) {
      m["components"]["vae_encoder"]["outputs"][0]["name"] = "moments";
    }));
    dir.artifact("vae_encoder", "openvino");
  });
  refused<EngineDirError>("artifact: a shape of 1e300", {"inputs[0].shape: expected names or integers"}, [&] {
    acsdk::EngineDir dir(engine_dir(work, "shape_1e300", [](auto& m) {
      m["components"]["vae_encoder"]["inputs"][0]["shape"][1] = 1e300;
    }));
    dir.artifact("vae_encoder", "openvino");
  });
  refused<EngineDirError>("artifact: precision 16", {"precision: expected a string, got 16"}, [&] {
    acsdk::EngineDir dir(engine_dir(work, "precision_number", [](auto& m) {
      m["components"]["vae_encoder"]["precision"] = 16;
    }));
    dir.artifact("vae_encoder", "openvino");
  });
  acsdk::Artifact loose;  // one a library caller built by hand
  loose.outputs = {{{"name", 3}}};
  refused<EngineDirError>("output_names: a name that is a number", {"component 'unet': outputs[0].name: expected a string"},
                          [&] { acsdk::output_names("unet", loose); });

  // TensorRT's plan record (check_compatible reads it): wrongly typed fields named, absent ones "?".
  refused<EngineDirError>("plan record: tensorrt_version 10", {"tensorrt_version: expected a string, got 10"},
                          [] { acsdk::plan_record({{"tensorrt_version", 10}}, "unet"); });
  refused<EngineDirError>("plan record: verification \"yes\"", {"verification: expected an object"},
                          [] { acsdk::plan_record({{"verification", "yes"}}, "unet"); });
  refused<EngineDirError>("plan record: verification.passed 1", {"verification.passed: expected true or false"},
                          [] { acsdk::plan_record({{"verification", {{"passed", 1}}}}, "unet"); });
  const acsdk::PlanRecord plan = acsdk::plan_record(
      {{"tensorrt_version", "10.3.0"}, {"compute_capability", "8.7"}, {"verification", {{"passed", true}}}}, "unet");
  const acsdk::PlanRecord bare = acsdk::plan_record(nlohmann::json::object(), "unet");
  expect(plan.tensorrt_version == "10.3.0" && plan.compute_capability == "8.7" && plan.verified &&
             bare.tensorrt_version == "?" && !bare.verified,
         "plan record: a sound one reads, absent fields are '?'");
}

void schedulers() {
  using acsdk::EngineDirError;
  auto ddim = [](const std::function<void(nlohmann::json&)>& edit) {
    return [=] {
      nlohmann::json c = scheduler();
      edit(c);
      acsdk::DDIM d(c);
    };
  };
  refused<EngineDirError>("DDIM: trained_betas []", {"trained_betas: expected a list of num_train_timesteps (1000)"},
                          ddim([](auto& c) { c["trained_betas"] = nlohmann::json::array(); }));
  refused<EngineDirError>("DDIM: trained_betas [2.0] x 1000", {"trained_betas", "got 2.0"},
                          ddim([](auto& c) { c["trained_betas"] = std::vector<double>(1000, 2.0); }));
  refused<EngineDirError>("DDIM: trained_betas [1e300] x 1000", {"trained_betas", "got 1e+300"},
                          ddim([](auto& c) { c["trained_betas"] = std::vector<double>(1000, 1e300); }));
  refused<EngineDirError>("DDIM: num_train_timesteps -5", {"num_train_timesteps: expected an integer in [50, 100000]"},
                          ddim([](auto& c) { c["num_train_timesteps"] = -5; }));
  refused<EngineDirError>("DDIM: num_train_timesteps 1e300", {"num_train_timesteps", "got 1e+300"},
                          ddim([](auto& c) { c["num_train_timesteps"] = 1e300; }));
  refused<EngineDirError>("DDIM: num_train_timesteps 10^12", {"num_train_timesteps", "got 1000000000000"},
                          ddim([](auto& c) { c["num_train_timesteps"] = int64_t{1000000000000}; }));
  refused<EngineDirError>("DDIM: steps_offset 1000 (= T)", {"steps_offset: expected an integer in [0, 999], got 1000"},
                          ddim([](auto& c) { c["steps_offset"] = 1000; }));
  refused<EngineDirError>("DDIM: steps_offset -1", {"steps_offset", "got -1"}, ddim([](auto& c) { c["steps_offset"] = -1; }));
  refused<EngineDirError>("DDIM: steps_offset 100 (DDIM-50 past T)", {"steps_offset 100 puts DDIM-50's timestep 1080"},
                          ddim([](auto& c) { c["steps_offset"] = 100; }));
  // Found writing fuzz_scheduler (native/fuzz/corpus/scheduler/regression-trailing-57): DDIM-50 has a 51st timestep,
  // -1, which the samplers indexed (std::out_of_range, not a typed error).
  refused<EngineDirError>("DDIM: trailing spacing over 57 timesteps", {"timestep_spacing", "gives timestep -1"},
                          ddim([](auto& c) {
                            c["timestep_spacing"] = "trailing";
                            c["num_train_timesteps"] = 57;
                            c["steps_offset"] = 0;
                          }));
  refused<EngineDirError>("DDIM: clip_sample_range 1e300", {"clip_sample_range", "float32"},
                          ddim([](auto& c) { c["clip_sample_range"] = 1e300; }));
  refused<EngineDirError>("DDIM: clip_sample \"yes\"", {"clip_sample: expected true or false"},
                          ddim([](auto& c) { c["clip_sample"] = "yes"; }));
  refused<EngineDirError>("DDIM: beta_end 1.5", {"beta_end: expected a number in [0, 1), got 1.5"},
                          ddim([](auto& c) { c["beta_end"] = 1.5; }));
  refused<EngineDirError>("DDIM: beta_start \"small\"", {"beta_start: expected a finite number"},
                          ddim([](auto& c) { c["beta_start"] = "small"; }));
  refused<EngineDirError>("DDIM: timestep_spacing 3", {"timestep_spacing: expected a string, got 3"},
                          ddim([](auto& c) { c["timestep_spacing"] = 3; }));
  refused<EngineDirError>("DDIM: a config that is a list", {"expected a JSON object"}, [] { acsdk::DDIM d(nlohmann::json::array()); });
  bool sound = false;
  try {
    acsdk::DDIM d(scheduler());
    nlohmann::json trained = scheduler();
    trained["trained_betas"] = std::vector<double>(1000, 0.01);
    acsdk::DDIM t(trained);
    sound = d.alphas_cumprod().size() == 1000 && t.alphas_cumprod().size() == 1000 && !d.timesteps(50, 0.7).empty();
  } catch (const std::exception& e) {
    std::printf("%s\n", e.what());
  }
  expect(sound, "DDIM: SD's config and 1000 trained betas read");

  refused<acsdk::Error>("torch randn of 4 values", {"engines: a latent of 4 values"},
                        [] { acsdk::TorchGenerator(0).randn(4); });
}

void banks_and_safetensors(const std::string& work) {
  const std::string bank = work + "/bank_root_array";
  fresh_dir(bank);
  write_text(bank + "/bank.json", "[1, 2]");
  write_text(bank + "/bank.safetensors", std::string(8, '\0'));
  refused<acsdk::InputError>("bank.json [1, 2]", {"bank: expected a bank.json written by `acsdk prepare` (a JSON object)"},
                             [&] { acsdk::load_bank(bank, "0"); });
  auto header = [](const std::string& json) {
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((json.size() >> (8 * i)) & 0xff);
    return bytes + json + std::string(16, '\0');
  };
  refused<acsdk::InputError>("safetensors: a shape of 1e300", {"has shape [1e+300], not integers"}, [&] {
    acsdk::parse_safetensors(header(R"({"t": {"dtype": "F32", "shape": [1e300], "data_offsets": [0, 4]}})"), "x", "bank");
  });
  refused<acsdk::InputError>("safetensors: data_offsets [-1, 4]", {"has data_offsets [-1,4], not integers >= 0"}, [&] {
    acsdk::parse_safetensors(header(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [-1, 4]}})"), "x", "bank");
  });
  refused<acsdk::InputError>("safetensors: a header that is a list", {"header is not a JSON object"},
                             [&] { acsdk::parse_safetensors(header("[1, 2]"), "x", "bank"); });
}

void writes(const std::string& work) {
  const std::string dir = work + "/writes";
  fresh_dir(dir);

  // path + ".tmp-" + 16 hex past NAME_MAX: the temporary's name is shortened, the target keeps its own.
  const std::string long_name = dir + "/" + std::string(250, 'n') + ".png";
  bool long_ok = false;
  std::string why;
  try {
    acsdk::write_file_atomic(long_name, "long", "out");
    long_ok = read_text(long_name) == "long";
  } catch (const std::exception& e) {
    why = e.what();
  }
  expect(long_ok && temporaries(dir) == 0, "a 254-byte file name (NAME_MAX 255) is written", why);

  // write() interrupted by a signal before it wrote anything: retried, the file complete.
  eintr_next_write = true;
  why.clear();
  bool eintr_ok = false;
  try {
    acsdk::write_file_atomic(dir + "/eintr.png", "after EINTR", "out");
    eintr_ok = read_text(dir + "/eintr.png") == "after EINTR" && !eintr_next_write;
  } catch (const std::exception& e) {
    why = e.what();
  }
  eintr_next_write = false;
  expect(eintr_ok, "write() returning EINTR is retried", why);

  // close() failing (NFS reports a failed write-back there): the write fails, nothing is left.
  eio_next_close = true;
  refused<acsdk::InputError>("close() failing fails the write", {"out: expected a writable path", "close failed"},
                             [&] { acsdk::write_file_atomic(dir + "/close.png", "x", "out"); });
  eio_next_close = false;
  expect(mode_of(dir + "/close.png") == -1 && temporaries(dir) == 0, "  ... and leaves no file, no temporary");

  // The rename is made durable: the directory is fsynced after it.
  const int before = directory_fsyncs;
  acsdk::write_file_atomic(dir + "/durable.png", "x", "out");
  expect(directory_fsyncs > before, "the directory is fsynced after the rename",
         std::to_string(directory_fsyncs - before) + " directory fsync(s)");

  // A directory at the target: refused when staging, before anything is written (was: the temporary took the
  // directory's mode, then rename failed).
  const std::string target_dir = dir + "/a_dir.png";
  ::mkdir(target_dir.c_str(), 0700);
  refused<acsdk::InputError>("a directory as the target is refused when staging", {"out: expected a file path", "a directory"},
                             [&] { acsdk::StagedFile staged(target_dir, "x", "out"); });
  refused<acsdk::InputError>("check_output_path refuses a directory", {"out: expected a file path"},
                             [&] { acsdk::check_output_path(target_dir, "out"); });
  refused<acsdk::InputError>("check_output_path refuses a missing directory", {"out: expected a writable path", "no directory"},
                             [&] { acsdk::check_output_path(dir + "/absent/x.png", "out"); });
  expect(is_dir(target_dir) && temporaries(dir) == 0, "  ... the directory stays, no temporary");

  // Both or neither: the label cannot be placed (a directory appeared at its path after staging), so the image
  // renamed first is put back: a replaced file restored with its mode, a created one removed.
  const std::string image = dir + "/image.png", label = dir + "/label.png", fresh = dir + "/fresh.png";
  write_text(image, "old image");
  ::chmod(image.c_str(), 0640);
  {
    acsdk::StagedFile a(image, "new image", "out"), c(fresh, "new fresh", "out"), b(label, "new label", "mask-out");
    ::mkdir(label.c_str(), 0755);
    refused<acsdk::InputError>("commit_all: the second file cannot be placed", {"mask-out: expected a file path"},
                               [&] { acsdk::commit_all({&a, &c, &b}); });
  }
  expect(read_text(image) == "old image" && mode_of(image) == 0640 && mode_of(fresh) == -1 && is_dir(label) &&
             temporaries(dir) == 0,
         "  ... the first put back as it was, the created one removed, no temporary",
         "image '" + read_text(image) + "' mode " + std::to_string(mode_of(image)) + ", fresh " + read_text(fresh));
  {
    acsdk::StagedFile a(image, "new image", "out"), b(dir + "/label2.png", "new label", "mask-out");
    acsdk::commit_all({&a, &b});
  }
  expect(read_text(image) == "new image" && mode_of(image) == 0640 && read_text(dir + "/label2.png") == "new label" &&
             temporaries(dir) == 0,
         "commit_all: both placed, the replaced file's mode kept, no temporary");

  // The issue's case: --mask-out is another user's file in a sticky directory (rename: EPERM). As nobody: the
  // output check refuses it up front, and a commit that tries anyway leaves --out as it was.
  char tmpl[] = "/tmp/acsdk-sticky-XXXXXX";
  if (!::mkdtemp(tmpl)) std::exit(2);
  const std::string sticky = tmpl;
  ::chmod(sticky.c_str(), 01777);
  const std::string theirs = sticky + "/label.png";
  write_text(theirs, "someone else's");
  ::chmod(theirs.c_str(), 0644);
  bool passed = false;
  const bool ran = as_nobody(
      [&] {
        bool ok = true;
        try {
          acsdk::check_output_path(theirs, "mask-out");
          ok = false;
          std::printf("  check_output_path accepted another user's file in a sticky directory\n");
        } catch (const acsdk::InputError& e) {
          ok = std::string(e.what()).find("another user's file in the sticky directory") != std::string::npos;
          std::printf("  %s\n", e.what());
        }
        const std::string out = sticky + "/out.png";
        try {
          acsdk::StagedFile a(out, "image", "out"), b(theirs, "label", "mask-out");
          acsdk::commit_all({&a, &b});
          ok = false;
        } catch (const acsdk::InputError& e) {
          std::printf("  %s\n", e.what());
          ok = ok && std::string(e.what()).rfind("mask-out: expected a writable path", 0) == 0;
        }
        return ok && mode_of(out) == -1 && read_text(theirs) == "someone else's" && temporaries(sticky) == 0;
      },
      passed);
  if (ran) expect(passed, "sticky dir, another user's label: refused up front; commit leaves no --out");
  else std::printf("%-66s skipped (not root: cannot make another user's file)\n", "sticky dir, another user's label");

  // A directory this user may not search (EACCES from stat): a typed error naming the argument, not
  // std::filesystem's exception.
  const std::string locked = sticky + "/locked";
  ::mkdir(locked.c_str(), 0700);
  ::mkdir((locked + "/engines").c_str(), 0755);
  write_text(locked + "/engines/manifest.json", manifest().dump());
  ::mkdir((locked + "/bank").c_str(), 0755);
  auto unreadable = [&] {
    bool ok = true;
    for (const auto& [what, body] : std::vector<std::pair<std::string, std::function<void()>>>{
             {"engines", [&] { acsdk::EngineDir(locked + "/engines"); }},
             {"bank", [&] { acsdk::load_bank(locked + "/bank", "0"); }}}) {
      try {
        body();
        ok = false;
      } catch (const acsdk::InputError& e) {
        std::printf("  %s\n", e.what());
        ok = ok && std::string(e.what()).rfind(what + ": expected a path this user can read", 0) == 0 &&
             std::string(e.what()).find("Permission denied") != std::string::npos;
      } catch (const std::exception& e) {
        std::printf("  another exception: %s\n", e.what());
        ok = false;
      }
    }
    return ok;
  };
  if (::geteuid() == 0) {
    as_nobody(unreadable, passed);
  } else {
    ::chmod(locked.c_str(), 0);
    passed = unreadable();
    ::chmod(locked.c_str(), 0700);
  }
  expect(passed, "EACCES on the engine dir and the bank: InputError naming each");
  const std::string cleanup = "rm -rf '" + sticky + "'";
  if (std::system(cleanup.c_str()) != 0) std::printf("could not remove %s\n", sticky.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: test_failures WORK_DIR\n");
    return 2;
  }
  const std::string work = std::string(argv[1]) + "/failures_library";
  fresh_dir(work);
  manifests(work);
  schedulers();
  banks_and_safetensors(work);
  writes(work);
  return failures == 0 ? 0 : 1;
}
