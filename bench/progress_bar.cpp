// Formats the progress line; one write per update, a few per second.
#include "progress_bar.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iomanip>
#include <sstream>

namespace zbroker::bench {
namespace {

constexpr std::size_t kBarWidth = 10;

std::string bar(double fraction) {
    const auto filled = static_cast<std::size_t>(std::clamp(fraction, 0.0, 1.0) * kBarWidth);
    std::string text(1, '[');
    text.append(filled, '#').append(kBarWidth - filled, '.').push_back(']');
    return text;
}

// Columns of the terminal on stderr: a line longer than that would wrap, and '\r' would then
// redraw only its last part.
std::size_t terminal_width() {
    winsize size{};
    if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 0) return size.ws_col;
    return 80;
}

}  // namespace

ProgressBar::ProgressBar(std::string label)
    : label_(std::move(label)), enabled_(::isatty(STDERR_FILENO) == 1) {}

ProgressBar::~ProgressBar() {
    if (drawn_ == 0) return;
    std::string blank(1, '\r');
    blank.append(drawn_, ' ').push_back('\r');
    std::fputs(blank.c_str(), stderr);
    std::fflush(stderr);
}

void ProgressBar::show(const LoadProgress& p) {
    if (!enabled_) return;
    std::ostringstream line;
    line << ' ' << std::fixed;
    if (p.warming_up) {
        line << bar(p.elapsed_s / p.total_s) << " warm-up " << std::setprecision(1) << p.elapsed_s
             << '/' << p.total_s << " s";
    } else if (p.total_requests > 0) {
        line << bar(static_cast<double>(p.done) / static_cast<double>(p.total_requests)) << ' '
             << p.done << '/' << p.total_requests << " requests";
    } else {
        line << bar(p.elapsed_s / p.total_s) << ' ' << std::setprecision(1) << p.elapsed_s << '/'
             << p.total_s << " s";
    }
    line << std::setprecision(0) << ", " << p.requests_per_second << " req/s";
    const std::string figures = line.str();
    const std::size_t room = terminal_width() - 1;  // the cursor's column stays free
    std::string text(1, '\r');
    text.append(label_, 0, room > figures.size() ? room - figures.size() : 0);
    text.append(figures, 0, room - (text.size() - 1));
    const std::size_t width = text.size() - 1;
    if (width < drawn_) text.append(drawn_ - width, ' ');  // cover the longer last line
    drawn_ = std::max(drawn_, width);
    std::fputs(text.c_str(), stderr);
    std::fflush(stderr);
}

}  // namespace zbroker::bench
