// Typed reads of JSON values from files nobody vouched for (manifest.json, scheduler_config.json, bank.json, a
// safetensors header). nlohmann's get<int64_t>() of 1e300 or get<float>() of 1e300 is a float-to-int (or double to
// float) conversion out of range: undefined behaviour, never an error. These read the number as JSON holds it and
// return std::nullopt (or throw what the caller's `fail` makes) when it is not an integer / finite number in range.
// Internal: included by the library's .cpp files only.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace acsdk {
namespace json_read {

// The integer a JSON number holds, when it is one within [lo, hi] (an integral float such as 1e3 counts; 1.5,
// 1e300, -1 for an unsigned range, a string or a bool do not).
inline std::optional<int64_t> integer(const nlohmann::json& v, int64_t lo, int64_t hi) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    const auto i = static_cast<int64_t>(u);
    return i >= lo && i <= hi ? std::optional<int64_t>(i) : std::nullopt;
  }
  if (v.is_number_integer()) {
    const int64_t i = v.get<int64_t>();
    return i >= lo && i <= hi ? std::optional<int64_t>(i) : std::nullopt;
  }
  if (v.is_number_float()) {
    const double d = v.get<double>();
    // Converted only where int64_t holds it ([-2^63, 2^63), both exact in double), then compared as an integer.
    if (!std::isfinite(d) || d != std::floor(d) || d < -9223372036854775808.0 || d >= 9223372036854775808.0)
      return std::nullopt;
    const auto i = static_cast<int64_t>(d);
    return i >= lo && i <= hi ? std::optional<int64_t>(i) : std::nullopt;
  }
  return std::nullopt;
}

// A finite JSON number within [lo, hi] as a double.
inline std::optional<double> real(const nlohmann::json& v, double lo, double hi) {
  if (!v.is_number() || v.is_boolean()) return std::nullopt;
  const double d = v.get<double>();
  return std::isfinite(d) && d >= lo && d <= hi ? std::optional<double>(d) : std::nullopt;
}

// "[lo, hi]" for messages.
inline std::string range(int64_t lo, int64_t hi) { return "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]"; }

// A value as it appears in the file, shortened for a one-line message.
inline std::string shown(const nlohmann::json& v) {
  std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return s.size() > 60 ? s.substr(0, 57) + "..." : s;
}

}  // namespace json_read
}  // namespace acsdk
