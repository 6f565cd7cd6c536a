// A file's bytes mapped read-only (FileBytes) and what identifies a file's contents (FileStamp): what an engine
// dir's Artifact holds (engine_dir.hpp). Defined in files.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace acsdk {

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

}  // namespace acsdk
