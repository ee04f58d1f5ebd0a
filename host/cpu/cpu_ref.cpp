// CPU reference layers (see cpu_ref.h for the math). Instantiated for float and double.
#include "host/cpu/cpu_ref.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "host/core/error.h"
#include "host/core/step_scalars.h"

namespace cuvae::cpu {
namespace {

// The geometry shared by a conv and its transposed twin: an "image" (C, H, W) and the
// convolution output grid (Ho, Wo) reached by a 3x3 (k x k) window of stride s, padding p.
struct Geom {
  int channels, h, w;  // image side
  int out_h, out_w;    // window grid
  int k, stride, pad;
  int64_t grid() const { return int64_t(out_h) * out_w; }
};

Geom conv_geom(const Layer& l) {  // image = the conv input
  return {l.in_channels, l.in_h, l.in_w, l.out_h, l.out_w, l.kernel, l.stride, l.pad};
}
Geom deconv_geom(const Layer& l) {  // image = the transposed conv output
  return {l.out_channels, l.out_h, l.out_w, l.in_h, l.in_w, l.kernel, l.stride, l.pad};
}

void check_kind(const Layer& l, LayerKind kind, const char* fn) {
  if (l.kind != kind) throw Error(std::string(fn) + ": wrong layer kind for " + l.name);
}

// cols (C*k*k, B*grid): cols[c*k*k + ky*k + kx][b*grid + oy*Wo + ox] = img[b][c][iy][ix] with
// iy = oy*s - p + ky, ix = ox*s - p + kx, and 0 outside the image.
template <typename T>
void im2col(T* cols, const T* img, int batch, const Geom& g) {
  const int64_t n = int64_t(batch) * g.grid();
  for (int c = 0; c < g.channels; ++c)
    for (int ky = 0; ky < g.k; ++ky)
      for (int kx = 0; kx < g.k; ++kx) {
        T* row = cols + (int64_t(c) * g.k * g.k + ky * g.k + kx) * n;
        for (int b = 0; b < batch; ++b) {
          const T* plane = img + (int64_t(b) * g.channels + c) * g.h * g.w;
          for (int oy = 0; oy < g.out_h; ++oy) {
            const int iy = oy * g.stride - g.pad + ky;
            for (int ox = 0; ox < g.out_w; ++ox) {
              const int ix = ox * g.stride - g.pad + kx;
              const bool inside = iy >= 0 && iy < g.h && ix >= 0 && ix < g.w;
              row[int64_t(b) * g.grid() + oy * g.out_w + ox] = inside ? plane[iy * g.w + ix] : T(0);
            }
          }
        }
      }
}

// The adjoint of im2col: img[b][c][iy][ix] = sum of the cols entries that read it. Sums in
// double (up to k*k terms per pixel), in a fixed order.
template <typename T>
void col2im(T* img, const T* cols, int batch, const Geom& g) {
  const int64_t n = int64_t(batch) * g.grid();
  const int64_t plane_size = int64_t(g.h) * g.w;
  std::vector<double> acc(size_t(batch) * g.channels * plane_size, 0.0);
  for (int c = 0; c < g.channels; ++c)
    for (int ky = 0; ky < g.k; ++ky)
      for (int kx = 0; kx < g.k; ++kx) {
        const T* row = cols + (int64_t(c) * g.k * g.k + ky * g.k + kx) * n;
        for (int b = 0; b < batch; ++b) {
          double* plane = acc.data() + (int64_t(b) * g.channels + c) * plane_size;
          for (int oy = 0; oy < g.out_h; ++oy) {
            const int iy = oy * g.stride - g.pad + ky;
            if (iy < 0 || iy >= g.h) continue;
            for (int ox = 0; ox < g.out_w; ++ox) {
              const int ix = ox * g.stride - g.pad + kx;
              if (ix < 0 || ix >= g.w) continue;
              plane[iy * g.w + ix] += double(row[int64_t(b) * g.grid() + oy * g.out_w + ox]);
            }
          }
        }
      }
  for (size_t i = 0; i < acc.size(); ++i) img[i] = static_cast<T>(acc[i]);
}

// (rows, cols) -> (cols, rows)
template <typename T>
void transpose(T* dst, const T* src, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
}

// Batch-major (B, C, P) <-> channel-major (C, B*P), the layout the matmuls produce.
template <typename T>
void to_channel_major(T* dst, const T* src, int batch, int channels, int64_t plane) {
  for (int b = 0; b < batch; ++b)
    for (int c = 0; c < channels; ++c)
      std::copy_n(src + (int64_t(b) * channels + c) * plane, plane,
                  dst + (int64_t(c) * batch + b) * plane);
}
template <typename T>
void to_batch_major(T* dst, const T* src, int batch, int channels, int64_t plane) {
  for (int b = 0; b < batch; ++b)
    for (int c = 0; c < channels; ++c)
      std::copy_n(src + (int64_t(c) * batch + b) * plane, plane,
                  dst + (int64_t(b) * channels + c) * plane);
}

// y (B, C, P) += bias[c]
template <typename T>
void add_channel_bias(T* y, const T* bias, int batch, int channels, int64_t plane) {
  for (int b = 0; b < batch; ++b)
    for (int c = 0; c < channels; ++c) {
      T* p = y + (int64_t(b) * channels + c) * plane;
      for (int64_t i = 0; i < plane; ++i) p[i] += bias[c];
    }
}

// db[c] = sum over batch and plane of dy (B, C, P)
template <typename T>
void channel_bias_grad(T* db, const T* dy, int batch, int channels, int64_t plane) {
  for (int c = 0; c < channels; ++c) {
    double s = 0;
    for (int b = 0; b < batch; ++b) {
      const T* p = dy + (int64_t(b) * channels + c) * plane;
      for (int64_t i = 0; i < plane; ++i) s += double(p[i]);
    }
    db[c] = static_cast<T>(s);
  }
}

}  // namespace

template <typename T>
void matmul(T* c, const T* a, const T* b, int64_t m, int64_t n, int64_t k, bool accumulate) {
  // Blocks of columns keep a k x kBlock panel of B in cache while every row of A streams past;
  // the innermost loop is an axpy over contiguous columns, which the compiler vectorises
  // without reordering any sum.
  constexpr int64_t kBlock = 256;
  const int64_t nblocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel
  {
    std::vector<double> acc(kBlock);
#pragma omp for collapse(2) schedule(static)
    for (int64_t jb = 0; jb < nblocks; ++jb)
      for (int64_t i = 0; i < m; ++i) {
        const int64_t j0 = jb * kBlock;
        const int64_t nj = std::min(kBlock, n - j0);
        T* crow = c + i * n + j0;
        for (int64_t j = 0; j < nj; ++j) acc[j] = accumulate ? double(crow[j]) : 0.0;
        const T* arow = a + i * k;
        for (int64_t kk = 0; kk < k; ++kk) {
          const double aik = double(arow[kk]);
          const T* brow = b + kk * n + j0;
          for (int64_t j = 0; j < nj; ++j) acc[j] += aik * double(brow[j]);
        }
        for (int64_t j = 0; j < nj; ++j) crow[j] = static_cast<T>(acc[j]);
      }
  }
}

template <typename T>
void conv2d_forward(T* y, const T* x, const T* w, const T* bias, int batch, const Layer& l) {
  check_kind(l, LayerKind::Conv2d, "conv2d_forward");
  const Geom g = conv_geom(l);
  const int64_t n = batch * g.grid();
  const int64_t kk = int64_t(l.in_channels) * l.kernel * l.kernel;
  std::vector<T> cols(size_t(kk * n)), out(size_t(l.out_channels * n));
  im2col(cols.data(), x, batch, g);
  matmul(out.data(), w, cols.data(), l.out_channels, n, kk, false);  // (out, B*P)
  to_batch_major(y, out.data(), batch, l.out_channels, g.grid());
  add_channel_bias(y, bias, batch, l.out_channels, g.grid());
}

template <typename T>
void conv2d_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, int batch,
                     const Layer& l) {
  check_kind(l, LayerKind::Conv2d, "conv2d_backward");
  const Geom g = conv_geom(l);
  const int64_t n = batch * g.grid();
  const int64_t kk = int64_t(l.in_channels) * l.kernel * l.kernel;
  std::vector<T> dyc(size_t(l.out_channels * n));
  to_channel_major(dyc.data(), dy, batch, l.out_channels, g.grid());
  channel_bias_grad(db, dy, batch, l.out_channels, g.grid());
  // dW (out, in*9) = dY (out, B*P) . cols^T (B*P, in*9): the sum runs over batch and space.
  std::vector<T> cols(size_t(kk * n)), cols_t(size_t(kk * n));
  im2col(cols.data(), x, batch, g);
  transpose(cols_t.data(), cols.data(), kk, n);
  matmul(dw, dyc.data(), cols_t.data(), l.out_channels, kk, n, false);
  if (dx) {
    // dcols (in*9, B*P) = W^T (in*9, out) . dY (out, B*P), then scatter back to the image.
    std::vector<T> w_t(size_t(kk * l.out_channels));
    transpose(w_t.data(), w, l.out_channels, kk);
    matmul(cols.data(), w_t.data(), dyc.data(), kk, n, l.out_channels, false);
    col2im(dx, cols.data(), batch, g);
  }
}

template <typename T>
void conv_transpose2d_forward(T* y, const T* x, const T* w, const T* bias, int batch,
                              const Layer& l) {
  check_kind(l, LayerKind::ConvTranspose2d, "conv_transpose2d_forward");
  const Geom g = deconv_geom(l);  // image = y
  const int64_t n = batch * g.grid();
  const int64_t kk = int64_t(l.out_channels) * l.kernel * l.kernel;
  // cols (out*9, B*Pin) = W^T (out*9, in) . X (in, B*Pin), then scatter into y.
  std::vector<T> xc(size_t(l.in_channels * n)), w_t(size_t(kk * l.in_channels)),
      cols(size_t(kk * n));
  to_channel_major(xc.data(), x, batch, l.in_channels, g.grid());
  transpose(w_t.data(), w, l.in_channels, kk);
  matmul(cols.data(), w_t.data(), xc.data(), kk, n, l.in_channels, false);
  col2im(y, cols.data(), batch, g);
  add_channel_bias(y, bias, batch, l.out_channels, int64_t(l.out_h) * l.out_w);
}

template <typename T>
void conv_transpose2d_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, int batch,
                               const Layer& l) {
  check_kind(l, LayerKind::ConvTranspose2d, "conv_transpose2d_backward");
  const Geom g = deconv_geom(l);
  const int64_t n = batch * g.grid();
  const int64_t kk = int64_t(l.out_channels) * l.kernel * l.kernel;
  channel_bias_grad(db, dy, batch, l.out_channels, int64_t(l.out_h) * l.out_w);
  std::vector<T> dcols(size_t(kk * n));
  im2col(dcols.data(), dy, batch, g);  // (out*9, B*Pin)
  // dW (in, out*9) = X (in, B*Pin) . dcols^T (B*Pin, out*9)
  std::vector<T> xc(size_t(l.in_channels * n)), dcols_t(size_t(kk * n));
  to_channel_major(xc.data(), x, batch, l.in_channels, g.grid());
  transpose(dcols_t.data(), dcols.data(), kk, n);
  matmul(dw, xc.data(), dcols_t.data(), l.in_channels, kk, n, false);
  if (dx) {
    // dX (in, B*Pin) = W (in, out*9) . dcols (out*9, B*Pin)
    std::vector<T> dxc(size_t(l.in_channels * n));
    matmul(dxc.data(), w, dcols.data(), l.in_channels, n, kk, false);
    to_batch_major(dx, dxc.data(), batch, l.in_channels, g.grid());
  }
}

template <typename T>
void linear_forward(T* y, const T* x, const T* w, const T* bias, int batch, int in, int out) {
  std::vector<T> w_t(size_t(in) * out);
  transpose(w_t.data(), w, out, in);
  matmul(y, x, w_t.data(), batch, out, in, false);
  for (int b = 0; b < batch; ++b)
    for (int o = 0; o < out; ++o) y[int64_t(b) * out + o] += bias[o];
}

template <typename T>
void linear_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, int batch, int in,
                     int out) {
  std::vector<T> dy_t(size_t(batch) * out);
  transpose(dy_t.data(), dy, batch, out);
  matmul(dw, dy_t.data(), x, out, in, batch, false);  // (out, B) . (B, in)
  for (int o = 0; o < out; ++o) {
    double s = 0;
    for (int b = 0; b < batch; ++b) s += double(dy[int64_t(b) * out + o]);
    db[o] = static_cast<T>(s);
  }
  if (dx) matmul(dx, dy, w, batch, in, out, false);  // (B, out) . (out, in)
}

template <typename T>
void relu_forward(T* y, const T* x, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] = x[i] > T(0) ? x[i] : T(0);
}

template <typename T>
void relu_backward(T* dx, const T* dy, const T* y, size_t n) {
  for (size_t i = 0; i < n; ++i) dx[i] = y[i] > T(0) ? dy[i] : T(0);
}

template <typename T>
void reparam_forward(T* z, const T* mu, const T* logvar, const T* eps, size_t n) {
  for (size_t i = 0; i < n; ++i) z[i] = mu[i] + std::exp(logvar[i] * T(0.5)) * eps[i];
}

template <typename T>
void reparam_backward(T* dmu, T* dlogvar, const T* dz, const T* mu, const T* logvar, const T* eps,
                      int batch, int latent_dim, double beta) {
  const double scale = beta / double(batch);
  const size_t n = size_t(batch) * latent_dim;
  for (size_t i = 0; i < n; ++i) {
    const double lv = double(logvar[i]);
    dmu[i] = static_cast<T>(double(dz[i]) + scale * double(mu[i]));
    dlogvar[i] = static_cast<T>(double(dz[i]) * double(eps[i]) * 0.5 * std::exp(0.5 * lv) +
                                scale * 0.5 * (std::exp(lv) - 1.0));
  }
}

template <typename T>
LossParts bce_kl_loss(T* dlogits, double* recon_per_image, double* kl_per_image, const T* logits,
                      const T* x, const T* mu, const T* logvar, int batch, int pixels,
                      int latent_dim, double beta) {
  LossParts sum;
  const double inv_b = 1.0 / double(batch);
  for (int b = 0; b < batch; ++b) {
    double recon = 0;
    for (int p = 0; p < pixels; ++p) {
      const int64_t i = int64_t(b) * pixels + p;
      const double l = double(logits[i]), t = double(x[i]);
      recon += std::max(l, 0.0) - l * t + std::log1p(std::exp(-std::abs(l)));
      const double e = std::exp(-std::abs(l));  // sigmoid without overflow
      const double sig = l >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
      dlogits[i] = static_cast<T>((sig - t) * inv_b);
    }
    double kl = 0;
    for (int j = 0; j < latent_dim; ++j) {
      const int64_t i = int64_t(b) * latent_dim + j;
      const double m = double(mu[i]), lv = double(logvar[i]);
      kl += -0.5 * (1.0 + lv - m * m - std::exp(lv));
    }
    if (recon_per_image) recon_per_image[b] = recon;
    if (kl_per_image) kl_per_image[b] = kl;
    sum.recon += recon;
    sum.kl += kl;
  }
  sum.recon *= inv_b;
  sum.kl *= inv_b;
  sum.loss = sum.recon + beta * sum.kl;
  return sum;
}

void adam_step(float* params, float* m, float* v, const float* grads, size_t n,
               const AdamConfig& cfg, int64_t step) {
  const StepScalars sc = step_scalars(cfg.lr, cfg.beta1, cfg.beta2, step);
  const float step_size = sc.step_size, inv_sqrt_bc2 = sc.inv_sqrt_bc2;
  for (size_t i = 0; i < n; ++i) {
    const float g = grads[i];
    m[i] = cfg.beta1 * m[i] + (1.0f - cfg.beta1) * g;
    v[i] = cfg.beta2 * v[i] + (1.0f - cfg.beta2) * g * g;
    const float denom = std::sqrt(v[i]) * inv_sqrt_bc2 + cfg.eps;
    params[i] -= step_size * m[i] / denom;
  }
}

#define CUVAE_INSTANTIATE(T)                                                                      \
  template void matmul<T>(T*, const T*, const T*, int64_t, int64_t, int64_t, bool);               \
  template void conv2d_forward<T>(T*, const T*, const T*, const T*, int, const Layer&);           \
  template void conv2d_backward<T>(T*, T*, T*, const T*, const T*, const T*, int, const Layer&);  \
  template void conv_transpose2d_forward<T>(T*, const T*, const T*, const T*, int, const Layer&); \
  template void conv_transpose2d_backward<T>(T*, T*, T*, const T*, const T*, const T*, int,       \
                                             const Layer&);                                       \
  template void linear_forward<T>(T*, const T*, const T*, const T*, int, int, int);               \
  template void linear_backward<T>(T*, T*, T*, const T*, const T*, const T*, int, int, int);      \
  template void relu_forward<T>(T*, const T*, size_t);                                            \
  template void relu_backward<T>(T*, const T*, const T*, size_t);                                 \
  template void reparam_forward<T>(T*, const T*, const T*, const T*, size_t);                     \
  template void reparam_backward<T>(T*, T*, const T*, const T*, const T*, const T*, int, int,     \
                                    double);                                                      \
  template LossParts bce_kl_loss<T>(T*, double*, double*, const T*, const T*, const T*, const T*, \
                                    int, int, int, double);

CUVAE_INSTANTIATE(float)
CUVAE_INSTANTIATE(double)
#undef CUVAE_INSTANTIATE

}  // namespace cuvae::cpu
