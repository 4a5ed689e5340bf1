//===- Svg.cpp - moe-report: what its SVG pictures share ------------------===//
//
// Part of moe-opt.
//
//===----------------------------------------------------------------------===//

#include "Svg.h"

#include "llvm/Support/FormatVariadic.h"

#include <algorithm>
#include <cmath>

using namespace llvm;

namespace moe::report {

std::string svgEscape(StringRef text) {
  std::string out;
  for (char c : text) {
    switch (c) {
    case '<': out += "&lt;"; break;
    case '>': out += "&gt;"; break;
    case '&': out += "&amp;"; break;
    case '"': out += "&quot;"; break;
    default: out += c;
    }
  }
  return out;
}

std::string colorScale(double f, int r, int g, int b) {
  f = std::clamp(f, 0.0, 1.0);
  auto mix = [&](int to) {
    return static_cast<int>(std::lround(255 + (to - 255) * f));
  };
  return formatv("#{0:x-2}{1:x-2}{2:x-2}", mix(r), mix(g), mix(b)).str();
}

std::string heatColor(double f) { return colorScale(f, 8, 48, 107); }

void openSvg(raw_ostream &os, int width, int height, StringRef title) {
  os << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  os << formatv("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" "
                "height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
                "font-family=\"sans-serif\" font-size=\"11\">\n",
                width, height);
  os << "<title>" << svgEscape(title) << "</title>\n";
  os << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
}

void heatCell(raw_ostream &os, StringRef cls, StringRef data, int x, int y,
              int width, int height, StringRef fill, StringRef stroke,
              StringRef tooltip, bool label, int64_t value, double shade) {
  os << formatv("<rect class=\"{0}\" {1} x=\"{2}\" y=\"{3}\" width=\"{4}\" "
                "height=\"{5}\" fill=\"{6}\" stroke=\"{7}\"><title>{8}"
                "</title></rect>\n",
                cls, data, x, y, width, height, fill, stroke, tooltip);
  if (label)
    os << formatv("<text x=\"{0}\" y=\"{1}\" text-anchor=\"middle\" "
                  "font-size=\"8\" fill=\"{2}\">{3}</text>\n",
                  x + width / 2, y + height / 2 + 3,
                  shade > 0.55 ? "white" : "black", value);
}

} // namespace moe::report
