//===- moe-nvrtc.cpp - Compiles generated kernels with NVRTC --------------===//
//
// Part of moe-opt. Compiles a kernel source written by
// `moe-translate --moe-to-cuda` for one or more architectures (no GPU
// needed), through the kernel cache, and prints what ptxas reported for each
// kernel: registers, spills, shared memory.
//
//   moe-nvrtc KERNELS.cu [--arch sm_90a[,sm_80,...]] [-o DIR]
//
// Plain C++ on the runtime: links no MLIR.
//
//===----------------------------------------------------------------------===//

#include "moe/runtime/Compiler.h"
#include "moe/runtime/KernelCache.h"
#include "moe/runtime/KernelHeaders.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace {
const char *const kUsage =
    "usage: moe-nvrtc KERNELS.cu [--arch sm_90a[,sm_80,...]] [-o DIR]\n";

int usage() {
  std::cerr << kUsage;
  return 2;
}

int help() {
  std::cout << kUsage
            << "\nCompiles a kernel source written by `moe-translate "
               "--moe-to-cuda` with NVRTC\n(through the kernel cache; no "
               "GPU needed) and prints, per kernel, what ptxas\nreported: "
               "registers, stack frame, spill stores and loads, static shared\n"
               "memory.\n\n"
               "  --arch LIST   architectures, comma-separated: sm_XX, sm_XXa, "
               "sm_XXf or compute_XX,\n                sm_80 or newer; "
               "default sm_90a\n"
               "  -o DIR        write DIR/kernels.<arch>.cubin (and .ptx) for "
               "each architecture\n"
               "  -h, --help    print this help\n";
  return 0;
}
} // namespace

int main(int argc, char **argv) {
  std::string input, archs = "sm_90a", outDir;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if ((a == "--arch" || a == "-arch" || a == "-o") && i + 1 >= argc)
      return std::cerr << "moe-nvrtc: error: " << a << " needs a value\n",
             usage();
    if (a == "--arch" || a == "-arch")
      archs = argv[++i];
    else if (a.rfind("--arch=", 0) == 0)
      archs = a.substr(7);
    else if (a == "-o")
      outDir = argv[++i];
    else if (a == "--help" || a == "-h")
      return help();
    else if (!a.empty() && a[0] == '-')
      return std::cerr << "moe-nvrtc: error: unknown option '" << a
                       << "' (moe-nvrtc --help lists them)\n",
             usage();
    else if (!input.empty())
      return std::cerr << "moe-nvrtc: error: more than one input ('" << input
                       << "' and '" << a << "')\n",
             usage();
    else
      input = a;
  }
  if (input.empty())
    return usage();
  // Every architecture is checked before the first compile (the
  // unsupported ones with their reason).
  {
    std::stringstream list(archs);
    std::string arch;
    bool any = false;
    while (std::getline(list, arch, ',')) {
      any = true;
      if (moe::runtime::Status s = moe::runtime::validateArch(arch))
        return std::cerr << "moe-nvrtc: error: --arch: " << s.message()
                         << "\n",
               1;
    }
    if (!any)
      return std::cerr << "moe-nvrtc: error: --arch is empty (expected "
                          "sm_90a or a comma-separated list)\n",
             1;
  }
  std::ifstream in(input, std::ios::binary);
  if (!in)
    return std::cerr << "moe-nvrtc: error: cannot read " << input << ": "
                     << std::strerror(errno) << "\n",
           1;
  std::stringstream text;
  text << in.rdbuf();

  std::stringstream list(archs);
  std::string arch;
  int status = 0;
  while (std::getline(list, arch, ',')) {
    moe::runtime::CompileRequest request;
    request.source = text.str();
    request.headers = moe::kernelHeaders();
    request.arch = arch;
    auto compiled = moe::runtime::compileCached(request);
    if (!compiled) {
      std::cerr << "moe-nvrtc: error: " << input << " for " << arch << ": "
                << compiled.message() << "\n";
      status = 1;
      continue;
    }
    const auto &m = compiled.value();
    for (const std::string &w : m.warnings)
      std::cerr << "moe-nvrtc: warning: " << w << "\n";
    std::printf("%s: %s, %.2f s%s\n", input.c_str(), arch.c_str(),
                m.compileSeconds, m.fromCache ? " (cache hit)" : "");
    for (const auto &r : m.resources)
      if (r.isEntry)
        std::printf("  %-28s %3d registers, %lld bytes stack frame, %lld "
                    "bytes spill stores, %lld bytes spill loads, %lld bytes "
                    "static shared\n",
                    r.name.c_str(), r.registers,
                    static_cast<long long>(r.stackFrameBytes),
                    static_cast<long long>(r.spillStoresBytes),
                    static_cast<long long>(r.spillLoadsBytes),
                    static_cast<long long>(r.sharedBytes));
    if (!outDir.empty()) {
      // The PTX too: what a reader checks for local-memory traffic.
      for (const auto &[ext, bytes] :
           {std::pair<const char *, const std::string *>{"cubin", &m.cubin},
            {"ptx", &m.ptx}}) {
        if (bytes->empty())
          continue;
        std::string path = outDir + "/kernels." + arch + "." + ext;
        std::ofstream out(path, std::ios::binary);
        out.write(bytes->data(), static_cast<std::streamsize>(bytes->size()));
        if (!out) {
          std::cerr << "moe-nvrtc: error: cannot write " << path << "\n";
          status = 1;
        }
      }
    }
  }
  return status;
}
