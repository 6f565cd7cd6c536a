// The native tests' one way to report a check: a line per check ("ok" or "FAIL" with why), failures counted for
// main's exit status, and `refused` for "this must throw E, saying `needle`" (any other exception is a failure).
#pragma once

#include <cstdio>
#include <exception>
#include <functional>
#include <string>

namespace acsdk_test {

inline int failures = 0;

inline void expect(bool ok, const std::string& what, const std::string& detail = "") {
  failures += !ok;
  std::printf("%-72s %s%s%s\n", what.c_str(), ok ? "ok" : "FAIL", detail.empty() ? "" : ": ", detail.c_str());
}

// `f` throws an E whose message contains `needle`.
template <typename E>
void refused(const std::string& what, const std::string& needle, const std::function<void()>& f) {
  std::string why = "accepted";
  bool ok = false;
  try {
    f();
  } catch (const E& e) {
    why = e.what();
    ok = why.find(needle) != std::string::npos;
  } catch (const std::exception& e) {
    why = std::string("another exception: ") + e.what();
  }
  expect(ok, what, why);
}

}  // namespace acsdk_test
