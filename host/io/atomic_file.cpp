// Atomic file writes and the clean-up of abandoned temporaries (atomic_file.h).
#include "host/io/atomic_file.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "host/core/error.h"

namespace cuvae {

AtomicTextFile::AtomicTextFile(const std::string& path) : path_(path), tmp_(temporary_path(path)) {
  f_ = std::fopen(tmp_.c_str(), "wb");
  if (!f_) throw InputError(path_ + ": cannot create " + tmp_ + ": " + std::strerror(errno));
}

AtomicTextFile::~AtomicTextFile() {
  if (f_) {
    std::fclose(f_);
    std::remove(tmp_.c_str());
  }
}

void AtomicTextFile::commit() {
  bool ok = std::fflush(f_) == 0 && !std::ferror(f_) && ::fsync(::fileno(f_)) == 0;
  std::string why = ok ? "" : std::strerror(errno);
  if (std::fclose(f_) != 0 && ok) {
    ok = false;
    why = std::strerror(errno);
  }
  f_ = nullptr;
  if (ok && std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    ok = false;
    why = std::strerror(errno);
  }
  if (!ok) {
    std::remove(tmp_.c_str());
    throw InputError(path_ + ": cannot write: " + why);
  }
}

void write_text_atomically(const std::string& path, const std::string& text) {
  AtomicTextFile f(path);
  if (std::fwrite(text.data(), 1, text.size(), f.get()) != text.size())
    throw InputError(path + ": cannot write: " + std::strerror(errno));
  f.commit();
}

namespace {

// The pid of a temporary file's name `<prefix>.tmp.<pid>` when `name` has that form and its
// prefix is `prefix` (any prefix when empty); 0 otherwise.
pid_t temporary_owner(const std::string& name, const std::string& prefix) {
  const size_t at = name.rfind(".tmp.");
  if (at == std::string::npos || (!prefix.empty() && name.compare(0, at, prefix) != 0) ||
      (!prefix.empty() && at != prefix.size()))
    return 0;
  const std::string digits = name.substr(at + 5);
  if (digits.empty() || digits.size() > 9 ||
      digits.find_first_not_of("0123456789") != std::string::npos)
    return 0;
  return pid_t(std::stol(digits));
}

// Removes the temporaries in `dir` (of the file named `prefix`, or of any file) whose process
// is gone.
int remove_dead_temporaries(const std::string& dir, const std::string& prefix) {
  namespace fs = std::filesystem;
  int removed = 0;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const pid_t pid = temporary_owner(e.path().filename().string(), prefix);
    if (pid <= 0 || !e.is_regular_file(ec)) continue;
    if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno != ESRCH) continue;  // alive
    if (fs::remove(e.path(), ec)) ++removed;
  }
  return removed;
}

}  // namespace

int remove_stale_temporaries(const std::string& dir) {
  return remove_dead_temporaries(dir, "");
}

std::string temporary_path(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path p(path);
  const std::string name = p.filename().string();
  if (!name.empty())
    remove_dead_temporaries(p.has_parent_path() ? p.parent_path().string() : ".", name);
  return path + ".tmp." + std::to_string(::getpid());
}

}  // namespace cuvae
