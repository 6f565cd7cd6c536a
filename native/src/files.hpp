// Whole-file reads with typed errors, atomic writes (a temporary beside the target, fsync, rename), sha256.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "file_bytes.hpp"

namespace acsdk {

// The file's bytes, read once into a buffer of the size fstat gives (no second copy); an InputError naming
// `argument` when it cannot be read.
std::string read_file(const std::string& path, const std::string& argument);

// What a path names (symlinks followed). InputError naming `argument` when it cannot be looked at (a directory on
// the way that this user may not search: EACCES; a symlink loop; ...), never std::filesystem's exception.
enum class PathKind { kMissing, kFile, kDirectory, kOther };
PathKind path_kind(const std::string& path, const std::string& argument);

// Checks, before any work, that an output can be written to `path`: not a directory, in an existing directory this
// user may write, and not another user's file in a sticky directory (which rename may not replace). InputError
// naming `argument` otherwise. (The commit itself still reports what this cannot foresee.)
void check_output_path(const std::string& path, const std::string& argument);

// `bytes` written in full (fsync'd) to an unguessable temporary beside `path`; commit() renames it over `path` and
// fsyncs the directory. Uncommitted, the temporary is removed: several outputs are staged first and committed
// together (commit_all), so a failure leaves none of them behind.
class StagedFile {
 public:
  StagedFile(const std::string& path, const std::string& bytes, const std::string& argument);
  StagedFile(const StagedFile&) = delete;
  StagedFile& operator=(const StagedFile&) = delete;
  ~StagedFile();
  void commit();

  const std::string& path() const { return path_; }

 private:
  friend void commit_all(const std::vector<StagedFile*>& files);
  enum class Placed { kNo, kCreated, kExchanged, kAside };
  void place();         // into `path`, remembering how to undo it; InputError (and nothing changed) on failure
  std::string undo();   // back to how `path` was before place(); "" or what went wrong
  void finish();        // drops what place() kept for undo (the replaced file)

  std::string path_, tmp_, argument_, aside_;
  Placed placed_ = Placed::kNo;
};

// Every staged file renamed into place, or none: when one cannot be (a directory appeared at its path, another
// user's file in a sticky directory, a full disk at the directory's fsync), those already placed are put back as
// they were (a replaced file restored, a created one removed) and the error is thrown. Each directory is fsynced.
void commit_all(const std::vector<StagedFile*>& files);

// Write `bytes` to a temporary file beside `path`, fsync it and rename it over `path`: never half-written.
void write_file_atomic(const std::string& path, const std::string& bytes, const std::string& argument);

// Lowercase hex sha256 of bytes in memory (a string, a mapping) / of a file's contents (streamed; `stamp`, when
// given, receives the stamp of the very file read).
std::string sha256_hex(std::string_view bytes);
std::string sha256_file(const std::string& path, const std::string& argument, FileStamp* stamp = nullptr);

}  // namespace acsdk
