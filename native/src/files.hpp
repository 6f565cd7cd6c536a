// Whole-file reads with typed errors, atomic writes (a temporary beside the target, fsync, rename), sha256.
#pragma once

#include <string>

namespace acsdk {

// The file's bytes; an InputError naming `argument` when it cannot be read.
std::string read_file(const std::string& path, const std::string& argument);

// `bytes` written in full (fsync'd) to an unguessable temporary beside `path`; commit() renames it over `path`.
// Uncommitted, the temporary is removed: several outputs are staged first and committed together, so a failure
// before the last commit leaves none of them behind.
class StagedFile {
 public:
  StagedFile(const std::string& path, const std::string& bytes, const std::string& argument);
  StagedFile(const StagedFile&) = delete;
  StagedFile& operator=(const StagedFile&) = delete;
  ~StagedFile();
  void commit();

 private:
  std::string path_, tmp_, argument_;
};

// Write `bytes` to a temporary file beside `path`, fsync it and rename it over `path`: never half-written.
void write_file_atomic(const std::string& path, const std::string& bytes, const std::string& argument);

// Lowercase hex sha256 of a byte string / of a file's contents.
std::string sha256_hex(const std::string& bytes);
std::string sha256_file(const std::string& path, const std::string& argument);

}  // namespace acsdk
