//===- moe-bench.cpp - Times the layers of a package ----------------------===//
//
// Part of moe-opt. Runs every MoE layer of a package on the GPU (or the CPU
// emulation) for several token counts, on random inputs (never zeros), and
// prints the median time per layer; with --check DIR, also compares the
// outputs with reference outputs (DIR/x_T.f32 -> DIR/y_L_T.f32, raw float32
// files written by bench/gpu/prepare.sh). Plain C++ on the runtime: builds
// on a GPU machine without MLIR.
//
//   moe-bench PKG [--backend auto|cuda|emu] [--tokens 1,8,64]
//             [--repeat 20] [--check DIR]
//
//===----------------------------------------------------------------------===//

#include "moe/Model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace {
int usage() {
  std::fprintf(stderr, "usage: moe-bench PKG [--backend auto|cuda|emu] "
                       "[--tokens 1,8,64] [--repeat N] [--check DIR]\n");
  return 2;
}

std::vector<float> readRaw(const std::string &path, size_t count) {
  std::vector<float> v(count);
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char *>(v.data()),
          static_cast<std::streamsize>(count * sizeof(float)));
  if (!in)
    v.clear();
  return v;
}
} // namespace

int main(int argc, char **argv) {
  std::string pkg, backend = "auto", tokensList = "1,8,64", check;
  int repeat = 20;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--backend" && i + 1 < argc)
      backend = argv[++i];
    else if (a == "--tokens" && i + 1 < argc)
      tokensList = argv[++i];
    else if (a == "--repeat" && i + 1 < argc)
      repeat = std::max(1, std::atoi(argv[++i]));
    else if (a == "--check" && i + 1 < argc)
      check = argv[++i];
    else if (!a.empty() && a[0] == '-')
      return usage();
    else
      pkg = a;
  }
  if (pkg.empty())
    return usage();
  moe::ModelOptions options;
  options.backend = backend;
  auto model = moe::Model::open(pkg, options);
  if (!model) {
    std::fprintf(stderr, "moe-bench: error: %s\n", model.message().c_str());
    return 1;
  }
  moe::Model &m = *model.value();
  std::printf("moe-bench: %s on %s (%s)\n", pkg.c_str(), m.backend().c_str(),
              m.description().c_str());
  std::printf("%8s %8s %12s %12s %12s\n", "layer", "tokens", "median ms",
              "min ms", "max rel err");
  std::stringstream list(tokensList);
  std::string item;
  int status = 0;
  std::mt19937 rng(1234);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  while (std::getline(list, item, ',')) {
    int64_t tokens = std::atoll(item.c_str());
    if (tokens < 1) {
      std::fprintf(stderr, "moe-bench: error: bad token count '%s'\n",
                   item.c_str());
      return 1;
    }
    for (int64_t layer : m.layers()) {
      int64_t h = m.hidden(layer).value();
      std::vector<float> x(tokens * h), y(tokens * h);
      bool checked = false;
      if (!check.empty()) {
        x = readRaw(check + "/x_" + std::to_string(tokens) + ".f32",
                    tokens * h);
        checked = !x.empty();
        if (!checked)
          x.assign(tokens * h, 0.0f);
      }
      if (!checked)
        for (float &v : x)
          v = normal(rng);
      std::vector<double> ms;
      for (int r = 0; r < repeat + 2; ++r) {
        if (auto s = m.runLayer(layer, x.data(), tokens, y.data())) {
          std::fprintf(stderr, "moe-bench: error: %s\n", s.message().c_str());
          return 1;
        }
        if (r >= 2) // Warm-up runs are not timed.
          ms.push_back(m.lastMilliseconds());
      }
      std::sort(ms.begin(), ms.end());
      double err = -1;
      if (checked) {
        std::vector<float> ref =
            readRaw(check + "/y_" + std::to_string(layer) + "_" +
                        std::to_string(tokens) + ".f32",
                    tokens * h);
        if (!ref.empty()) {
          double mx = 0, diff = 0;
          for (size_t i = 0; i < ref.size(); ++i) {
            mx = std::max(mx, std::fabs(double(ref[i])));
            diff = std::max(diff, std::fabs(double(ref[i]) - y[i]));
          }
          err = diff / std::max(mx, 1e-30);
          if (err > 1e-2)
            status = 1;
        }
      }
      std::printf("%8lld %8lld %12.3f %12.3f %12s\n",
                  static_cast<long long>(layer),
                  static_cast<long long>(tokens), ms[ms.size() / 2], ms[0],
                  err < 0 ? "-" : std::to_string(err).c_str());
    }
  }
  return status;
}
