// libFuzzer target: the IDX parser (host/io/idx.h) on arbitrary bytes.
//
// Each input is parsed as an image file and as a label file, from memory; input that does not
// already start with the gzip magic is also gzip-compressed and parsed again, so the IDX checks
// run behind the gzip decoder too (input that does start with it exercises the decoder on
// arbitrary streams). The contract checked: either a well-formed result (sizes agree with the
// header, labels 0..9) or a cuvae::InputError with a one-line message "<name>: <reason>".
// Anything else (another exception, a crash, a leak, undefined behaviour) is a finding.
#include <zlib.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "host/core/error.h"
#include "host/io/idx.h"

namespace {

using Bytes = std::vector<uint8_t>;

// Aborts (a libFuzzer finding) when an invariant does not hold.
void require(bool ok) {
  if (!ok) std::abort();
}

void check_message(const cuvae::InputError& e, const std::string& name) {
  const std::string msg = e.what();
  require(msg.rfind(name + ": ", 0) == 0);
  require(msg.size() > name.size() + 2);
  require(msg.find('\n') == std::string::npos && msg.find('\r') == std::string::npos);
}

void parse_both(const std::string& name, const Bytes& bytes) {
  try {
    const cuvae::ImageSet s = cuvae::parse_idx_images(name, bytes);
    require(s.count > 0 && s.rows > 0 && s.cols > 0);
    require(s.pixels.size() == uint64_t(s.count) * uint64_t(s.rows) * uint64_t(s.cols));
  } catch (const cuvae::InputError& e) {
    check_message(e, name);
  }
  try {
    const cuvae::LabelSet s = cuvae::parse_idx_labels(name, bytes);
    require(!s.labels.empty());
    for (uint8_t l : s.labels) require(l <= 9);
  } catch (const cuvae::InputError& e) {
    check_message(e, name);
  }
}

Bytes gzip(const uint8_t* data, size_t size) {
  z_stream zs{};
  require(deflateInit2(&zs, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  Bytes out(deflateBound(&zs, size) + 64);
  zs.next_in = const_cast<uint8_t*>(data);
  zs.avail_in = static_cast<uInt>(size);
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  require(deflate(&zs, Z_FINISH) == Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Bytes bytes(data, data + size);
  parse_both("input", bytes);
  if (size < 2 || data[0] != 0x1f || data[1] != 0x8b) parse_both("input.gz", gzip(data, size));
  return 0;
}
