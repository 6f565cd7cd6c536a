// Golden-vector comparison for the native tests, NaN-safe: std::max(worst, d) drops a NaN d (every comparison with
// NaN is false), so an all-NaN output would pass at tolerance 0. Here a NaN on either side makes the error NaN, which
// no tolerance accepts (`within` is `error <= tol`, false for NaN); an infinity equal to the expected one is no error.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace acsdk_test {

// |got - want|, or relative to max(1e-12, |want|); 0 where they are equal (infinities of one sign included), NaN
// where either is NaN.
inline double error_of(double got, double want, bool relative = false) {
  if (std::isnan(got) || std::isnan(want)) return std::numeric_limits<double>::quiet_NaN();
  if (got == want) return 0.0;
  double d = std::abs(got - want);
  if (relative) d /= std::max(1e-12, std::abs(want));
  return d;
}

// The larger of two errors, NaN when either is NaN (unlike std::max, which returns its first argument then).
inline double worse(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<double>::quiet_NaN();
  return std::max(a, b);
}

// The largest error over two vectors: infinity when their sizes differ, NaN when any value is NaN.
template <typename A, typename B>
double max_error(const std::vector<A>& got, const std::vector<B>& want, bool relative = false) {
  if (got.size() != want.size()) return std::numeric_limits<double>::infinity();
  double worst = 0.0;
  for (size_t i = 0; i < got.size(); ++i)
    worst = worse(worst, error_of(static_cast<double>(got[i]), static_cast<double>(want[i]), relative));
  return worst;
}

inline bool within(double error, double tol) { return error <= tol; }  // false for NaN

}  // namespace acsdk_test
