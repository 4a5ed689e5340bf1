//===- StatsReport.cpp - moe-report stats: the load picture ---------------===//
//
// Part of moe-opt. Draws the JSON of moe-run --stats (docs/stats.md) as one
// self-contained SVG: a heat map of tokens per expert (a row per layer and
// router, a column per expert) and a bar chart of each row's imbalance
// (max/mean tokens per expert). Plain text SVG, no library. Every cell and
// bar carries its number in data-* attributes and a <title> tooltip, so the
// picture can be checked against the file it came from.
//
//===----------------------------------------------------------------------===//

#include "StatsReport.h"
#include "Svg.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cmath>

using namespace llvm;

namespace moe::report {

namespace {

Error error(const Twine &message) {
  return createStringError(inconvertibleErrorCode(), message);
}

} // namespace

Expected<std::vector<StatsRow>> readStats(StringRef path) {
  auto buffer = MemoryBuffer::getFile(path);
  if (!buffer)
    return error(path + ": cannot read: " + buffer.getError().message());
  auto parsed = json::parse((*buffer)->getBuffer());
  if (!parsed)
    return error(path + ": not JSON: " + toString(parsed.takeError()));
  const json::Object *root = parsed->getAsObject();
  if (!root || root->getString("format") != "moe-run-stats")
    return error(path + ": not a moe-run --stats file (expected \"format\": "
                        "\"moe-run-stats\")");
  const json::Array *layers = root->getArray("layers");
  if (!layers)
    return error(path + ": \"layers\": missing (expected an array)");
  std::vector<StatsRow> rows;
  for (auto [i, l] : llvm::enumerate(*layers)) {
    std::string at = formatv("{0}: layers[{1}]", path, i).str();
    const json::Object *lo = l.getAsObject();
    std::optional<int64_t> layer = lo ? lo->getInteger("layer") : std::nullopt;
    const json::Array *routers = lo ? lo->getArray("routers") : nullptr;
    if (!layer || !routers)
      return error(at + ": expected an object with \"layer\" (an integer) "
                        "and \"routers\" (an array)");
    for (auto [r, v] : llvm::enumerate(*routers)) {
      std::string rAt = formatv("{0}.routers[{1}]", at, r).str();
      const json::Object *ro = v.getAsObject();
      const json::Array *counts = ro ? ro->getArray("tokens_per_expert")
                                     : nullptr;
      std::optional<double> imbalance =
          ro ? ro->getNumber("imbalance") : std::nullopt;
      if (!counts || !imbalance)
        return error(rAt + ": expected \"tokens_per_expert\" (an array of "
                           "integers) and \"imbalance\" (a number)");
      StatsRow row;
      row.layer = *layer;
      row.router = static_cast<int64_t>(r);
      row.imbalance = *imbalance;
      for (auto [e, c] : llvm::enumerate(*counts)) {
        std::optional<int64_t> n = c.getAsInteger();
        if (!n || *n < 0)
          return error(formatv("{0}.tokens_per_expert[{1}]: expected an "
                               "integer >= 0",
                               rAt, e));
        row.tokensPerExpert.push_back(*n);
      }
      rows.push_back(std::move(row));
    }
  }
  if (rows.empty())
    return error(path + ": no layer with a routing to draw");
  return rows;
}

std::string statsSvg(const std::vector<StatsRow> &rows, StringRef title) {
  constexpr int kLabel = 70, kCell = 22, kTop = 60, kGap = 50, kBarW = 240;
  size_t experts = 0;
  int64_t maxLoad = 0;
  double maxImbalance = 1.0;
  for (const StatsRow &r : rows) {
    experts = std::max(experts, r.tokensPerExpert.size());
    for (int64_t c : r.tokensPerExpert)
      maxLoad = std::max(maxLoad, c);
    maxImbalance = std::max(maxImbalance, r.imbalance);
  }
  int cell = experts > 64 ? 8 : experts > 32 ? 14 : kCell;
  int heatW = static_cast<int>(experts) * cell;
  int height = kTop + static_cast<int>(rows.size()) * kCell + 60;
  int barX = kLabel + heatW + kGap;
  int width = barX + kBarW + 60;

  std::string s;
  raw_string_ostream os(s);
  openSvg(os, width, height, title);
  os << formatv("<text x=\"{0}\" y=\"18\" font-size=\"14\">Expert load: "
                "tokens per expert (max {1})</text>\n",
                kLabel, maxLoad);
  os << formatv("<text x=\"{0}\" y=\"18\" font-size=\"14\">Imbalance "
                "(max/mean)</text>\n",
                barX);

  // The heat map.
  os << "<g id=\"heatmap\">\n";
  for (size_t e = 0; e < experts; ++e)
    if (cell >= kCell || e % 8 == 0)
      os << formatv("<text x=\"{0}\" y=\"{1}\" text-anchor=\"middle\">{2}"
                    "</text>\n",
                    kLabel + static_cast<int>(e) * cell + cell / 2, kTop - 6,
                    e);
  for (auto [i, r] : llvm::enumerate(rows)) {
    int y = kTop + static_cast<int>(i) * kCell;
    std::string label = r.router == 0
                            ? formatv("L{0}", r.layer).str()
                            : formatv("L{0}.r{1}", r.layer, r.router).str();
    os << formatv("<text x=\"{0}\" y=\"{1}\" text-anchor=\"end\">{2}</text>\n",
                  kLabel - 6, y + kCell / 2 + 4, label);
    for (auto [e, c] : llvm::enumerate(r.tokensPerExpert)) {
      double f = maxLoad > 0 ? static_cast<double>(c) / maxLoad : 0.0;
      int x = kLabel + static_cast<int>(e) * cell;
      heatCell(os, "cell",
               formatv("data-layer=\"{0}\" data-router=\"{1}\" "
                       "data-expert=\"{2}\" data-tokens=\"{3}\"",
                       r.layer, r.router, e, c)
                   .str(),
               x, y, cell, kCell, heatColor(f), "#ccc",
               formatv("layer {0} router {1} expert {2}: {3} tokens", r.layer,
                       r.router, e, c)
                   .str(),
               cell >= kCell, c, f);
    }
  }
  os << "</g>\n";

  // The bar chart, with the balanced line at 1.
  os << "<g id=\"imbalance\">\n";
  double scale = kBarW / maxImbalance;
  for (auto [i, r] : llvm::enumerate(rows)) {
    int y = kTop + static_cast<int>(i) * kCell;
    os << formatv("<rect class=\"bar\" data-layer=\"{0}\" data-router=\"{1}\" "
                  "data-imbalance=\"{2}\" x=\"{3}\" y=\"{4}\" width=\"{5:f2}\" "
                  "height=\"{6}\" fill=\"#d95f02\"><title>layer {0} "
                  "router {1}: imbalance {2}</title></rect>\n",
                  r.layer, r.router, formatv("{0:f4}", r.imbalance).str(),
                  barX, y + 3, r.imbalance * scale, kCell - 6);
    os << formatv("<text x=\"{0:f2}\" y=\"{1}\">{2:f3}</text>\n",
                  barX + r.imbalance * scale + 4, y + kCell / 2 + 4,
                  r.imbalance);
  }
  int bottom = kTop + static_cast<int>(rows.size()) * kCell;
  os << formatv("<line x1=\"{0:f2}\" y1=\"{1}\" x2=\"{0:f2}\" y2=\"{2}\" "
                "stroke=\"black\" stroke-dasharray=\"4 3\"/>\n",
                barX + scale, kTop - 4, bottom + 4);
  os << formatv("<text x=\"{0:f2}\" y=\"{1}\" text-anchor=\"middle\">1.0 "
                "(balanced)</text>\n",
                barX + scale, bottom + 18);
  os << "</g>\n</svg>\n";
  return s;
}

} // namespace moe::report
