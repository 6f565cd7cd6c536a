#include "cpu.hpp"

#include <sys/utsname.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>

namespace acsdk {
namespace {

bool is_x86(const std::string& machine) {
  return machine == "x86_64" || machine == "amd64" || machine == "AMD64" || machine == "i386" || machine == "i686";
}

std::string this_machine() {
  utsname u{};
  return ::uname(&u) == 0 ? std::string(u.machine) : std::string("unknown");
}

std::set<std::string> cpu_flags() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) == 0 || line.rfind("Features", 0) == 0) {
      std::istringstream words(line.substr(line.find(':') + 1));
      return {std::istream_iterator<std::string>(words), std::istream_iterator<std::string>()};
    }
  }
  return {};
}

// VNNI (or AMX) present, and not capped below it by oneDNN's ISA limit.
bool int8_accumulates_exactly() {
  const auto flags = cpu_flags();
  const bool vnni = flags.count("avx512_vnni") || flags.count("avx_vnni") || flags.count("amx_int8");
  std::string cap = std::getenv("ONEDNN_MAX_CPU_ISA") ? std::getenv("ONEDNN_MAX_CPU_ISA") : "";
  std::transform(cap.begin(), cap.end(), cap.begin(), [](unsigned char c) { return std::toupper(c); });
  const bool allowed = cap.empty() || cap == "ALL" || cap == "AVX2_VNNI" || cap == "AVX2_VNNI_2" ||
                       cap == "AVX512_CORE_VNNI" || cap == "AVX512_CORE_BF16" || cap == "AVX512_CORE_FP16" ||
                       cap.rfind("AVX512_CORE_AMX", 0) == 0 || cap.rfind("AVX10", 0) == 0;
  return vnni && allowed;
}

}  // namespace

bool int8_gate_holds_here(const nlohmann::json& artifact, std::string* why) {
  // A dir from before the build CPU was recorded: gated on x86 with VNNI, the only kind its gate passed on.
  const nlohmann::json built = artifact.contains("build_cpu") && artifact["build_cpu"].is_object()
                                   ? artifact["build_cpu"]
                                   : nlohmann::json{{"machine", "x86_64"}, {"int8_accumulates_exactly", true}};
  const std::string machine = built.contains("machine") && built["machine"].is_string() ? built["machine"].get<std::string>() : "";
  const std::string here = this_machine();
  if (is_x86(machine) != is_x86(here) || (!is_x86(here) && machine != here)) {
    *why = "its INT8 gate was measured on " + machine + ", this CPU is " + here;
    return false;
  }
  const auto fix = artifact.find("overflow_fix");
  if (!is_x86(here) || (fix != artifact.end() && fix->is_string() && *fix == "enable")) return true;
  const bool exact_here = int8_accumulates_exactly();
  const auto exact = built.find("int8_accumulates_exactly");
  const bool built_exact = exact != built.end() && exact->is_boolean() && exact->get<bool>();
  if (built_exact == exact_here) return true;
  *why = std::string("it was gated on an x86 CPU ") + (exact_here ? "without" : "with") +
         " VNNI and quantized without the overflow fix; this CPU " + (exact_here ? "has" : "lacks") + " VNNI" +
         (exact_here ? "" : " (its INT8 products saturate)") + ": rebuild with --int8 here";
  return false;
}

double peak_rss_mib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return -1.0;
}

bool reset_peak_rss() {
  std::ofstream refs("/proc/self/clear_refs");
  refs << "5";
  return static_cast<bool>(refs.flush());
}

}  // namespace acsdk
