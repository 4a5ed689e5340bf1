//===- ToolProgress.h - Progress lines of the tools -------------*- C++ -*-===//
//
// Part of moe-opt.
//
// Steps that can take seconds (generating a synthetic model, NVRTC, the
// emulation's host compile) say so on stderr: "TOOL: [12.3 s] TEXT", the
// time since the tool started. One line per step when stderr is not a
// terminal (logs, tests); rewritten in place on a terminal; nothing when
// quiet (-q).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TOOLS_TOOLPROGRESS_H
#define MOE_TOOLS_TOOLPROGRESS_H

#include "llvm/ADT/Twine.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace moe {

class ToolProgress {
public:
  ToolProgress(llvm::StringRef tool, bool quiet)
      : tool(tool.str()), quiet(quiet),
        tty(llvm::sys::Process::StandardErrIsDisplayed()),
        start(std::chrono::steady_clock::now()) {}

  /// Seconds since the tool started.
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                         start)
        .count();
  }

  void step(const llvm::Twine &text) {
    if (quiet)
      return;
    std::lock_guard<std::mutex> lock(mutex);
    std::string line = (llvm::Twine(tool) + ": [" +
                        llvm::formatv("{0:f1}", seconds()) + " s] " + text)
                           .str();
    if (tty)
      llvm::errs() << "\r\x1b[K" << line;
    else
      llvm::errs() << line << "\n";
    llvm::errs().flush();
    dirty = tty;
  }

  /// Ends an in-place line before other output.
  void done() {
    std::lock_guard<std::mutex> lock(mutex);
    if (dirty)
      llvm::errs() << "\n";
    dirty = false;
  }

  /// Runs `work`; when it takes longer than a second (MOE_PROGRESS_AFTER_S
  /// seconds when set, 0 in tests), says `text` while it runs and how long
  /// it took when it ends. Fast steps (a cache hit) print nothing.
  template <typename Work>
  auto slowStep(const llvm::Twine &text, Work &&work) -> decltype(work()) {
    if (quiet)
      return work();
    double after = 1.0;
    if (const char *env = std::getenv("MOE_PROGRESS_AFTER_S"))
      after = std::atof(env);
    std::string what = text.str();
    std::mutex m;
    std::condition_variable cv;
    bool finished = false, said = false;
    double began = seconds();
    std::thread watcher([&] {
      std::unique_lock<std::mutex> lock(m);
      if (!cv.wait_for(lock, std::chrono::duration<double>(after),
                       [&] { return finished; })) {
        said = true;
        step(what + "...");
      }
    });
    auto result = work();
    {
      std::lock_guard<std::mutex> lock(m);
      finished = true;
    }
    cv.notify_all();
    watcher.join();
    if (said) {
      step(what + llvm::formatv(": done in {0:f1} s", seconds() - began));
      done();
    }
    return result;
  }

private:
  std::string tool;
  bool quiet, tty;
  std::chrono::steady_clock::time_point start;
  std::mutex mutex;
  bool dirty = false;
};

} // namespace moe

#endif // MOE_TOOLS_TOOLPROGRESS_H
