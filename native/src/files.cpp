#include "files.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <vector>

#include "errors.hpp"

namespace acsdk {

std::string read_file(const std::string& path, const std::string& argument) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(argument, "a readable file", "'" + path + "' (" + std::strerror(errno) + ")");
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) throw InputError(argument, "a readable file", "'" + path + "' (read failed)");
  return buf.str();
}

namespace {

// A fresh name beside `path` that no other process can guess, created with O_EXCL (never an existing file).
int create_temporary(const std::string& path, std::string& tmp) {
  std::random_device entropy;
  for (int attempt = 0; attempt < 16; ++attempt) {
    char suffix[17];
    std::snprintf(suffix, sizeof suffix, "%08x%08x", entropy(), entropy());
    tmp = path + ".tmp-" + suffix;
    // 0666 less the umask: the mode a plain open() would give (mkstemp's 0600 would hide outputs from other accounts)
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0 || errno != EEXIST) return fd;
  }
  return -1;
}

}  // namespace

StagedFile::StagedFile(const std::string& path, const std::string& bytes, const std::string& argument)
    : path_(path), argument_(argument) {
  const int fd = create_temporary(path, tmp_);
  auto fail = [&](const std::string& what) {
    const std::string why = std::strerror(errno);
    if (fd >= 0) {  // never unlink a name this call did not create
      ::close(fd);
      ::unlink(tmp_.c_str());
    }
    return InputError(argument, "a writable path", "'" + path + "' (" + what + ": " + why + ")");
  };
  if (fd < 0) throw fail("cannot create a file beside it");
  struct stat existing {};
  if (::stat(path.c_str(), &existing) == 0 && ::fchmod(fd, existing.st_mode & 07777) != 0)  // a replaced file
    throw fail("chmod failed");                                                               // keeps its mode
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) throw fail("write failed");
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) throw fail("fsync failed");
  ::close(fd);
}

StagedFile::~StagedFile() {
  if (!tmp_.empty()) ::unlink(tmp_.c_str());
}

void StagedFile::commit() {
  if (tmp_.empty()) return;
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    throw InputError(argument_, "a writable path", "'" + path_ + "' (rename failed: " + why + ")");
  }
  tmp_.clear();
}

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

std::string sha256_hex(const std::string& bytes) {
  Sha256 h;
  h.update(bytes.data(), bytes.size());
  return h.hex();
}

std::string sha256_file(const std::string& path, const std::string& argument) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(argument, "a readable file", "'" + path + "' (" + std::strerror(errno) + ")");
  Sha256 h;
  std::vector<char> buf(1 << 20);  // streamed: a real UNet's weights are gigabytes
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    h.update(buf.data(), static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) throw InputError(argument, "a readable file", "'" + path + "' (read failed)");
  return h.hex();
}

}  // namespace acsdk
