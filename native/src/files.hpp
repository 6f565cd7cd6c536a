// Whole-file reads with typed errors, atomic writes (a temporary beside the target, fsync, rename), sha256.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace acsdk {

// The file's bytes, read once into a buffer of the size fstat gives (no second copy); an InputError naming
// `argument` when it cannot be read.
std::string read_file(const std::string& path, const std::string& argument);

// A file's bytes, read-only, for as long as this object lives: mapped (mmap, PROT_READ) where the file can be, so
// that they are the page cache's pages (shared, reclaimable, read in as touched), not this process's own memory; read
// into memory otherwise (an empty file, a pipe, a filesystem that cannot map). Weights handed to a backend from here
// stay file-backed for the engine's life. The mapping shows the file's inode as it is: an engine dir is replaced
// whole (export.build writes a new dir and renames it) and the mapping keeps the old inode, but a file rewritten or
// truncated in place while mapped changes what is read (or ends the process with SIGBUS past its new end).
class FileBytes {
 public:
  // InputError naming `argument` when the file cannot be opened or read.
  static std::shared_ptr<const FileBytes> open(const std::string& path, const std::string& argument);
  explicit FileBytes(std::string bytes);  // bytes already in memory, held here
  FileBytes(const FileBytes&) = delete;
  FileBytes& operator=(const FileBytes&) = delete;
  ~FileBytes();

  const char* data() const { return data_; }
  size_t size() const { return size_; }
  std::string_view view() const { return {data_, size_}; }
  bool mapped() const { return mapping_ != nullptr; }

 private:
  FileBytes() = default;
  void* mapping_ = nullptr;  // munmap'd by the destructor
  const char* data_ = nullptr;
  size_t size_ = 0;
  std::string owned_;  // where nothing is mapped
};

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

// What tells one file's contents from another's without reading them: device, inode, size, modification time.
struct FileStamp {
  uint64_t device = 0, inode = 0;
  int64_t size = -1, mtime_ns = 0;
  bool operator==(const FileStamp& o) const {
    return device == o.device && inode == o.inode && size == o.size && mtime_ns == o.mtime_ns;
  }
  bool operator!=(const FileStamp& o) const { return !(*this == o); }
};
// The stamp of what `path` names now (symlinks followed); size -1 when it cannot be looked at.
FileStamp file_stamp(const std::string& path);

// Lowercase hex sha256 of bytes in memory (a string, a mapping) / of a file's contents (streamed; `stamp`, when
// given, receives the stamp of the very file read).
std::string sha256_hex(std::string_view bytes);
std::string sha256_file(const std::string& path, const std::string& argument, FileStamp* stamp = nullptr);

}  // namespace acsdk
