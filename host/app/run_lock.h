// One process owns a run folder while it trains in it. `cuvae train` takes the folder's lock
// before it looks for a run there (new, --overwrite or --resume) and holds it until it exits,
// so two trainings can never interleave their files in one folder; a second is refused with
// one line naming the folder and the owner's pid. The lock is an advisory flock(2) on the file
// `.cuvae.lock` in the folder, which the kernel releases when the process ends, however it
// ends (kill -9 included); the file itself stays (removing a lock file would let a third
// process lock a new one while the second still holds the old).
//
// eval, encode and the picture commands do not lock: they read model.safetensors, which every
// write replaces atomically (atomic_file.h), and say so if it changed while they ran
// (watch_run_model in run_folder.h).
#pragma once

#include <string>

namespace cuvae {

class RunLock {
 public:
  static constexpr const char* kLockFile = ".cuvae.lock";

  RunLock() = default;
  RunLock(RunLock&& other) noexcept;
  RunLock& operator=(RunLock&& other) noexcept;
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;
  // Releases the lock. A folder this lock created is removed again if the run left nothing
  // in it (it stopped before writing anything: a bad flag, a signal while the data loaded).
  ~RunLock();

  // Locks the folder `dir`, creating it (and its parents) when `create` and it is missing.
  // InputError naming `flag dir` when it cannot be made or written, is a file, or another
  // process holds it (with that process's pid when it can be read).
  static RunLock take(const std::string& dir, const std::string& flag, bool create);
  // A folder that did not exist: `stem`, else `stem-2`, `stem-3`, ... (mkdir(2) is atomic, so
  // two runs started in the same second get different folders), locked.
  static RunLock take_new(const std::string& stem);

  const std::string& dir() const { return dir_; }

 private:
  // Locks `dir`, which this process has just made when `made` (removed again on failure).
  static RunLock locked(const std::string& dir, const std::string& flag, bool made);
  void release() noexcept;

  int fd_ = -1;
  std::string dir_;
  bool created_ = false;
};

}  // namespace cuvae
