// metrics.csv, the per-epoch log of a run folder (host/app/run_folder.h writes it): its columns
// and a reader for the training curves.
//
// The file is a header line naming the columns, then one row per completed epoch, values
// separated by commas. The reader goes by the header, not by position: it needs the columns
// epoch, loss, reconstruction and kl; test_loss is read when present (an empty value, as a run
// without a test split writes it, or a missing column reads as NaN); any other column (images,
// steps, ..., or one a later version adds) is skipped. Values are numbers as strtod reads them
// in full; epoch is a whole number >= 1.
// Rows go in epoch order. A row whose epoch is not after the previous row's starts the log over
// from that epoch: the rows from that epoch on are replaced, as a run resumed from an earlier
// state rewrites them (MetricsCsv drops those rows itself; this keeps a file assembled by hand
// readable). Blank lines and a '\r' before each line end are ignored.
// Anything else (no header, a required column missing or named twice, a row with another
// number of fields than the header, a value that is not a number) is an InputError of one
// line naming the file and the line number.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace cuvae {

// The header MetricsCsv writes, and the one before the kl_weight column (KL warm-up).
constexpr const char* kMetricsCsvHeader =
    "epoch,loss,reconstruction,kl,test_loss,images,steps,images_per_s,seconds,kl_weight";
constexpr const char* kMetricsCsvHeaderNoWeight =
    "epoch,loss,reconstruction,kl,test_loss,images,steps,images_per_s,seconds";

struct MetricsRow {
  int64_t epoch = 0;
  double loss = 0;       // recon + kl_weight kl, the epoch mean of the training loss (nats/image)
  double recon = 0;      // reconstruction (BCE summed over the pixels)
  double kl = 0;         // KL(q(z|x) || N(0, I))
  double test_loss = 0;  // the same loss on the test split; NaN when not measured
};

struct MetricsLog {
  std::string path;
  std::vector<MetricsRow> rows;  // epochs strictly increasing
  bool has_test_loss() const;    // a finite test_loss in some row
};

// Parses `text`, the contents of the file `path` (named in the errors).
MetricsLog parse_metrics_csv(const std::string& text, const std::string& path);
// Reads and parses `path`; a file that cannot be read is an InputError too.
MetricsLog read_metrics_csv(const std::string& path);

}  // namespace cuvae
