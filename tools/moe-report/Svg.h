//===- Svg.h - moe-report: what its SVG pictures share ----------*- C++ -*-===//
//
// Part of moe-opt. The pieces both moe-report pictures (StatsReport.cpp,
// RoutingReport.cpp) draw alike: the document's opening, escaped text,
// colour scales and a heat-map cell that carries its number.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TOOLS_MOE_REPORT_SVG_H
#define MOE_TOOLS_MOE_REPORT_SVG_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <string>

namespace moe::report {

/// The text of an SVG attribute or element, escaped.
std::string svgEscape(llvm::StringRef text);

/// A colour from white (f = 0) to `r`, `g`, `b` (f = 1), as #rrggbb.
std::string colorScale(double f, int r, int g, int b);
/// The fill of a heat-map cell: white (0) to dark blue (1).
std::string heatColor(double f);

/// The XML declaration, the <svg> element of a `width` x `height` picture
/// (sans-serif, 11 px), its <title> and a white background.
void openSvg(llvm::raw_ostream &os, int width, int height,
             llvm::StringRef title);

/// A heat-map cell: a <rect> of class `cls` at (x, y), `width` x `height`,
/// with the data-* attributes `data` (already formatted, e.g.
/// `data-layer="0" data-expert="3"`), filled `fill`, outlined `stroke`, and
/// `tooltip` as its <title>. With `label`, `value` is written in its centre,
/// white on dark fills (`shade`, the fill's position on its scale, above
/// 0.55), black otherwise.
void heatCell(llvm::raw_ostream &os, llvm::StringRef cls, llvm::StringRef data,
              int x, int y, int width, int height, llvm::StringRef fill,
              llvm::StringRef stroke, llvm::StringRef tooltip, bool label,
              int64_t value, double shade);

} // namespace moe::report

#endif // MOE_TOOLS_MOE_REPORT_SVG_H
