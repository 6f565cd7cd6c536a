// Typed errors, as in the Python SDK: each names the argument, what was expected and what came.
#pragma once

#include <stdexcept>
#include <string>

namespace acsdk {

// Every error names the argument (flag) it concerns first, so the CLI's one-line message says what to fix.
struct Error : std::runtime_error {
  std::string argument;
  Error(const std::string& arg, const std::string& message) : std::runtime_error(arg + ": " + message), argument(arg) {}
};

// A caller's argument (a flag, a file) is not what the runtime accepts.
struct InputError : Error {
  InputError(const std::string& arg, const std::string& expected, const std::string& got)
      : Error(arg, "expected " + expected + ", got " + got) {}
};

// A file differs from the sha256 its manifest recorded.
struct IntegrityError : Error {
  using Error::Error;
};

// The engine dir is missing, unreadable or of another schema (always the --engines argument).
struct EngineDirError : Error {
  explicit EngineDirError(const std::string& message) : Error("engines", message) {}
};

// A backend or device is not usable here.
struct BackendError : Error {
  using Error::Error;
};

}  // namespace acsdk
