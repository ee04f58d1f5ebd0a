// Files that appear whole or not at all. Every file cuvae writes (checkpoints, PNGs, CSV,
// JSON) goes to `<path>.tmp.<pid>` in the same folder first and is renamed into place after
// an fsync, so a crash, a kill -9 or a full disk leaves the previous file intact. A process
// killed between creating and renaming its temporary file leaves that file behind: the next
// write of the same file clears it (temporary_path()), and remove_stale_temporaries() clears a
// whole folder's. A write interrupted by a signal (check_interrupt(), interrupt.h) or failing
// removes its own temporary file as the exception unwinds.
#pragma once

#include <cstdio>
#include <string>

namespace cuvae {

// A text file written to a temporary name in the same folder and renamed into place by
// commit(); dropped if commit() never runs. Failures are InputErrors naming the path.
class AtomicTextFile {
 public:
  explicit AtomicTextFile(const std::string& path);
  AtomicTextFile(const AtomicTextFile&) = delete;
  AtomicTextFile& operator=(const AtomicTextFile&) = delete;
  ~AtomicTextFile();
  std::FILE* get() { return f_; }
  void commit();

 private:
  std::string path_, tmp_;
  std::FILE* f_ = nullptr;
};

// Writes `text` to `path` through an AtomicTextFile.
void write_text_atomically(const std::string& path, const std::string& text);

// Removes the files `*.tmp.<pid>` in `dir` whose process is gone; returns how many.
int remove_stale_temporaries(const std::string& dir);

// The temporary name this process writes `path` under, `<path>.tmp.<pid>`, after removing the
// temporaries of `path` that processes no longer running left (every atomic writer calls it).
std::string temporary_path(const std::string& path);

}  // namespace cuvae
