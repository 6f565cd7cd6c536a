// What the fuzz targets share: a scratch directory for the parsers that read from a path, and the rule every target
// checks. A parser of bytes nobody vouched for may refuse them only with a typed acsdk::Error (the one line the CLI
// prints); anything else escaping (a JSON library's exception, std::out_of_range, std::bad_alloc) reaches libFuzzer
// as an uncaught exception and is reported as a crash, as are the sanitizers' findings (ASan, UBSan, LeakSanitizer).
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace fuzz {

// A fresh directory under $TMPDIR (or /tmp) for this process, removed at exit.
inline const std::string& scratch() {
  static const std::string dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/acsdk-fuzz-XXXXXX";
    if (!::mkdtemp(pattern.data())) {
      std::perror("acsdk fuzz: mkdtemp");
      std::abort();
    }
    static const std::string removed = pattern;
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(removed, ignored);
    });
    return pattern;
  }();
  return dir;
}

// `bytes` as the whole content of `path` (directories made on the way); aborts when it cannot be written, which is
// the harness's failure, not the parser's.
inline void put(const std::string& path, const void* bytes, size_t size) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  const auto* p = static_cast<const char*>(bytes);
  size_t left = size;
  while (fd >= 0 && left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n <= 0) break;
    p += n;
    left -= static_cast<size_t>(n);
  }
  if (fd < 0 || left != 0 || ::close(fd) != 0) {
    std::perror(("acsdk fuzz: writing " + path).c_str());
    std::abort();
  }
}
inline void put(const std::string& path, const std::string& bytes) { put(path, bytes.data(), bytes.size()); }

// A property the parser promises failed: report it and abort (libFuzzer saves the input as a crash).
[[noreturn]] inline void broken(const std::string& what) {
  std::fprintf(stderr, "acsdk fuzz: property violated: %s\n", what.c_str());
  std::abort();
}

}  // namespace fuzz
