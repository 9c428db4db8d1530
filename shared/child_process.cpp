// fork/exec with stderr to a temp file; SIGKILL and waitpid in the destructor.
#include "child_process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <thread>

namespace zbroker {

ChildProcess::ChildProcess(std::vector<std::string> argv) {
    char log_template[] = "/tmp/zbroker-child-XXXXXX";
    const int log_fd = mkstemp(log_template);
    if (log_fd < 0) throw std::system_error(errno, std::generic_category(), "mkstemp");
    log_path_ = log_template;

    std::vector<char*> args;
    for (auto& arg : argv)
        args.push_back(arg.data());
    args.push_back(nullptr);

    pid_ = fork();
    if (pid_ < 0) throw std::system_error(errno, std::generic_category(), "fork");
    if (pid_ == 0) {
        // Dies with its parent: a test that crashes must not leave brokers and workers behind.
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == 1) _exit(127);  // the parent died before prctl took effect
        dup2(log_fd, STDERR_FILENO);
        const int null_fd = open("/dev/null", O_RDWR);
        dup2(null_fd, STDIN_FILENO);
        dup2(null_fd, STDOUT_FILENO);
        execv(args[0], args.data());
        _exit(127);
    }
    close(log_fd);
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : pid_(other.pid_), log_path_(std::move(other.log_path_)), status_(other.status_) {
    other.pid_ = -1;
    other.log_path_.clear();
}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
    if (this != &other) {
        reset();
        pid_ = other.pid_;
        log_path_ = std::move(other.log_path_);
        status_ = other.status_;
        other.pid_ = -1;
        other.log_path_.clear();
    }
    return *this;
}

ChildProcess::~ChildProcess() {
    reset();
}

void ChildProcess::reset() noexcept {
    if (pid_ > 0 && !status_) {
        kill(pid_, SIGKILL);
        int status = 0;
        waitpid(pid_, &status, 0);
    }
    if (!log_path_.empty()) unlink(log_path_.c_str());
    pid_ = -1;
}

std::optional<std::string> ChildProcess::wait_for(const std::string& marker,
                                                  std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
        std::ifstream log(log_path_);
        std::string line;
        // Only whole lines: the child may be half-way through writing the last one, and a
        // marker read before its value ("listening on " without the endpoint) once sent
        // zbench's clients and echo workers to a truncated address.
        while (std::getline(log, line) && !log.eof()) {
            const auto at = line.find(marker);
            if (at != std::string::npos) return line.substr(at + marker.size());
        }
        if (!running() || std::chrono::steady_clock::now() >= deadline) return std::nullopt;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

void ChildProcess::signal(int signo) const {
    if (pid_ > 0 && !status_) kill(pid_, signo);
}

std::optional<int> ChildProcess::wait(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!status_) {
        int status = 0;
        const pid_t done = waitpid(pid_, &status, WNOHANG);
        if (done == pid_) {
            status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            break;
        }
        if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return status_;
}

bool ChildProcess::running() {
    return !wait(std::chrono::milliseconds(0));
}

std::string ChildProcess::output() const {
    std::ifstream log(log_path_);
    std::stringstream text;
    text << log.rdbuf();
    return text.str();
}

std::pair<ChildProcess, std::string> start_broker(const std::string& bin_dir,
                                                  std::vector<std::string> extra_args) {
    std::vector<std::string> argv{bin_dir + "/zbroker", "--bind", "tcp://127.0.0.1:*"};
    argv.insert(argv.end(), extra_args.begin(), extra_args.end());
    ChildProcess broker(std::move(argv));
    const auto rest = broker.wait_for("listening on ", kStartPatience);
    if (!rest) {
        throw std::runtime_error("zbroker did not say it was listening within " +
                                 std::to_string(kStartPatience.count()) +
                                 " s (it failed, or the machine is too slow); its output:\n" +
                                 broker.output());
    }
    return {std::move(broker), rest->substr(0, rest->find(' '))};
}

}  // namespace zbroker
