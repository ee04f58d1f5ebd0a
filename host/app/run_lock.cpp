// The lock of a run folder (run_lock.h).
#include "host/app/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include "host/core/error.h"

namespace cuvae {
namespace {

namespace fs = std::filesystem;

// The pid the owner wrote into the lock file, or "" when it cannot be read.
std::string owner_pid(int fd) {
  char buf[32] = {};
  const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return "";
  std::string text(buf, size_t(n));
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos) return "";
  return text;
}

// Why the folder `path` could not be made: an ancestor that is a file, or the error.
std::string why_no_folder(const fs::path& path, const std::error_code& ec) {
  std::error_code ignored;
  for (fs::path p = path; !p.empty() && p != p.root_path(); p = p.parent_path())
    if (fs::exists(p, ignored) && !fs::is_directory(p, ignored))
      return p.string() + " is a file, not a folder";
  return "cannot create the folder " + path.string() + ": " + ec.message();
}

// Opens and locks `dir`/.cuvae.lock; -1 with the reason in `why` when another process holds it
// or the file cannot be made.
int lock_folder(const std::string& dir, const std::string& flag) {
  const std::string path = (fs::path(dir) / RunLock::kLockFile).string();
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw InputError(flag + " " + dir + ": cannot write there: " + std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    const std::string pid = err == EWOULDBLOCK ? owner_pid(fd) : "";
    ::close(fd);
    if (err != EWOULDBLOCK)
      throw InputError(flag + " " + dir + ": cannot lock the run folder: " + std::strerror(err));
    throw InputError(flag + " " + dir + ": another cuvae train" +
                     (pid.empty() ? "" : " (pid " + pid + ")") +
                     " is running in this folder; wait for it to end or choose another folder");
  }
  // The owner's pid, for the message of the next one refused.
  const std::string me = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) == 0) {
    const ssize_t ignored = ::pwrite(fd, me.data(), me.size(), 0);
    (void)ignored;
  }
  return fd;
}

}  // namespace

RunLock::RunLock(RunLock&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      dir_(std::move(other.dir_)),
      created_(std::exchange(other.created_, false)) {}

RunLock& RunLock::operator=(RunLock&& other) noexcept {
  if (this != &other) {
    release();
    fd_ = std::exchange(other.fd_, -1);
    dir_ = std::move(other.dir_);
    created_ = std::exchange(other.created_, false);
  }
  return *this;
}

RunLock::~RunLock() {
  release();
}

void RunLock::release() noexcept {
  if (fd_ < 0) return;
  if (created_) {
    // Only the lock file in it: nothing of the run was written. Removed while still locked,
    // so no other process can have started in it meanwhile.
    std::error_code ec;
    bool only_lock = true;
    for (const fs::directory_entry& e : fs::directory_iterator(dir_, ec))
      only_lock = only_lock && e.path().filename() == kLockFile;
    if (!ec && only_lock) {
      fs::remove(fs::path(dir_) / kLockFile, ec);
      fs::remove(dir_, ec);  // fails harmlessly if something appeared since
    }
  }
  ::close(fd_);  // releases the flock
  fd_ = -1;
}

RunLock RunLock::take(const std::string& dir, const std::string& flag, bool create) {
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  bool made = false;
  if (fs::exists(st)) {
    if (!fs::is_directory(st)) throw InputError(flag + " " + dir + ": is a file, not a folder");
  } else {
    if (!create) throw InputError(flag + " " + dir + ": no such folder");
    const fs::path parent = fs::path(dir).parent_path();
    if (!parent.empty() && !fs::is_directory(parent, ec)) {
      fs::create_directories(parent, ec);
      if (ec) throw InputError(flag + " " + dir + ": " + why_no_folder(parent, ec));
    }
    made = ::mkdir(dir.c_str(), 0777) == 0;
    if (!made && errno != EEXIST)
      throw InputError(flag + " " + dir + ": cannot create the folder: " + std::strerror(errno));
  }
  return locked(dir, flag, made);
}

RunLock RunLock::take_new(const std::string& stem) {
  std::error_code ec;
  const fs::path parent = fs::path(stem).parent_path();
  if (!parent.empty()) fs::create_directories(parent, ec);
  if (ec) throw InputError("--out " + stem + ": " + why_no_folder(parent, ec));
  for (int n = 1; n <= 1000; ++n) {
    const std::string dir = n == 1 ? stem : stem + "-" + std::to_string(n);
    if (::mkdir(dir.c_str(), 0777) == 0) return locked(dir, "--out", true);
    if (errno != EEXIST)
      throw InputError(dir + ": cannot create the run folder: " + std::strerror(errno));
  }
  throw InputError(stem + ": 1,000 run folders of this name exist already; pass --out");
}

RunLock RunLock::locked(const std::string& dir, const std::string& flag, bool made) {
  RunLock lock;
  try {
    lock.fd_ = lock_folder(dir, flag);
  } catch (...) {
    if (made) ::rmdir(dir.c_str());  // nothing in it yet
    throw;
  }
  lock.dir_ = dir;
  lock.created_ = made;
  return lock;
}

}  // namespace cuvae
