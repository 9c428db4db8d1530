// A one-line progress report for the point being measured, redrawn in place on a terminal.
#pragma once

#include <cstddef>
#include <string>

#include "bench/load_run.hpp"

namespace zbroker::bench {

// Draws on stderr with '\r', and only when stderr is a terminal: under CTest, or with stderr
// redirected, it writes nothing. The line is erased when the bar is destroyed, so that the
// table row printed next takes its place.
class ProgressBar {
  public:
    explicit ProgressBar(std::string label);
    ~ProgressBar();
    ProgressBar(const ProgressBar&) = delete;
    ProgressBar& operator=(const ProgressBar&) = delete;

    void show(const LoadProgress& progress);

  private:
    std::string label_;
    bool enabled_;
    std::size_t drawn_ = 0;  // characters on the line now
};

}  // namespace zbroker::bench
