// Checkpoints in safetensors (see safetensors.h; every write is atomic):
//
//   model.safetensors        the weights under their PyTorch names, float32, with metadata
//                            format, format_version, architecture, latent_dim, beta; PyTorch's
//                            load_state_dict(strict=True) accepts it.
//   train_state.safetensors  everything a resume needs, in ONE file so that a crash can never
//                            pair the weights of one epoch with the moments of another:
//                              <param name>          F32, parameter shape   the weights
//                              adam.m.<param name>   F32, parameter shape   Adam first moment
//                              adam.v.<param name>   F32, parameter shape   Adam second moment
//                              step                  I64 [1]                Adam steps taken
//                              epoch                 I64 [1]                epochs completed
//                              epoch_step            I64 [1]                steps done in
//                                                    epoch + 1 (an interrupted epoch; else 0)
//                              epoch_sums            F64 [3]                their recon, KL
//                                                    and (KL warm-up) weighted KL sums over
//                                                    images (else 0; [2], no weighted sum, in
//                                                    files from before --beta-warmup)
//                            and in the metadata the hyperparameters (latent_dim, batch_size,
//                            lr, beta, beta_warmup (absent in older files: 0), adam_beta1/2,
//                            adam_eps, exact decimal text), the seed
//                            (decimal), the architecture and format version, the planned total
//                            of epochs, the data folder, --train-split (absent in older files:
//                            train), --limit, --test-limit, and the training images' count and
//                            CRC-32 so a resume on other data is refused. The random numbers are
//                            Philox, counter-based: the permutation of epoch e is a function of
//                            (seed, e) and the noise of step s of (seed, s), so seed + step + epoch
//                            IS the whole RNG state.
//
// Loading is strict: format, version, architecture, every tensor present with its dtype and
// shape (epoch_step and epoch_sums may both be absent: older files, at an epoch boundary), no
// extra tensor, every value finite, step == epoch * steps_per_epoch + epoch_step. Anything else is
// an InputError naming the file.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "host/core/images.h"
#include "host/core/model.h"
#include "host/core/train_types.h"
#include "host/io/safetensors.h"

namespace cuvae {

constexpr const char* kModelFormat = "cuvae-model-1";
constexpr const char* kTrainStateFormat = "cuvae-train-state";
constexpr int kCheckpointVersion = 1;  // metadata "format_version" of both files

void save_model(const std::string& path, const ModelDesc& desc, const std::vector<float>& params,
                double beta);

struct LoadedModel {
  ModelDesc desc;
  std::vector<float> params;  // (desc.num_params), flat layout of the description
  double beta = 1.0;
};

// Reads and validates a model file: format, architecture, latent_dim, every tensor present
// with the right dtype and shape, no extra tensors, all values finite. InputError otherwise.
LoadedModel load_model(const std::string& path);
// The same checks on a file already read (read_safetensors or parse_safetensors).
LoadedModel model_from_safetensors(const SafetensorsFile& f);

// The images a run trains on (--train-split): the training split, or the training split
// followed by the test split (the Keras example's 70,000 images), then the first --limit.
enum class TrainSplit { Train, TrainTest };

const char* train_split_name(TrainSplit s);  // "train", "train+test"
// The split called `name`; nullopt for any other text.
std::optional<TrainSplit> train_split_from_name(const std::string& name);

// What a training run records besides the tensors.
struct TrainRun {
  // Hyperparameters (latent_dim, batch_size, beta, adam, seed, limit), data_dir, and epochs,
  // the planned total. device and out_dir are not recorded (a run may resume elsewhere).
  TrainConfig cfg;
  TrainSplit train_split = TrainSplit::Train;
  int64_t train_images = 0;  // images trained on (after --train-split and --limit)
  uint32_t train_crc32 = 0;  // image_checksum() of those images
  int64_t test_limit = 0;    // --test-limit used for the test loss (0: all)
};

void save_train_state(const std::string& path, const ModelDesc& desc, const TrainRun& run,
                      const TrainState& state);

struct LoadedTrainState {
  ModelDesc desc;
  TrainRun run;
  TrainState state;
};

LoadedTrainState load_train_state(const std::string& path);
LoadedTrainState train_state_from_safetensors(const SafetensorsFile& f);

// CRC-32 (zlib) of the images' pixels and shape: tells two datasets of the same size apart
// (MNIST and Fashion-MNIST both have 60,000 training images).
uint32_t image_checksum(const ImageSet& images);

}  // namespace cuvae
