// Training curves: the metrics.csv reader (host/io/metrics_csv.h) on files written here (values
// read back exactly, extra and reordered columns, an empty or missing test loss, the rows of a
// resumed run, line-end variants; every malformed file an InputError naming the file and the
// line), and the picture (host/eval/curves.h): its documented size, each series' colour in its
// panel and nowhere else.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>

#include "host/core/error.h"
#include "host/eval/curves.h"
#include "host/eval/plot.h"
#include "host/io/metrics_csv.h"
#include "tests/test_support.h"

using namespace cuvae;

namespace {

std::string g17(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// `epochs` random rows under kMetricsCsvHeader (the other tests write the header before the
// kl_weight column, which older runs have); test_loss empty when `with_test` is false.
std::string random_csv(std::mt19937_64& rng, int epochs, bool with_test,
                       std::vector<MetricsRow>& rows) {
  std::uniform_real_distribution<double> loss(100, 250), kl(1, 10);
  std::string text = std::string(kMetricsCsvHeader) + "\n";
  rows.clear();
  for (int e = 1; e <= epochs; ++e) {
    MetricsRow r;
    r.epoch = e;
    r.kl = kl(rng);
    r.recon = loss(rng);
    r.loss = r.recon + r.kl;
    r.test_loss = with_test ? loss(rng) : std::nan("");
    rows.push_back(r);
    text += std::to_string(e) + "," + g17(r.loss) + "," + g17(r.recon) + "," + g17(r.kl) + "," +
            (with_test ? g17(r.test_loss) : "") + ",6000,47,5000.5,1.25,1\n";
  }
  return text;
}

void require_rows(const MetricsLog& log, const std::vector<MetricsRow>& want) {
  REQUIRE(log.rows.size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("row " << i);
    CHECK(log.rows[i].epoch == want[i].epoch);
    CHECK(log.rows[i].loss == want[i].loss);
    CHECK(log.rows[i].recon == want[i].recon);
    CHECK(log.rows[i].kl == want[i].kl);
    if (std::isnan(want[i].test_loss))
      CHECK(std::isnan(log.rows[i].test_loss));
    else
      CHECK(log.rows[i].test_loss == want[i].test_loss);
  }
}

void require_malformed(const std::string& text, const std::string& words) {
  INFO("file: " << text);
  try {
    parse_metrics_csv(text, "runs/x/metrics.csv");
    FAIL("no InputError; expected one mentioning '" << words << "'");
  } catch (const InputError& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.rfind("runs/x/metrics.csv: ", 0) == 0);
    CHECK(msg.find(words) != std::string::npos);
    CHECK(msg.find('\n') == std::string::npos);
  }
}

// Pixels of `colour` inside the plot of panel k (0: left, 1: right, 2, 3: second row).
int colour_in_panel(const Canvas& c, int k, Rgb colour) {
  const int x0 = (k % 2) * kCurvePanelW + kAxesLeft;
  const int y0 = kCurveHead + (k / 2) * kCurvePanelH + kCurvePanelTop;
  int n = 0;
  for (int y = y0; y < y0 + kCurvePlotH; ++y)
    for (int x = x0; x < x0 + kCurvePlotW; ++x) n += c.at(x, y) == colour;
  return n;
}

}  // namespace

TEST_CASE("metrics.csv: the reader gives back the values written", "[metrics_csv]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  std::vector<MetricsRow> want;
  for (const bool with_test : {true, false}) {
    INFO("with test loss " << with_test);
    const std::string text = random_csv(rng, 1 + int(rng() % 40), with_test, want);
    const MetricsLog log = parse_metrics_csv(text, "m.csv");
    require_rows(log, want);
    CHECK(log.has_test_loss() == with_test);
    CHECK(log.path == "m.csv");
    // The same through a file, with '\r\n' line ends and blank lines.
    std::string crlf;
    for (const char ch : text) crlf += ch == '\n' ? std::string("\r\n\r\n") : std::string(1, ch);
    const std::string dir = test::temp_dir("cuvae_curves_");
    test::write_file(dir + "/metrics.csv", crlf);
    require_rows(read_metrics_csv(dir + "/metrics.csv"), want);
    std::filesystem::remove_all(dir);
  }
}

TEST_CASE("metrics.csv: columns go by the header, extra ones are skipped", "[metrics_csv]") {
  // Reordered, an extra column in the middle (a future kl_weight) and at the end, no test_loss.
  const std::string text =
      "kl,epoch,kl_weight,reconstruction,loss,images,note\n"
      "3.5,1,0.25,200.5,201.375,60000,x\n"
      "4.25,2,0.5,180,182.125,60000,\n";
  const MetricsLog log = parse_metrics_csv(text, "m.csv");
  REQUIRE(log.rows.size() == 2);
  CHECK(log.rows[0].epoch == 1);
  CHECK(log.rows[0].kl == 3.5);
  CHECK(log.rows[0].recon == 200.5);
  CHECK(log.rows[0].loss == 201.375);
  CHECK(log.rows[1].epoch == 2);
  CHECK(log.rows[1].kl == 4.25);
  CHECK(log.rows[1].loss == 182.125);
  CHECK(std::isnan(log.rows[0].test_loss));
  CHECK_FALSE(log.has_test_loss());
  // Only the header: no rows, no error.
  CHECK(parse_metrics_csv(std::string(kMetricsCsvHeaderNoWeight) + "\n", "m.csv").rows.empty());
}

TEST_CASE("metrics.csv: a row not after the previous one restarts the log there", "[metrics_csv]") {
  const std::string h = std::string(kMetricsCsvHeaderNoWeight) + "\n";
  auto row = [](int e, double loss) {
    return std::to_string(e) + "," + g17(loss) + ",1,2,3,10,1,5,1\n";
  };
  // Epochs 1 2 3, then a resume from the state after epoch 1: 2 3 4.
  const MetricsLog log = parse_metrics_csv(
      h + row(1, 10) + row(2, 20) + row(3, 30) + row(2, 21) + row(3, 31) + row(4, 41), "m.csv");
  REQUIRE(log.rows.size() == 4);
  const double want[] = {10, 21, 31, 41};
  for (size_t i = 0; i < 4; ++i) {
    CHECK(log.rows[i].epoch == int64_t(i + 1));
    CHECK(log.rows[i].loss == want[i]);
  }
}

TEST_CASE("metrics.csv: a malformed file is one InputError naming the file and line",
          "[metrics_csv]") {
  const std::string h = std::string(kMetricsCsvHeaderNoWeight) + "\n";
  const std::string good = "1,200,195,5,190,60000,469,5000,12\n";
  require_malformed("", "empty");
  require_malformed("\n\n", "empty");
  require_malformed("epoch,loss,reconstruction\n1,2,3\n", "line 1: no column 'kl'");
  require_malformed("epoch,loss,kl,test_loss\n", "line 1: no column 'reconstruction'");
  require_malformed("loss,reconstruction,kl\n", "line 1: no column 'epoch'");
  require_malformed("epoch,loss,reconstruction,kl,loss\n",
                    "line 1: the column 'loss' is named twice");
  require_malformed(h + good + "2,200,195,5\n", "line 3: 4 fields, expected 9");
  require_malformed(h + good + "2,200,195,5,190,60000,469,5000,12,7\n", "line 3: 10 fields");
  require_malformed(h + "1,abc,195,5,190,60000,469,5000,12\n",
                    "line 2: loss: expected a number, got 'abc'");
  require_malformed(h + "1,200,,5,190,60000,469,5000,12\n",
                    "line 2: reconstruction: expected a number");
  require_malformed(h + "1,200,195,5x,190,60000,469,5000,12\n", "line 2: kl: expected a number");
  require_malformed(h + "1,200,195,5, 190,60000,469,5000,12\n",
                    "line 2: test_loss: expected a number");
  require_malformed(h + "0,200,195,5,190,60000,469,5000,12\n",
                    "line 2: epoch: expected a whole number");
  require_malformed(h + "1.5,200,195,5,190,60000,469,5000,12\n", "line 2: epoch");
  require_malformed(h + "-1,200,195,5,190,60000,469,5000,12\n", "line 2: epoch");
  require_malformed(h + "+1,200,195,5,190,60000,469,5000,12\n", "line 2: epoch");
  require_malformed(h + "99999999999999999999,200,195,5,190,60000,469,5000,12\n", "line 2: epoch");
  require_malformed(h + good + "\n" + std::string("2,1\0,2", 6) + "\n", "line 4: a NUL byte");

  const std::string dir = test::temp_dir("cuvae_curves_");
  try {
    read_metrics_csv(dir + "/missing.csv");
    FAIL("no InputError for a missing file");
  } catch (const InputError& e) {
    CHECK(std::string(e.what()).find(dir + "/missing.csv: cannot read") == 0);
  }
  try {
    read_metrics_csv(dir);
    FAIL("no InputError for a folder");
  } catch (const InputError& e) {
    CHECK(std::string(e.what()) == dir + ": is a folder, not a file");
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("curves of one run: the documented size, each series in its panel", "[curves]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  for (const bool with_test : {true, false}) {
    INFO("with test loss " << with_test);
    std::vector<MetricsRow> rows;
    // At least 3 epochs: a series of one or two points could hide under another by chance.
    const int epochs = 3 + int(rng() % 60);
    INFO("epochs " << epochs);
    const MetricsLog log = parse_metrics_csv(random_csv(rng, epochs, with_test, rows), "m.csv");
    const Canvas c = curves_picture({{"run-a", log}});
    CHECK(c.width() == curves_width(1));
    CHECK(c.height() == curves_height(1));
    CHECK(c.width() == 2 * (kAxesLeft + kCurvePlotW + kCurvePanelRight) + kCurveLegendW);
    CHECK(c.height() == kCurveHead + kCurvePanelTop + kCurvePlotH + kAxesBottom);
    // Loss and reconstruction (and the test loss) left, KL right.
    CHECK(colour_in_panel(c, 0, kClassColors[0]) > 0);
    CHECK(colour_in_panel(c, 0, kClassColors[1]) > 0);
    CHECK((colour_in_panel(c, 0, kClassColors[2]) > 0) == with_test);
    CHECK(colour_in_panel(c, 0, kClassColors[3]) == 0);
    CHECK(colour_in_panel(c, 1, kClassColors[3]) > 0);
    for (int k = 0; k < 3; ++k) CHECK(colour_in_panel(c, 1, kClassColors[k]) == 0);
  }
}

TEST_CASE("curves of several runs: four panels, a colour per run", "[curves]") {
  const uint64_t seed = test::fresh_seed();
  INFO("seed " << seed);
  std::mt19937_64 rng(seed);
  std::vector<CurveRun> runs;
  std::vector<MetricsRow> rows;
  // Runs of different lengths; the second without a test loss.
  for (int i = 0; i < 3; ++i)
    runs.push_back({"run-" + std::to_string(i),
                    parse_metrics_csv(random_csv(rng, 3 + 5 * i, i != 1, rows), "m.csv")});
  const Canvas c = curves_picture(runs);
  CHECK(c.width() == curves_width(3));
  CHECK(c.height() == curves_height(3));
  CHECK(c.height() == kCurveHead + 2 * kCurvePanelH);
  // Panels: loss, reconstruction, test loss, KL.
  for (int k = 0; k < 4; ++k)
    for (int i = 0; i < 3; ++i) {
      INFO("panel " << k << ", run " << i);
      CHECK((colour_in_panel(c, k, kClassColors[i]) > 0) == (k != 2 || i != 1));
    }
  for (int k = 0; k < 4; ++k) CHECK(colour_in_panel(c, k, kClassColors[3]) == 0);
}

TEST_CASE("curves refuse an empty log and too many runs", "[curves]") {
  MetricsLog empty;
  empty.path = "runs/new/metrics.csv";
  try {
    curves_picture({{"new", empty}});
    FAIL("no InputError for a log without rows");
  } catch (const InputError& e) {
    CHECK(std::string(e.what()).find("runs/new/metrics.csv: no epochs yet") == 0);
  }
  MetricsLog one = parse_metrics_csv(std::string(kMetricsCsvHeaderNoWeight) + "\n1,2,1,1,,5,1,1,1\n", "m");
  std::vector<CurveRun> runs(size_t(kMaxCurveRuns) + 1, CurveRun{"r", one});
  REQUIRE_THROWS_AS(curves_picture(runs), InputError);
  REQUIRE_THROWS_AS(curves_picture({}), InputError);
  runs.resize(size_t(kMaxCurveRuns));
  CHECK(curves_picture(runs).width() == curves_width(kMaxCurveRuns));
}
