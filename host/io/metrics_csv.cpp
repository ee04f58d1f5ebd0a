// Reading metrics.csv (metrics_csv.h).
#include "host/io/metrics_csv.h"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

#include "host/core/error.h"
#include "host/core/text.h"

namespace cuvae {
namespace {

constexpr uintmax_t kMaxMetricsBytes = uintmax_t(256) << 20;

std::vector<std::string> split_fields(const std::string& line) {
  std::vector<std::string> fields;
  size_t start = 0;
  for (;;) {
    const size_t comma = line.find(',', start);
    fields.push_back(line.substr(start, comma == std::string::npos ? comma : comma - start));
    if (comma == std::string::npos) return fields;
    start = comma + 1;
  }
}

// The position of each column the reader uses in the header's fields; -1 when absent.
struct Columns {
  int epoch = -1, loss = -1, recon = -1, kl = -1, test_loss = -1;
};

class Parser {
 public:
  explicit Parser(std::string path) : path_(std::move(path)) {}

  [[noreturn]] void fail(int line, const std::string& what) const {
    throw InputError(path_ + ": line " + std::to_string(line) + ": " + what);
  }

  Columns header(const std::string& line, int line_no) {
    names_ = split_fields(line);
    Columns c;
    const std::pair<const char*, int*> wanted[] = {{"epoch", &c.epoch},
                                                   {"loss", &c.loss},
                                                   {"reconstruction", &c.recon},
                                                   {"kl", &c.kl},
                                                   {"test_loss", &c.test_loss}};
    for (int i = 0; i < int(names_.size()); ++i)
      for (const auto& [name, at] : wanted)
        if (names_[size_t(i)] == name) {
          if (*at >= 0) fail(line_no, "the column " + quote_arg(name) + " is named twice");
          *at = i;
        }
    for (const auto& [name, at] : wanted)
      if (*at < 0 && at != &c.test_loss)
        fail(line_no, "no column " + quote_arg(name) + " in the header " + quote_arg(line) +
                          " (expected a header like '" + kMetricsCsvHeader + "')");
    return c;
  }

  double number(const std::string& field, int column, int line_no) const {
    errno = 0;
    char* end = nullptr;
    const double v = std::strtod(field.c_str(), &end);
    if (field.empty() || end != field.c_str() + field.size() ||
        std::isspace((unsigned char)field[0]))
      fail(line_no, names_[size_t(column)] + ": expected a number, got " + quote_arg(field));
    return v;
  }

  MetricsRow row(const std::string& line, const Columns& c, int line_no) const {
    const std::vector<std::string> f = split_fields(line);
    if (f.size() != names_.size())
      fail(line_no, std::to_string(f.size()) + " fields, expected " +
                        std::to_string(names_.size()) + " as in the header");
    MetricsRow r;
    const std::string& e = f[size_t(c.epoch)];
    errno = 0;
    char* end = nullptr;
    const long long epoch = std::strtoll(e.c_str(), &end, 10);
    if (e.empty() || end != e.c_str() + e.size() || errno == ERANGE || epoch < 1 ||
        !std::isdigit((unsigned char)e[0]))
      fail(line_no, "epoch: expected a whole number >= 1, got " + quote_arg(e));
    r.epoch = epoch;
    r.loss = number(f[size_t(c.loss)], c.loss, line_no);
    r.recon = number(f[size_t(c.recon)], c.recon, line_no);
    r.kl = number(f[size_t(c.kl)], c.kl, line_no);
    r.test_loss = std::nan("");
    if (c.test_loss >= 0 && !f[size_t(c.test_loss)].empty())
      r.test_loss = number(f[size_t(c.test_loss)], c.test_loss, line_no);
    return r;
  }

 private:
  std::string path_;
  std::vector<std::string> names_;
};

}  // namespace

bool MetricsLog::has_test_loss() const {
  for (const MetricsRow& r : rows)
    if (std::isfinite(r.test_loss)) return true;
  return false;
}

MetricsLog parse_metrics_csv(const std::string& text, const std::string& path) {
  MetricsLog log;
  log.path = path;
  Parser p(path);
  Columns columns;
  bool have_header = false;
  std::istringstream in(text);
  std::string line;
  for (int line_no = 1; std::getline(in, line); ++line_no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    if (line.find('\0') != std::string::npos) p.fail(line_no, "a NUL byte (not a text file?)");
    if (!have_header) {
      columns = p.header(line, line_no);
      have_header = true;
      continue;
    }
    const MetricsRow r = p.row(line, columns, line_no);
    // A row not after the previous one: a resume from an earlier state rewrote the log from
    // this epoch on.
    while (!log.rows.empty() && log.rows.back().epoch >= r.epoch) log.rows.pop_back();
    log.rows.push_back(r);
  }
  if (!have_header) throw InputError(path + ": empty (no header line)");
  return log;
}

MetricsLog read_metrics_csv(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw InputError(path + ": is a folder, not a file");
  // A log of a million epochs is some 100 MB; anything larger is not a metrics file.
  const auto size = std::filesystem::file_size(path, ec);
  if (!ec && size > kMaxMetricsBytes)
    throw InputError(path + ": " + with_commas(int64_t(size)) +
                     " bytes, more than a metrics file " + "holds (at most " +
                     with_commas(int64_t(kMaxMetricsBytes)) + ")");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": cannot read: " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw InputError(path + ": read error");
  return parse_metrics_csv(text.str(), path);
}

}  // namespace cuvae
