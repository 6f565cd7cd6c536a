// Whether an INT8 artifact's build-time quality gate holds on this CPU (the rule of runtime/cpu.py), and this
// process's peak resident memory (what benchmarks record per stage, as runtime/process.py does).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace acsdk {

// x86 without VNNI adds pairs of u8 x s8 products in a saturating int16; an INT8 model gated on a VNNI CPU holds
// there only when its weights leave the headroom ("overflow_fix": "enable"). Honours ONEDNN_MAX_CPU_ISA, which
// caps the kernels OpenVINO's CPU plugin uses. False with `why` set where the gate does not cover this CPU.
bool int8_gate_holds_here(const nlohmann::json& artifact, std::string* why);

// The high-water mark of resident memory (VmHWM) in MiB, -1 where /proc is absent; reset_peak_rss starts a new one
// (Linux: "5" to /proc/self/clear_refs), false where the OS cannot.
double peak_rss_mib();
bool reset_peak_rss();

}  // namespace acsdk
