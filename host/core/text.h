// Number and argument formatting shared by every layer (messages, logs, JSON).
#pragma once

#include <cstdint>
#include <string>

namespace cuvae {

std::string with_commas(int64_t v);           // 1234567 -> "1,234,567"
std::string fixed(double v, int digits);      // fixed-point text
std::string quote_arg(const std::string& s);  // 'text'
std::string exact_text(double v);             // shortest text that reads back as v (17 digits)

}  // namespace cuvae
