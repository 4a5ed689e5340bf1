//===- EmuKernelFixture.h - A test suite over one emulated source -*- C++ -*-===//
//
// Part of moe-opt. The GoogleTest fixture of the unit tests that run a
// kernel source of their own on the CPU emulation (EmuAsyncTest,
// EmuWgmmaTest, TensorMapTest): the source is compiled once per suite, with
// the kernel headers of runtime/kernels, into a temporary cache folder that
// the suite removes at its end; each test fails at once with the compiler's
// message when the source did not compile. `launch` runs one kernel on a
// one-dimensional grid.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TEST_UNIT_EMUKERNELFIXTURE_H
#define MOE_TEST_UNIT_EMUKERNELFIXTURE_H

#include "moe/runtime/EmuModule.h"
#include "moe/runtime/KernelABI.h"
#include "moe/runtime/KernelHeaders.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>

namespace moe::test {

/// Source: a type with `static constexpr const char *kText` (the kernels)
/// and `kName` (names the temporary folder).
template <typename Source>
class EmuKernelFixture : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    std::string tmpl = std::string("/tmp/moe-") + Source::kName + "-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    cacheDir_ = tmpl;
    std::map<std::string, std::string> headers;
    for (const auto &[name, text] : moe::kernelHeaders())
      headers[name] = text;
    auto m = runtime::EmuModule::compile(Source::kText, headers, cacheDir_);
    if (!m) {
      compileError_ = m.message();
      return;
    }
    module_ = m->release();
  }
  static void TearDownTestSuite() {
    delete module_;
    module_ = nullptr;
    std::error_code ec;
    std::filesystem::remove_all(cacheDir_, ec);
  }
  void SetUp() override { ASSERT_NE(module_, nullptr) << compileError_; }

  /// Runs `kernel` on `blocks` blocks of `threads` threads.
  static runtime::Status launch(const std::string &kernel, MoEKernelArgs &args,
                                unsigned threads, unsigned sharedBytes = 0,
                                unsigned blocks = 1) {
    runtime::EmuDim3 grid, block;
    grid.x = blocks;
    block.x = threads;
    return module_->launch(kernel, args, grid, block, sharedBytes);
  }

  static inline runtime::EmuModule *module_ = nullptr;
  static inline std::string cacheDir_, compileError_;
};

} // namespace moe::test

#endif // MOE_TEST_UNIT_EMUKERNELFIXTURE_H
