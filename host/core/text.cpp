// Number and argument formatting (text.h).
#include "host/core/text.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace cuvae {

// "1234567" -> "1,234,567"
std::string with_commas(int64_t v) {
  std::string s = std::to_string(v);
  for (int i = int(s.size()) - 3; i > (v < 0 ? 1 : 0); i -= 3) s.insert(size_t(i), ",");
  return s;
}

std::string fixed(double v, int digits) {
  std::ostringstream os;
  os.setf(std::ios::fixed);
  os.precision(digits);
  os << v;
  return os.str();
}

std::string quote_arg(const std::string& s) {
  return "'" + s + "'";
}

std::string exact_text(double v) {
  std::ostringstream os;
  os.precision(17);
  os << v;
  return os.str();
}

double float_as_decimal(float v) {
  if (!std::isfinite(v)) return double(v);
  for (int digits = 1; digits <= 9; ++digits) {  // 9 significant digits always suffice
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.*g", digits, double(v));
    if (std::strtof(buf, nullptr) == v) return std::strtod(buf, nullptr);
  }
  return double(v);
}

std::string counted(int64_t n, const std::string& singular, const std::string& plural) {
  return with_commas(n) + " " + (n == 1 ? singular : plural.empty() ? singular + "s" : plural);
}

}  // namespace cuvae
