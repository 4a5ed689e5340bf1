//===- AffinityBound.cpp - Eigenvalue bound of the affinity objective -----===//
//
// Part of moe-opt.
//
// A placement of L layers on G GPUs is X = [X_0; ...; X_{L-1}] (n x G,
// n = sum E_l, X[i][g] = 1 where expert i sits on GPU g), with E_l/G ones
// per column in each layer. Its staying weight is tr(X^T M X), M symmetric
// with T_l / 2 in block (l, l+1) and its transpose in (l+1, l). Write
// X Q with Q orthogonal, first column 1/sqrt(G): that column of X Q is the
// all-ones vector over sqrt(G); every other column w has sum 0 within each
// layer (P w = w, P centring each layer), squared norm E_l/G within layer
// l and K = sum_l E_l/G in all, and the columns are orthogonal. So, for
// any diagonal D and any nu >= 0, with A = M + D - sum_l nu_l q_l q_l^T
// (q_l: layer l's centred load vector, normalised, in block l),
//
//   stay(X) = tr(X^T A X) - sum(D) + sum_l nu_l sum_g (q_l . x_g)^2
//          <= 1^T A 1 / G + K * (sum of the G-1 largest eigenvalues of PAP)
//             - sum(D) + sum_l nu_l c_l                               (Ky Fan)
//
// where c_l bounds sum_g (q_l . x_g)^2 = sum_g (s_g - S/G)^2 / |P p_l|^2
// over the GPU loads s_g that layer l can have (each between the sum of
// its E_l/G lightest and heaviest loads, and the load bound where there is
// one; sum S): a convex function, largest at a vertex of that box. D and
// nu are improved by a subgradient descent on approximate eigenpairs
// (block Krylov, warm started); the bound reported is then checked with
// eigenvalue counts (Sylvester's law of inertia on a block LDL^T of
// t I - PAP, LAPACK's Bunch-Kaufman factorisation of each block, in
// double precision), so it does not rest on the approximate eigenvalues.
//
//===----------------------------------------------------------------------===//

#include "AffinityBound.h"

#include <lapacke.h>

#include <algorithm>
#include <chrono>
#include <numeric>
#include <random>
#include <vector>

using namespace llvm;

namespace moe {
namespace {

using Clock = std::chrono::steady_clock;
using Vec = std::vector<double>;

double seconds(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double dot(const Vec &a, const Vec &b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i)
    s += a[i] * b[i];
  return s;
}

/// The chain of layers as one operator on R^n.
struct Chain {
  ArrayRef<LayerLoad> layers;
  int64_t L = 0, n = 0, gpus = 0;
  std::vector<int64_t> off, size;
  /// sum_l E_l / G: the squared norm of each centred placement column.
  double K = 0;
  /// 1^T M 1: the transition weight of every layer pair.
  double total = 0;
  /// Per layer: the centred load direction q_l (in place, n entries; 0
  /// where the layer has no load term) and c_l.
  Vec q;
  std::vector<char> hasLoad;
  Vec cap;
};

/// Multipliers: the diagonal D and one nu per layer.
struct Mult {
  Vec d, nu;
};

Chain makeChain(ArrayRef<LayerLoad> layers, int64_t gpus,
                ArrayRef<double> loadBounds) {
  Chain c;
  c.layers = layers;
  c.L = layers.size();
  c.gpus = gpus;
  for (const LayerLoad &l : layers) {
    c.off.push_back(c.n);
    c.size.push_back(l.load.size());
    c.n += l.load.size();
    c.K += double(l.load.size()) / double(gpus);
  }
  for (int64_t l = 0; l + 1 < c.L; ++l)
    for (double t : layers[l].transition)
      c.total += t;
  c.q.assign(c.n, 0.0);
  c.hasLoad.assign(c.L, 0);
  c.cap.assign(c.L, 0.0);
  for (int64_t l = 0; l < c.L; ++l) {
    ArrayRef<double> p = layers[l].load;
    int64_t e = p.size(), k = e / gpus;
    double sum = std::accumulate(p.begin(), p.end(), 0.0);
    Vec centred(e);
    double norm2 = 0;
    for (int64_t i = 0; i < e; ++i) {
      centred[i] = p[i] - sum / double(e);
      norm2 += centred[i] * centred[i];
    }
    if (!(norm2 > 1e-18 * (sum * sum + 1)) || k < 1)
      continue;
    Vec sorted(p.begin(), p.end());
    std::sort(sorted.begin(), sorted.end());
    double lo = std::accumulate(sorted.begin(), sorted.begin() + k, 0.0);
    double hi = std::accumulate(sorted.end() - k, sorted.end(), 0.0);
    if (!loadBounds.empty() && std::isfinite(loadBounds[l]))
      hi = std::min(hi, loadBounds[l]);
    if (hi < lo || double(gpus) * hi < sum || double(gpus) * lo > sum)
      continue;
    // The largest sum of squared deviations: GPUs filled to hi in turn.
    double left = sum - double(gpus) * lo, dev2 = 0;
    for (int64_t g = 0; g < gpus; ++g) {
      double s = lo + std::min(hi - lo, std::max(left, 0.0));
      left -= s - lo;
      dev2 += (s - sum / double(gpus)) * (s - sum / double(gpus));
    }
    double norm = std::sqrt(norm2);
    for (int64_t i = 0; i < e; ++i)
      c.q[c.off[l] + i] = centred[i] / norm;
    c.hasLoad[l] = 1;
    c.cap[l] = dev2 / norm2;
  }
  return c;
}

void centre(const Chain &c, double *x) {
  for (int64_t l = 0; l < c.L; ++l) {
    double *v = x + c.off[l];
    double mean = 0;
    for (int64_t i = 0; i < c.size[l]; ++i)
      mean += v[i];
    mean /= double(c.size[l]);
    for (int64_t i = 0; i < c.size[l]; ++i)
      v[i] -= mean;
  }
}

/// y = P A P x.
void apply(const Chain &c, const Mult &u, const Vec &x, Vec &y, Vec &z) {
  z = x;
  centre(c, z.data());
  for (int64_t i = 0; i < c.n; ++i)
    y[i] = u.d[i] * z[i];
  for (int64_t l = 0; l < c.L; ++l) {
    if (!c.hasLoad[l] || u.nu[l] == 0)
      continue;
    int64_t a = c.off[l], e = c.size[l];
    double s = 0;
    for (int64_t i = 0; i < e; ++i)
      s += c.q[a + i] * z[a + i];
    for (int64_t i = 0; i < e; ++i)
      y[a + i] -= u.nu[l] * s * c.q[a + i];
  }
  for (int64_t l = 0; l + 1 < c.L; ++l) {
    const double *t = c.layers[l].transition.data();
    int64_t a = c.off[l], b = c.off[l + 1], e = c.size[l], f = c.size[l + 1];
    for (int64_t i = 0; i < e; ++i) {
      const double *row = t + i * f;
      double acc = 0, zi = 0.5 * z[a + i];
      for (int64_t j = 0; j < f; ++j) {
        acc += row[j] * z[b + j];
        y[b + j] += row[j] * zi;
      }
      y[a + i] += 0.5 * acc;
    }
  }
  centre(c, y.data());
}

/// Approximate eigenpairs of PAP: Rayleigh-Ritz on the block Krylov space
/// of `block` (`depth` blocks), largest first.
struct Ritz {
  Vec value, residual;
  std::vector<Vec> vector;
};

Ritz rayleighRitz(const Chain &c, const Mult &u, const std::vector<Vec> &block,
                  int depth, size_t want) {
  std::vector<Vec> Y, AY;
  Vec z(c.n), w(c.n);
  // Appends v orthonormalised against Y (two Gram-Schmidt passes); false
  // where little of it is left.
  auto append = [&](Vec v) {
    double before = std::sqrt(dot(v, v));
    if (!(before > 0))
      return false;
    for (int pass = 0; pass < 2; ++pass)
      for (const Vec &y : Y) {
        double h = dot(y, v);
        for (int64_t i = 0; i < c.n; ++i)
          v[i] -= h * y[i];
      }
    double after = std::sqrt(dot(v, v));
    if (!(after > 1e-8 * before))
      return false;
    for (double &x : v)
      x /= after;
    Y.push_back(std::move(v));
    return true;
  };
  std::vector<Vec> cur = block;
  for (int s = 0; s < depth && !cur.empty() && int64_t(Y.size()) < c.n; ++s) {
    std::vector<Vec> next;
    for (Vec &v : cur) {
      if (int64_t(Y.size()) >= c.n || !append(std::move(v)))
        continue;
      apply(c, u, Y.back(), w, z);
      AY.push_back(w);
      next.push_back(w);
    }
    cur = std::move(next);
  }
  int q = Y.size();
  Vec h(size_t(q) * q), theta(q);
  for (int i = 0; i < q; ++i)
    for (int j = i; j < q; ++j) {
      double v = 0.5 * (dot(Y[i], AY[j]) + dot(Y[j], AY[i]));
      h[i + size_t(j) * q] = h[j + size_t(i) * q] = v;
    }
  Ritz r;
  if (q == 0 || LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'U', q, h.data(), q,
                               theta.data()) != 0)
    return r;
  for (int k = q - 1; k >= 0 && r.value.size() < want; --k) {
    Vec x(c.n, 0.0), ax(c.n, 0.0);
    for (int i = 0; i < q; ++i) {
      double s = h[i + size_t(k) * q];
      for (int64_t j = 0; j < c.n; ++j) {
        x[j] += s * Y[i][j];
        ax[j] += s * AY[i][j];
      }
    }
    double res = 0;
    for (int64_t j = 0; j < c.n; ++j)
      res += (ax[j] - theta[k] * x[j]) * (ax[j] - theta[k] * x[j]);
    r.value.push_back(theta[k]);
    r.residual.push_back(std::sqrt(res));
    r.vector.push_back(std::move(x));
  }
  return r;
}

/// `ritz` and the centred unit vectors of the (at most `extra`) rows where
/// PAP's diagonal is largest and above `above` (the m-th eigenvalue found
/// last): such a row's Rayleigh quotient shows an eigenvalue that the
/// Krylov space of the previous eigenvectors missed (a large d_i makes an
/// eigenvector close to row i), and the descent would then run on
/// eigenvalues that are too small.
std::vector<Vec> startBlock(const Chain &c, const Mult &u,
                            const std::vector<Vec> &ritz, size_t extra,
                            double above) {
  Vec diag(c.n);
  for (int64_t l = 0; l < c.L; ++l) {
    int64_t a = c.off[l], e = c.size[l];
    double sum = 0;
    for (int64_t i = 0; i < e; ++i)
      sum += u.d[a + i];
    for (int64_t i = 0; i < e; ++i)
      diag[a + i] = u.d[a + i] * (1 - 2.0 / double(e)) +
                    sum / (double(e) * double(e)) -
                    u.nu[l] * c.q[a + i] * c.q[a + i];
  }
  std::vector<int64_t> rows(c.n);
  std::iota(rows.begin(), rows.end(), 0);
  extra = std::min<size_t>(extra, c.n);
  std::partial_sort(rows.begin(), rows.begin() + extra, rows.end(),
                    [&](int64_t x, int64_t y) {
                      return diag[x] > diag[y] || (diag[x] == diag[y] && x < y);
                    });
  std::vector<Vec> block = ritz;
  for (size_t k = 0; k < extra && diag[rows[k]] > above; ++k) {
    Vec v(c.n, 0.0);
    v[rows[k]] = 1;
    centre(c, v.data());
    block.push_back(std::move(v));
  }
  return block;
}

/// The bound for multipliers `u` given (upper bounds on) the G-1 largest
/// eigenvalues of PAP.
double boundOf(const Chain &c, const Mult &u, ArrayRef<double> top) {
  double sumD = std::accumulate(u.d.begin(), u.d.end(), 0.0);
  double v = (c.total + sumD) / double(c.gpus) - sumD;
  for (int64_t g = 0; g + 1 < c.gpus; ++g)
    v += c.K * top[g];
  for (int64_t l = 0; l < c.L; ++l)
    v += u.nu[l] * c.cap[l];
  return v;
}

/// PAP as dense blocks: the diagonal blocks (symmetric, E_l x E_l) and
/// the centred transitions P T_l P (E_l x E_l+1, row-major; PAP holds half
/// of each).
struct Blocks {
  std::vector<Vec> diag, off;
};

Blocks makeBlocks(const Chain &c, const Mult &u) {
  Blocks b;
  for (int64_t l = 0; l < c.L; ++l) {
    int64_t e = c.size[l], a = c.off[l];
    Vec m(size_t(e) * e, 0.0);
    // P diag(d) P - nu q q^T (q is centred already).
    double mean = 0;
    for (int64_t i = 0; i < e; ++i)
      mean += u.d[a + i];
    mean /= double(e) * double(e);
    Vec rowMean(e);
    for (int64_t i = 0; i < e; ++i)
      rowMean[i] = u.d[a + i] / double(e);
    for (int64_t i = 0; i < e; ++i)
      for (int64_t j = 0; j < e; ++j) {
        double v = (i == j ? u.d[a + i] : 0.0) - rowMean[i] - rowMean[j] + mean;
        if (c.hasLoad[l])
          v -= u.nu[l] * c.q[a + i] * c.q[a + j];
        m[i * e + j] = v;
      }
    b.diag.push_back(std::move(m));
  }
  for (int64_t l = 0; l + 1 < c.L; ++l) {
    int64_t e = c.size[l], f = c.size[l + 1];
    const std::vector<double> &t = c.layers[l].transition;
    Vec rm(e, 0.0), cm(f, 0.0);
    double all = 0;
    for (int64_t i = 0; i < e; ++i)
      for (int64_t j = 0; j < f; ++j) {
        rm[i] += t[i * f + j] / double(f);
        cm[j] += t[i * f + j] / double(e);
        all += t[i * f + j];
      }
    all /= double(e) * double(f);
    Vec o(size_t(e) * f);
    for (int64_t i = 0; i < e; ++i)
      for (int64_t j = 0; j < f; ++j)
        o[i * f + j] = t[i * f + j] - rm[i] - cm[j] + all;
    b.off.push_back(std::move(o));
  }
  return b;
}

/// The number of eigenvalues of PAP above t: the negative eigenvalues of
/// t I - PAP, summed over the pivots of its block LDL^T (Sylvester); -1
/// where a pivot is singular (t is then moved).
int64_t countAbove(const Chain &c, const Blocks &b, double t) {
  int64_t neg = 0;
  int64_t e0 = c.size[0];
  Vec dm(size_t(e0) * e0);
  for (int64_t i = 0; i < e0 * e0; ++i)
    dm[i] = -b.diag[0][i];
  for (int64_t i = 0; i < e0; ++i)
    dm[i * e0 + i] += t;
  for (int64_t l = 0; l < c.L; ++l) {
    int64_t e = c.size[l];
    std::vector<lapack_int> ipiv(e);
    if (LAPACKE_dsytrf(LAPACK_COL_MAJOR, 'L', e, dm.data(), e, ipiv.data()) !=
        0)
      return -1;
    for (int64_t k = 0; k < e;) {
      double a = dm[k + k * e];
      if (ipiv[k] > 0) {
        if (a == 0)
          return -1;
        neg += a < 0;
        ++k;
        continue;
      }
      double off = dm[k + 1 + k * e], d = dm[(k + 1) + (k + 1) * e];
      double det = a * d - off * off;
      if (det == 0)
        return -1;
      neg += det < 0 ? 1 : (a + d < 0 ? 2 : 0);
      k += 2;
    }
    if (l + 1 == c.L)
      break;
    // X = D^{-1} C, C = -1/2 P T_l P (the block (l, l+1) of t I - PAP);
    // the next pivot is t I - PAP_(l+1) - C^T X.
    int64_t f = c.size[l + 1];
    const Vec &o = b.off[l];
    Vec x(size_t(e) * f);
    for (int64_t i = 0; i < e; ++i)
      for (int64_t j = 0; j < f; ++j)
        x[i + j * e] = -0.5 * o[i * f + j];
    if (LAPACKE_dsytrs(LAPACK_COL_MAJOR, 'L', e, f, dm.data(), e, ipiv.data(),
                       x.data(), e) != 0)
      return -1;
    // next = -C^T X first.
    Vec next(size_t(f) * f, 0.0);
    for (int64_t j = 0; j < f; ++j)
      for (int64_t i = 0; i < e; ++i) {
        double xi = x[i + j * e];
        if (xi == 0)
          continue;
        const double *row = o.data() + i * f;
        double *col = next.data() + j * f;
        for (int64_t a = 0; a < f; ++a)
          col[a] += 0.5 * row[a] * xi;
      }
    const Vec &pd = b.diag[l + 1];
    for (int64_t i = 0; i < f; ++i)
      for (int64_t j = 0; j <= i; ++j) {
        double v = (i == j ? t : 0.0) - pd[i * f + j] +
                   0.5 * (next[i + j * f] + next[j + i * f]);
        next[i + j * f] = next[j + i * f] = v;
      }
    dm = std::move(next);
  }
  return neg;
}

/// Upper bounds on the `m` largest eigenvalues of PAP from counts at the
/// Ritz values (a count c at t proves lambda_i <= t for i >= c), within
/// `deadline` after the first; Gershgorin's bound where none is proven.
Vec provenTop(const Chain &c, const Mult &u, const Ritz &r, int64_t m,
              Clock::time_point deadline) {
  Blocks b = makeBlocks(c, u);
  double gersh = -INFINITY;
  for (int64_t l = 0; l < c.L; ++l) {
    int64_t e = c.size[l];
    for (int64_t i = 0; i < e; ++i) {
      double s = b.diag[l][i * e + i];
      for (int64_t j = 0; j < e; ++j)
        if (j != i)
          s += std::abs(b.diag[l][i * e + j]);
      if (l + 1 < c.L)
        for (int64_t j = 0; j < c.size[l + 1]; ++j)
          s += 0.5 * std::abs(b.off[l][i * c.size[l + 1] + j]);
      if (l > 0)
        for (int64_t j = 0; j < c.size[l - 1]; ++j)
          s += 0.5 * std::abs(b.off[l - 1][j * e + i]);
      gersh = std::max(gersh, s);
    }
  }
  Vec top(m, gersh);
  double scale = std::abs(gersh) + 1;
  for (double v : r.value)
    scale = std::max(scale, std::abs(v));
  std::vector<int64_t> order{0};
  if (m > 1)
    order.push_back(m - 1);
  for (int64_t j = 1; j + 1 < m; ++j)
    order.push_back(j);
  for (int64_t j : order) {
    if (j > 0 && Clock::now() > deadline)
      break;
    if (size_t(j) >= r.value.size())
      continue;
    double margin = r.residual[j] + 1e-9 * scale;
    for (int attempt = 0; attempt < 8; ++attempt) {
      // Past the deadline: one count for the largest eigenvalue only.
      if (attempt > 0 && Clock::now() > deadline)
        break;
      double t = r.value[j] + margin;
      if (t >= top[j])
        break;
      int64_t above = countAbove(c, b, t);
      margin *= 4;
      if (above < 0)
        continue;
      for (int64_t i = above; i < m; ++i)
        top[i] = std::min(top[i], t);
      if (above <= j)
        break;
    }
  }
  for (int64_t i = 1; i < m; ++i)
    top[i] = std::min(top[i], top[i - 1]);
  // Then bisection on the widest interval [lower_j, top_j] while time is
  // left (the Ritz values guide it: they do not bound anything here; a
  // count above j at t only moves lower_j to t).
  Vec lower(m);
  for (int64_t j = 0; j < m; ++j)
    lower[j] =
        std::min(j < int64_t(r.value.size()) ? r.value[j] : gersh, top[j]);
  for (int step = 0; step < 8 * m && Clock::now() < deadline; ++step) {
    int64_t j = 0;
    for (int64_t i = 1; i < m; ++i)
      if (top[i] - lower[i] > top[j] - lower[j])
        j = i;
    if (top[j] - lower[j] <= 1e-7 * scale)
      break;
    double t = 0.5 * (lower[j] + top[j]);
    int64_t above = countAbove(c, b, t);
    if (above < 0) {
      lower[j] = t;
      continue;
    }
    for (int64_t i = 0; i < m; ++i) {
      if (i >= above)
        top[i] = std::min(top[i], t);
      else
        lower[i] = std::max(lower[i], t);
    }
    for (int64_t i = 1; i < m; ++i)
      top[i] = std::min(top[i], top[i - 1]);
  }
  return top;
}

} // namespace

SpectralBound spectralStayBound(ArrayRef<LayerLoad> layers, int64_t gpus,
                                ArrayRef<double> loadBounds, double target,
                                double budget) {
  auto t0 = Clock::now();
  SpectralBound out;
  Chain c = makeChain(layers, gpus, loadBounds);
  if (gpus <= 1 || c.L < 2) {
    out.bound = c.total;
    return out;
  }
  int64_t m = gpus - 1;
  size_t width = std::min<int64_t>(m + 3, c.n - c.L);
  if (int64_t(width) < m)
    return out;
  std::mt19937 rng(1);
  std::uniform_real_distribution<double> uni(-1, 1);
  std::vector<Vec> block(width, Vec(c.n));
  for (Vec &v : block) {
    for (double &x : v)
      x = uni(rng);
    centre(c, v.data());
  }
  Mult u{Vec(c.n, 0.0), Vec(c.L, 0.0)};
  Mult best = u;
  Ritz bestRitz;
  double mth = INFINITY;
  double bestValue = INFINITY, gamma = 1, checked = INFINITY;
  double tol = 1e-7 * std::max(std::abs(target), 1.0);
  auto deadline = t0 + std::chrono::duration_cast<Clock::duration>(
                           std::chrono::duration<double>(budget));
  // Multipliers while time is left (three quarters of it: the counts take
  // the rest).
  for (;; ++out.iterations) {
    if (out.iterations > 0 && seconds(t0) > 0.75 * budget)
      break;
    Ritz r = rayleighRitz(c, u, startBlock(c, u, block, m + 1, mth), 6, width);
    if (r.value.size() < size_t(m))
      break;
    block = r.vector;
    mth = r.value[m - 1];
    double value = boundOf(c, u, r.value);
    if (value < bestValue) {
      bestValue = value;
      best = u;
      bestRitz = r;
    }
    // Every 25 steps: the step is halved where they closed less than
    // 1/1000 of the gap to the target; stalled after 6 halvings.
    if (out.iterations % 25 == 0) {
      if (std::isfinite(checked) &&
          bestValue > checked - 1e-3 * (checked - target))
        gamma /= 2;
      checked = bestValue;
    }
    if (bestValue <= target + tol || gamma < 1.0 / 64 || out.iterations >= 5000)
      break;
    // The subgradient: d(value)/d d_i and d(value)/d nu_l.
    Vec gd(c.n, 1.0 / double(c.gpus) - 1.0), gn(c.L, 0.0);
    for (int64_t k = 0; k < m; ++k)
      for (int64_t i = 0; i < c.n; ++i)
        gd[i] += c.K * r.vector[k][i] * r.vector[k][i];
    for (int64_t l = 0; l < c.L; ++l) {
      if (!c.hasLoad[l])
        continue;
      gn[l] = c.cap[l];
      for (int64_t k = 0; k < m; ++k) {
        double s = 0;
        for (int64_t i = 0; i < c.size[l]; ++i)
          s += c.q[c.off[l] + i] * r.vector[k][c.off[l] + i];
        gn[l] -= c.K * s * s;
      }
      // nu stays >= 0: no step below it.
      if (u.nu[l] <= 0 && gn[l] > 0)
        gn[l] = 0;
    }
    double norm2 = dot(gd, gd) + dot(gn, gn);
    if (!(norm2 > 0))
      break;
    double step = gamma * std::max(value - target, tol) / norm2;
    for (int64_t i = 0; i < c.n; ++i)
      u.d[i] -= step * gd[i];
    for (int64_t l = 0; l < c.L; ++l)
      u.nu[l] = std::max(0.0, u.nu[l] - step * gn[l]);
  }
  if (bestRitz.value.size() < size_t(m))
    return out;
  // The check: sharper eigenpairs at the best multipliers while time is
  // left, then counts.
  Ritz r = bestRitz;
  for (int pass = 0; pass < 2 && Clock::now() < deadline; ++pass) {
    Ritz sharper = rayleighRitz(
        c, best, startBlock(c, best, r.vector, m + 1, r.value[m - 1]), 12,
        width);
    if (sharper.value.size() < size_t(m))
      break;
    r = std::move(sharper);
  }
  Vec top = provenTop(c, best, r, m, deadline);
  double bound = boundOf(c, best, top);
  // Rounding: the sums above and the factorisations, far below this.
  out.bound = bound + 1e-9 * (std::abs(bound) + c.total);
  out.seconds = seconds(t0);
  return out;
}

} // namespace moe
