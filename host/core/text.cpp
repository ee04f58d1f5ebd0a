// Number and argument formatting (text.h).
#include "host/core/text.h"

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

}  // namespace cuvae
