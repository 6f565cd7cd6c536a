#include "files.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "errors.hpp"

namespace acsdk {

namespace {

InputError unreadable(const std::string& path, const std::string& argument, const std::string& why) {
  return InputError(argument, "a readable file", "'" + path + "' (" + why + ")");
}

// The descriptor of `path` opened for reading, closed when it goes out of scope.
struct ReadFd {
  int fd = -1;
  ReadFd(const std::string& path, const std::string& argument) {
    do fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) throw unreadable(path, argument, std::strerror(errno));
  }
  ReadFd(const ReadFd&) = delete;
  ReadFd& operator=(const ReadFd&) = delete;
  ~ReadFd() { ::close(fd); }
};

// Everything from `fd` into `out` (sized by fstat: no copy through a stream), shrunk to what a shrinking file gave.
// Once it is full, a small read says whether the file ends there (no reallocation, which would copy it); what a
// growing file or a pipe still gives is appended.
void read_all(int fd, std::string& out, const std::string& path, const std::string& argument) {
  size_t done = 0;
  char more[1 << 16];
  for (;;) {
    const bool full = done == out.size();
    const ssize_t n = full ? ::read(fd, more, sizeof more) : ::read(fd, &out[done], out.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw unreadable(path, argument, std::string("read failed: ") + std::strerror(errno));
    if (n == 0) break;
    if (full) out.append(more, static_cast<size_t>(n));
    done += static_cast<size_t>(n);
  }
  out.resize(done);
}

}  // namespace

std::string read_file(const std::string& path, const std::string& argument) {
  const ReadFd file(path, argument);
  struct stat st {};
  if (::fstat(file.fd, &st) != 0) throw unreadable(path, argument, std::strerror(errno));
  if (S_ISDIR(st.st_mode)) throw unreadable(path, argument, "a directory");
  std::string out;
  out.resize(S_ISREG(st.st_mode) ? static_cast<size_t>(st.st_size) : 0);
  read_all(file.fd, out, path, argument);
  return out;
}

FileBytes::FileBytes(std::string bytes) : owned_(std::move(bytes)) {
  data_ = owned_.data();
  size_ = owned_.size();
}

FileBytes::~FileBytes() {
  if (mapping_) ::munmap(mapping_, size_);
}

std::shared_ptr<const FileBytes> FileBytes::open(const std::string& path, const std::string& argument) {
  const ReadFd file(path, argument);
  struct stat st {};
  if (::fstat(file.fd, &st) != 0) throw unreadable(path, argument, std::strerror(errno));
  if (S_ISDIR(st.st_mode)) throw unreadable(path, argument, "a directory");
  if (S_ISREG(st.st_mode) && st.st_size > 0 &&
      static_cast<uint64_t>(st.st_size) <= std::numeric_limits<size_t>::max()) {
    const size_t size = static_cast<size_t>(st.st_size);
    void* mapping = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, file.fd, 0);
    if (mapping != MAP_FAILED) {
      std::shared_ptr<FileBytes> out(new FileBytes());
      out->mapping_ = mapping;
      out->data_ = static_cast<const char*>(mapping);
      out->size_ = size;
      return out;
    }
  }
  std::string bytes;  // not mappable: read, as read_file does
  bytes.resize(S_ISREG(st.st_mode) ? static_cast<size_t>(st.st_size) : 0);
  read_all(file.fd, bytes, path, argument);
  return std::make_shared<const FileBytes>(std::move(bytes));
}

PathKind path_kind(const std::string& path, const std::string& argument) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return PathKind::kMissing;
    throw InputError(argument, "a path this user can read", "'" + path + "' (" + std::strerror(errno) + ")");
  }
  return S_ISREG(st.st_mode) ? PathKind::kFile : S_ISDIR(st.st_mode) ? PathKind::kDirectory : PathKind::kOther;
}

namespace {

// "dir/" of "dir/name" ("" for a bare name), and "name".
std::pair<std::string, std::string> split(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return {"", path};
  return {path.substr(0, slash + 1), path.substr(slash + 1)};
}

std::string directory_of(const std::string& path) {  // "." for a bare name, "/" for a name in the root
  const std::string dir = split(path).first;
  return dir.empty() ? "." : dir.size() == 1 ? dir : dir.substr(0, dir.size() - 1);
}

// A fresh name beside `path` that no other process can guess: the file's name (shortened where the directory's
// NAME_MAX would not hold it with the suffix) + `tag` + 16 hex digits.
std::string beside(const std::string& path, const char* tag) {
  static thread_local std::random_device entropy;
  const auto [dir, name] = split(path);
  long name_max = ::pathconf(directory_of(path).c_str(), _PC_NAME_MAX);
  if (name_max <= 0) name_max = 255;  // unknown: NAME_MAX of every Linux filesystem
  name_max = std::max(name_max, static_cast<long>(std::strlen(tag) + 17));
  char suffix[17];
  std::snprintf(suffix, sizeof suffix, "%08x%08x", entropy(), entropy());
  const size_t room = static_cast<size_t>(name_max) - std::strlen(tag) - 16;
  return dir + name.substr(0, std::min(name.size(), room)) + tag + suffix;
}

// A new file beside `path` created with O_EXCL (never an existing file); -1 and errno on failure.
int create_temporary(const std::string& path, std::string& tmp) {
  for (int attempt = 0; attempt < 16; ++attempt) {
    tmp = beside(path, ".tmp-");
    // 0666 less the umask: the mode a plain open() would give (mkstemp's 0600 would hide outputs from other accounts)
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0 || errno != EEXIST) return fd;
  }
  return -1;
}

InputError not_a_file(const std::string& path, const std::string& argument) {
  return InputError(argument, "a file path", "'" + path + "', a directory");
}

// fsync of a directory, so that a rename in it survives a power cut. Filesystems that cannot sync a directory
// (EINVAL) have nothing more to offer; any other failure is one.
int sync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno;
  int err = ::fsync(fd) == 0 || errno == EINVAL ? 0 : errno;
  if (::close(fd) != 0 && err == 0 && errno != EINTR) err = errno;
  return err;
}

}  // namespace

void check_output_path(const std::string& path, const std::string& argument) {
  const std::string dir = directory_of(path);
  const std::string name = split(path).second;
  if (name.empty() || name == "." || name == ".." || path_kind(path, argument) == PathKind::kDirectory)
    throw not_a_file(path, argument);
  struct stat parent {};
  if (::stat(dir.c_str(), &parent) != 0 || !S_ISDIR(parent.st_mode))
    throw InputError(argument, "a writable path", "'" + path + "' (no directory '" + dir + "')");
  if (::faccessat(AT_FDCWD, dir.c_str(), W_OK | X_OK, AT_EACCESS) != 0)
    throw InputError(argument, "a writable path", "'" + path + "' (directory '" + dir + "': " + std::strerror(errno) + ")");
  struct stat existing {};
  const uid_t me = ::geteuid();
  if ((parent.st_mode & S_ISVTX) && me != 0 && parent.st_uid != me && ::lstat(path.c_str(), &existing) == 0 &&
      existing.st_uid != me)
    throw InputError(argument, "a path this user may replace",
                     "'" + path + "' (another user's file in the sticky directory '" + dir + "')");
}

StagedFile::StagedFile(const std::string& path, const std::string& bytes, const std::string& argument)
    : path_(path), argument_(argument) {
  struct stat existing {};
  const bool replaces = ::lstat(path.c_str(), &existing) == 0;
  if ((replaces && S_ISDIR(existing.st_mode)) || split(path).second.empty()) throw not_a_file(path, argument);
  int fd = create_temporary(path, tmp_);
  if (fd < 0) {
    const std::string why = std::strerror(errno);
    tmp_.clear();  // never unlink a name this call did not create
    throw InputError(argument, "a writable path", "'" + path + "' (cannot create a file beside it: " + why + ")");
  }
  auto fail = [&](const std::string& what) {  // the destructor does not run for a constructor that throws
    const std::string why = std::strerror(errno);
    if (fd >= 0) ::close(fd);
    ::unlink(tmp_.c_str());
    tmp_.clear();
    return InputError(argument, "a writable path", "'" + path + "' (" + what + ": " + why + ")");
  };
  // A replaced regular file keeps its mode (a symlink's, a device's or a directory's mode is not a file's)
  if (replaces && S_ISREG(existing.st_mode) && ::fchmod(fd, existing.st_mode & 07777) != 0) throw fail("chmod failed");
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;  // a signal before anything was written: write again
    if (n < 0) throw fail("write failed");
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) throw fail("fsync failed");
  const int closing = fd;
  fd = -1;  // closed whatever close() returns: POSIX leaves the descriptor unspecified, Linux always frees it
  if (::close(closing) != 0) throw fail("close failed");  // NFS reports a failed write-back here
}

StagedFile::~StagedFile() {
  if (!tmp_.empty()) ::unlink(tmp_.c_str());
  if (!aside_.empty()) ::unlink(aside_.c_str());
}

void StagedFile::place() {
  auto fail = [&](const std::string& what) {
    return InputError(argument_, "a writable path", "'" + path_ + "' (" + what + ": " + std::strerror(errno) + ")");
  };
  struct stat existing {};
  if (::lstat(path_.c_str(), &existing) != 0) {
    if (errno != ENOENT) throw fail("cannot look at it");
#ifdef RENAME_NOREPLACE
    if (::renameat2(AT_FDCWD, tmp_.c_str(), AT_FDCWD, path_.c_str(), RENAME_NOREPLACE) == 0) {
      placed_ = Placed::kCreated;
      tmp_.clear();
      return;
    }
    if (errno == EEXIST) return place();  // created meanwhile: replace it as any existing file, undoably
    if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP) throw fail("rename failed");
#endif
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) throw fail("rename failed");
    placed_ = Placed::kCreated;
    tmp_.clear();
    return;
  }
  if (S_ISDIR(existing.st_mode)) throw not_a_file(path_, argument_);
#ifdef RENAME_EXCHANGE
  // Atomically swapped: the new file at `path`, the replaced one at the temporary's name until finish() or undo().
  if (::renameat2(AT_FDCWD, tmp_.c_str(), AT_FDCWD, path_.c_str(), RENAME_EXCHANGE) == 0) {
    placed_ = Placed::kExchanged;
    return;
  }
  if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP) throw fail("rename failed");
#endif
  // A filesystem without RENAME_EXCHANGE: the replaced file is moved aside first, then the new one moved in.
  const std::string aside = beside(path_, ".old-");
  if (::rename(path_.c_str(), aside.c_str()) != 0) throw fail("rename failed");
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const InputError error = fail("rename failed");
    ::rename(aside.c_str(), path_.c_str());
    throw error;
  }
  aside_ = aside;
  placed_ = Placed::kAside;
  tmp_.clear();
}

std::string StagedFile::undo() {
  std::string problem;
  auto note = [&](const std::string& what) { problem = "'" + path_ + "' " + what + " (" + std::strerror(errno) + ")"; };
  switch (placed_) {
    case Placed::kNo:
      break;
    case Placed::kCreated:
      if (::unlink(path_.c_str()) != 0) note("was written and could not be removed");
      break;
    case Placed::kExchanged:  // swapped back; the new file, now at the temporary's name, goes with the destructor
#ifdef RENAME_EXCHANGE
      if (::renameat2(AT_FDCWD, tmp_.c_str(), AT_FDCWD, path_.c_str(), RENAME_EXCHANGE) != 0) {
        note("was replaced and could not be restored: the replaced file is '" + tmp_ + "'");
        tmp_.clear();  // it holds the replaced file now: kept
      }
#endif
      break;
    case Placed::kAside:
      if (::rename(aside_.c_str(), path_.c_str()) != 0)
        note("was replaced and could not be restored: the replaced file is '" + aside_ + "'");
      aside_.clear();  // restored, or kept where the message says
      break;
  }
  placed_ = Placed::kNo;
  return problem;
}

void StagedFile::finish() {
  if (placed_ == Placed::kExchanged) ::unlink(tmp_.c_str());  // the replaced file
  if (placed_ == Placed::kAside) ::unlink(aside_.c_str());
  tmp_.clear();
  aside_.clear();
  placed_ = Placed::kNo;
}

void commit_all(const std::vector<StagedFile*>& files) {
  size_t placed = 0;
  auto undo_placed = [&] {  // newest first; what could not be put back, for the message
    std::string problems;
    for (size_t j = placed; j-- > 0;) {
      const std::string p = files[j]->undo();
      if (!p.empty()) problems += "; " + p;
    }
    return problems;
  };
  try {
    for (; placed < files.size(); ++placed)
      if (!files[placed]->tmp_.empty()) files[placed]->place();
    std::vector<const StagedFile*> synced;  // one file per directory
    for (const StagedFile* f : files)
      if (std::none_of(synced.begin(), synced.end(),
                       [&](const StagedFile* g) { return directory_of(g->path_) == directory_of(f->path_); }))
        synced.push_back(f);
    for (const StagedFile* f : synced)
      if (const int err = sync_directory(directory_of(f->path_)))
        throw InputError(f->argument_, "a writable path", "'" + f->path_ + "' (fsync of its directory '" +
                                                              directory_of(f->path_) + "' failed: " +
                                                              std::strerror(err) + ")");
  } catch (const Error& e) {
    const std::string problems = undo_placed();
    if (problems.empty()) throw;
    throw Error(e.argument, std::string(e.what()).substr(e.argument.size() + 2) + problems);
  } catch (...) {
    undo_placed();
    throw;
  }
  for (StagedFile* f : files) f->finish();
}

void StagedFile::commit() { commit_all({this}); }

void write_file_atomic(const std::string& path, const std::string& bytes, const std::string& argument) {
  StagedFile(path, bytes, argument).commit();
}

namespace {

struct Sha256 {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx{EVP_MD_CTX_new(), EVP_MD_CTX_free};
  Sha256() {
    if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) throw Error("sha256", "OpenSSL failed");
  }
  void update(const char* data, size_t n) {
    if (EVP_DigestUpdate(ctx.get(), data, n) != 1) throw Error("sha256", "OpenSSL failed");
  }
  std::string hex() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(ctx.get(), digest, &len) != 1) throw Error("sha256", "OpenSSL failed");
    static const char* digits = "0123456789abcdef";
    std::string out;
    for (unsigned int i = 0; i < len; ++i) {
      out += digits[digest[i] >> 4];
      out += digits[digest[i] & 15];
    }
    return out;
  }
};

}  // namespace

std::string sha256_hex(std::string_view bytes) {
  Sha256 h;
  constexpr size_t kChunk = size_t{1} << 30;  // EVP_DigestUpdate takes any size; chunks bound one call's time
  for (size_t at = 0; at < bytes.size(); at += kChunk)
    h.update(bytes.data() + at, std::min(kChunk, bytes.size() - at));
  return h.hex();
}

namespace {

FileStamp stamp_of(const struct stat& st) {
  FileStamp s;
  s.device = static_cast<uint64_t>(st.st_dev);
  s.inode = static_cast<uint64_t>(st.st_ino);
  s.size = static_cast<int64_t>(st.st_size);
  s.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return s;
}

}  // namespace

FileStamp file_stamp(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? stamp_of(st) : FileStamp{};
}

std::string sha256_file(const std::string& path, const std::string& argument, FileStamp* stamp) {
  const ReadFd file(path, argument);
  struct stat st {};
  if (::fstat(file.fd, &st) != 0) throw unreadable(path, argument, std::strerror(errno));
  if (S_ISDIR(st.st_mode)) throw unreadable(path, argument, "a directory");
  Sha256 h;
  std::vector<char> buf(1 << 20);  // streamed: a real UNet's weights are gigabytes
  for (;;) {
    const ssize_t n = ::read(file.fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw unreadable(path, argument, std::string("read failed: ") + std::strerror(errno));
    if (n == 0) break;
    h.update(buf.data(), static_cast<size_t>(n));
  }
  if (stamp) {
    if (::fstat(file.fd, &st) != 0) throw unreadable(path, argument, std::strerror(errno));
    *stamp = stamp_of(st);  // after the read: a file written meanwhile has another mtime than this
  }
  return h.hex();
}

}  // namespace acsdk
