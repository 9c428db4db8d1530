// A child program for tests and zbench: started with fork/exec, its stderr captured to a file
// (never a pipe that could fill and stall it), killed and reaped on destruction, and killed by
// the kernel if the thread that started it dies first (PR_SET_PDEATHSIG): a crashed test
// leaves no broker behind. So start children from a thread that outlives them.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace zbroker {

class ChildProcess {
  public:
    // argv[0] is the program's path. Throws std::system_error if it cannot be started.
    explicit ChildProcess(std::vector<std::string> argv);
    ChildProcess(const ChildProcess&) = delete;
    ChildProcess& operator=(const ChildProcess&) = delete;
    ChildProcess(ChildProcess&& other) noexcept;
    ChildProcess& operator=(ChildProcess&& other) noexcept;
    ~ChildProcess();

    // Waits until a line of its stderr contains `marker`; returns the rest of that line
    // after the marker, or nullopt on timeout or exit.
    std::optional<std::string> wait_for(const std::string& marker,
                                        std::chrono::milliseconds timeout);

    void signal(int signo) const;
    // Reaps the child: its exit code, 128+signal if killed, nullopt if still running at the
    // timeout.
    std::optional<int> wait(std::chrono::milliseconds timeout);
    bool running();
    pid_t pid() const noexcept { return pid_; }
    std::string output() const;  // all of its stderr so far, for diagnostics

  private:
    void reset() noexcept;

    pid_t pid_ = -1;
    std::string log_path_;
    std::optional<int> status_;
};

// How long a child program may take to say it is ready. A release build needs milliseconds; a
// sanitizer build on a loaded machine may need seconds. It only bounds a real failure.
inline constexpr std::chrono::seconds kStartPatience{60};

// Starts zbroker (from `bin_dir`) on an ephemeral loopback port; returns it and its endpoint.
std::pair<ChildProcess, std::string> start_broker(const std::string& bin_dir,
                                                  std::vector<std::string> extra_args = {});

}  // namespace zbroker
