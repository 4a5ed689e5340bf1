//===- RoutingReport.cpp - moe-report routing: who goes with whom ---------===//
//
// Part of moe-opt. Draws routing decisions (moe-run --routing-out files, or
// the co-activation counts of a --record-profile file) as one self-contained
// SVG, in the style of moe-report stats: per layer and router, the
// co-activation matrix (how many tokens chose both expert i and expert j)
// and a histogram of the routing weights of the routed slots. Every cell
// and bar carries its number in data-* attributes and a <title> tooltip, so
// that the picture can be checked against the files it came from.
//
//===----------------------------------------------------------------------===//

#include "RoutingReport.h"
#include "Svg.h"

#include "moe/lib/Analysis/Profile.h"
#include "moe/lib/Weights/Npy.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallString.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>

using namespace llvm;

namespace moe::report {

namespace {

Error error(const Twine &message) {
  return createStringError(inconvertibleErrorCode(), message);
}

/// An orange scale for the diagonal (tokens per expert), apart from the
/// blue of the pairs.
std::string diagonalColor(double f) { return colorScale(f, 166, 54, 3); }

/// numpy.histogram's bin of `x` among `bins` equal bins over [lo, hi]
/// (edges lo + b * (hi - lo) / bins, the last hi; half-open bins but the
/// last), computed as numpy does so that a recount agrees at the edges;
/// -1 outside [lo, hi].
int64_t histogramBin(double x, double lo, double hi, int64_t bins,
                     const std::vector<double> &edges) {
  if (!(x >= lo && x <= hi))
    return -1;
  double norm = static_cast<double>(bins) / (hi - lo);
  int64_t i = static_cast<int64_t>((x - lo) * norm);
  if (i >= bins)
    i = bins - 1;
  if (x < edges[i])
    --i;
  else if (i != bins - 1 && x >= edges[i + 1])
    ++i;
  return std::clamp<int64_t>(i, 0, bins - 1);
}

/// One pair of routing files.
struct RoutingFiles {
  int64_t layer = 0, router = 0;
  std::string ids, weights;
};

/// Parses "<base><rest>.ids.npy": rest is "", ".r<N>", ".L<l>" or
/// ".L<l>.r<N>".
bool parseName(StringRef name, StringRef base, int64_t defaultLayer,
               RoutingFiles &out, bool &perLayer) {
  if (!name.consume_front(base) || !name.consume_back(".ids.npy"))
    return false;
  int64_t layer = defaultLayer, router = 0;
  perLayer = false;
  if (name.consume_front(".L")) {
    StringRef digits = name.take_while([](char c) { return isDigit(c); });
    if (digits.empty() || digits.getAsInteger(10, layer))
      return false;
    name = name.drop_front(digits.size());
    perLayer = true;
  }
  if (name.consume_front(".r")) {
    if (name.empty() || name.getAsInteger(10, router) || router < 1)
      return false;
    name = "";
  }
  if (!name.empty())
    return false;
  out.layer = layer;
  out.router = router;
  return true;
}

} // namespace

Expected<std::vector<RoutingRow>> readRoutingFiles(StringRef prefix,
                                                   int64_t experts,
                                                   int64_t layer,
                                                   int64_t bins) {
  if (bins < 1)
    return error("--bins must be at least 1, got " + Twine(bins));
  SmallString<256> dir(sys::path::parent_path(prefix));
  if (dir.empty())
    dir = ".";
  StringRef base = sys::path::filename(prefix);
  std::vector<RoutingFiles> found;
  bool anyPerLayer = false, anySingle = false;
  std::error_code ec;
  for (sys::fs::directory_iterator it(dir, ec), end; it != end && !ec;
       it.increment(ec)) {
    RoutingFiles f;
    bool perLayer = false;
    std::string name = sys::path::filename(it->path()).str();
    if (!parseName(name, base, layer, f, perLayer))
      continue;
    (perLayer ? anyPerLayer : anySingle) = true;
    f.ids = it->path();
    f.weights =
        f.ids.substr(0, f.ids.size() - strlen(".ids.npy")) + ".weights.npy";
    found.push_back(std::move(f));
  }
  if (ec)
    return error(dir + ": cannot list the folder: " + ec.message());
  if (found.empty())
    return error(prefix + ": no routing files (expected " + prefix +
                 ".ids.npy or " + prefix +
                 ".L<layer>.ids.npy, with .weights.npy, as moe-run "
                 "--routing-out writes them)");
  if (anyPerLayer && anySingle)
    return error(prefix + ": both " + prefix + ".ids.npy and " + prefix +
                 ".L<layer>.ids.npy files: give one run's prefix");
  llvm::sort(found, [](const RoutingFiles &a, const RoutingFiles &b) {
    return std::tie(a.layer, a.router) < std::tie(b.layer, b.router);
  });

  std::vector<RoutingRow> rows;
  for (const RoutingFiles &f : found) {
    Expected<NpyArray> ids = readNpy(f.ids);
    if (!ids)
      return ids.takeError();
    if (!sys::fs::exists(f.weights))
      return error(f.weights + ": missing (the routing weights of " + f.ids +
                   ")");
    Expected<NpyArray> weights = readNpy(f.weights);
    if (!weights)
      return weights.takeError();
    if (ids->shape.size() != 2 || ids->dtype != NpyDType::I32)
      return error(f.ids + ": expected int32 ids [T, K], got " +
                   Twine(ids->shape.size()) + "-d " + npyDescr(ids->dtype));
    if (weights->shape != ids->shape || weights->dtype != NpyDType::F32)
      return error(f.weights +
                   ": expected float32 weights of the ids' "
                   "shape [" +
                   Twine(ids->shape[0]) + ", " + Twine(ids->shape[1]) + "]");
    int64_t t = ids->shape[0], k = ids->shape[1];
    std::vector<int64_t> id = cantFail(ids->toI64());
    std::vector<float> w = weights->toF32();
    RoutingRow row;
    row.layer = f.layer;
    row.router = f.router;
    row.tokens = t;
    row.source = f.ids;
    int64_t e = experts;
    if (e <= 0) {
      e = 0;
      for (int64_t v : id)
        e = std::max(e, v + 1);
      if (e == 0)
        return error(f.ids + ": no slot chose an expert; give --experts to "
                             "draw it anyway");
    }
    row.experts = e;
    double lo = 0.0, hi = 1.0;
    for (int64_t i = 0; i < t * k; ++i) {
      if (id[i] < -1 || id[i] >= e)
        return error(formatv("{0}: token {1} slot {2}: expert id {3} is "
                             "outside [-1, {4})",
                             f.ids, i / k, i % k, id[i], e));
      if (id[i] < 0)
        continue;
      if (!std::isfinite(w[i]))
        return error(formatv("{0}: token {1} slot {2}: the routing weight "
                             "is not finite",
                             f.weights, i / k, i % k));
      lo = std::min(lo, static_cast<double>(w[i]));
      hi = std::max(hi, static_cast<double>(w[i]));
    }
    row.lo = lo;
    row.hi = hi;
    // Co-activation: each token's distinct experts, every pair once.
    row.coactivation.assign(e * e, 0);
    std::vector<int64_t> chosen;
    for (int64_t tok = 0; tok < t; ++tok) {
      chosen.clear();
      for (int64_t s = 0; s < k; ++s)
        if (id[tok * k + s] >= 0)
          chosen.push_back(id[tok * k + s]);
      llvm::sort(chosen);
      chosen.erase(std::unique(chosen.begin(), chosen.end()), chosen.end());
      for (int64_t a : chosen)
        for (int64_t b : chosen)
          ++row.coactivation[a * e + b];
    }
    // The weights of the routed slots.
    std::vector<double> edges(bins + 1);
    double step = (hi - lo) / static_cast<double>(bins);
    for (int64_t b = 0; b < bins; ++b)
      edges[b] = static_cast<double>(b) * step + lo;
    edges[bins] = hi;
    row.histogram.assign(bins, 0);
    for (int64_t i = 0; i < t * k; ++i)
      if (id[i] >= 0)
        ++row.histogram[histogramBin(w[i], lo, hi, bins, edges)];
    rows.push_back(std::move(row));
  }
  return rows;
}

Expected<std::vector<RoutingRow>> readProfileRows(StringRef path) {
  Expected<Profile> profile = readProfile(path);
  if (!profile)
    return profile.takeError();
  std::vector<RoutingRow> rows;
  for (const auto &[index, layer] : profile->layers) {
    if (layer.coactivation.empty())
      continue;
    RoutingRow row;
    row.layer = index;
    row.experts = layer.experts;
    row.tokens = profile->tokens;
    row.source = path.str();
    for (double v : layer.coactivation)
      row.coactivation.push_back(static_cast<int64_t>(std::llround(v)));
    rows.push_back(std::move(row));
  }
  if (rows.empty())
    return error(path + ": no layer has a coactivation tensor to draw");
  return rows;
}

std::string routingSvg(const std::vector<RoutingRow> &rows, StringRef title) {
  constexpr int kLeft = 60, kTop = 40, kGap = 60, kHistW = 300, kHistH = 160,
                kRowGap = 70;
  int64_t maxExperts = 1;
  for (const RoutingRow &r : rows)
    maxExperts = std::max(maxExperts, r.experts);
  int cell = maxExperts > 64   ? 6
             : maxExperts > 32 ? 10
             : maxExperts > 16 ? 16
                               : 24;
  int matrix = static_cast<int>(maxExperts) * cell;
  int blockH = std::max(matrix, kHistH) + kRowGap;
  int histX = kLeft + matrix + kGap;
  int width = histX + kHistW + 80;
  int height = kTop + static_cast<int>(rows.size()) * blockH + 20;

  std::string s;
  raw_string_ostream os(s);
  openSvg(os, width, height, title);
  os << formatv("<text x=\"{0}\" y=\"18\" font-size=\"14\">Co-activation: "
                "tokens that chose both experts (diagonal, orange: tokens "
                "per expert)</text>\n",
                kLeft);

  for (auto [n, r] : llvm::enumerate(rows)) {
    int top = kTop + static_cast<int>(n) * blockH + 30;
    int64_t e = r.experts;
    std::string label =
        r.router == 0
            ? formatv("layer {0}", r.layer).str()
            : formatv("layer {0} router {1}", r.layer, r.router).str();
    os << formatv("<g class=\"layer\" data-layer=\"{0}\" data-router=\"{1}\" "
                  "data-experts=\"{2}\" data-tokens=\"{3}\">\n",
                  r.layer, r.router, e, r.tokens);
    os << formatv("<text x=\"{0}\" y=\"{1}\" font-size=\"13\">{2}: {3} "
                  "tokens, {4} experts<title>{5}</title></text>\n",
                  kLeft, top - 14, label, r.tokens, e, svgEscape(r.source));

    // The matrix: the pairs on a blue scale, the diagonal on orange.
    int64_t maxPair = 0, maxDiag = 0;
    for (int64_t i = 0; i < e; ++i)
      for (int64_t j = 0; j < e; ++j)
        (i == j ? maxDiag : maxPair) =
            std::max(i == j ? maxDiag : maxPair, r.coactivation[i * e + j]);
    os << "<g class=\"coactivation\">\n";
    for (int64_t i = 0; i < e; ++i) {
      if (cell >= 16 || i % 8 == 0) {
        os << formatv("<text x=\"{0}\" y=\"{1}\" text-anchor=\"end\">{2}"
                      "</text>\n",
                      kLeft - 4,
                      top + static_cast<int>(i) * cell + cell / 2 + 4, i);
        os << formatv("<text x=\"{0}\" y=\"{1}\" text-anchor=\"middle\">{2}"
                      "</text>\n",
                      kLeft + static_cast<int>(i) * cell + cell / 2, top - 3,
                      i);
      }
      for (int64_t j = 0; j < e; ++j) {
        int64_t c = r.coactivation[i * e + j];
        double f = i == j ? (maxDiag ? double(c) / maxDiag : 0.0)
                          : (maxPair ? double(c) / maxPair : 0.0);
        int x = kLeft + static_cast<int>(j) * cell;
        int y = top + static_cast<int>(i) * cell;
        heatCell(os, "pair",
                 formatv("data-layer=\"{0}\" data-router=\"{1}\" "
                         "data-i=\"{2}\" data-j=\"{3}\" data-tokens=\"{4}\"",
                         r.layer, r.router, i, j, c)
                     .str(),
                 x, y, cell, cell, i == j ? diagonalColor(f) : heatColor(f),
                 "#ddd",
                 formatv("{0}: experts {1} and {2}: {3} tokens", label, i, j, c)
                     .str(),
                 cell >= 24, c, f);
      }
    }
    os << "</g>\n";

    // The histogram of the routing weights.
    os << "<g class=\"histogram\">\n";
    if (r.histogram.empty()) {
      os << formatv("<text x=\"{0}\" y=\"{1}\">no routing weights per slot "
                    "(a profile keeps counts only)</text>\n",
                    histX, top + 20);
    } else {
      int64_t maxCount = 1, slots = 0;
      for (int64_t c : r.histogram) {
        maxCount = std::max(maxCount, c);
        slots += c;
      }
      int64_t bins = static_cast<int64_t>(r.histogram.size());
      double barW = static_cast<double>(kHistW) / bins;
      os << formatv("<text x=\"{0}\" y=\"{1}\">routing weights of the {2} "
                    "routed slots, {3} bins over [{4}, {5}]</text>\n",
                    histX, top - 3, slots, bins, formatv("{0:g}", r.lo).str(),
                    formatv("{0:g}", r.hi).str());
      double step = (r.hi - r.lo) / bins;
      for (int64_t b = 0; b < bins; ++b) {
        double h = static_cast<double>(r.histogram[b]) / maxCount * kHistH;
        double lo = r.lo + b * step, hi = b + 1 == bins ? r.hi : lo + step;
        os << formatv("<rect class=\"bin\" data-layer=\"{0}\" "
                      "data-router=\"{1}\" data-bin=\"{2}\" data-count=\"{3}\" "
                      "data-lo=\"{4}\" data-hi=\"{5}\" data-range-lo=\"{6}\" "
                      "data-range-hi=\"{7}\" data-bins=\"{8}\" x=\"{9:f2}\" "
                      "y=\"{10:f2}\" width=\"{11:f2}\" height=\"{12:f2}\" "
                      "fill=\"#1b9e77\"><title>{13}: weights in [{4}, {5}"
                      "{14}: {3} slots</title></rect>\n",
                      r.layer, r.router, b, r.histogram[b],
                      formatv("{0:g}", lo).str(), formatv("{0:g}", hi).str(),
                      formatv("{0:e16}", r.lo).str(),
                      formatv("{0:e16}", r.hi).str(), bins, histX + b * barW,
                      top + kHistH - h, std::max(barW - 1, 0.5), h, label,
                      b + 1 == bins ? "]" : ")");
      }
      os << formatv("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" "
                    "stroke=\"black\"/>\n",
                    histX, top + kHistH, histX + kHistW);
      os << formatv("<text x=\"{0}\" y=\"{1}\">{2}</text>\n", histX,
                    top + kHistH + 14, formatv("{0:g}", r.lo).str());
      os << formatv("<text x=\"{0}\" y=\"{1}\" text-anchor=\"end\">{2}"
                    "</text>\n",
                    histX + kHistW, top + kHistH + 14,
                    formatv("{0:g}", r.hi).str());
      os << formatv("<text x=\"{0}\" y=\"{1}\" text-anchor=\"end\">{2}"
                    "</text>\n",
                    histX - 4, top + 8, maxCount);
    }
    os << "</g>\n</g>\n";
  }
  os << "</svg>\n";
  return s;
}

} // namespace moe::report
