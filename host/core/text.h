// Number and argument formatting shared by every layer (messages, logs, JSON).
#pragma once

#include <cstdint>
#include <string>

namespace cuvae {

std::string with_commas(int64_t v);           // 1234567 -> "1,234,567"
std::string fixed(double v, int digits);      // fixed-point text
std::string quote_arg(const std::string& s);  // 'text'
std::string exact_text(double v);             // shortest text that reads back as v (17 digits)
// The double of the shortest decimal that reads back as v in float: 0.9f gives 0.9, so a JSON
// writer (which prints a double's shortest form) shows 0.9, not 0.8999999761581421.
double float_as_decimal(float v);
// "1 image", "0 images", "1,234 images": the count with commas, then the noun, singular for 1
// only (`plural`: the noun's plural where it is not singular + "s").
std::string counted(int64_t n, const std::string& singular, const std::string& plural = "");

}  // namespace cuvae
