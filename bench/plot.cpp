// Writes the points as gnuplot data blocks and a script, then runs gnuplot on them.
#include "plot.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <system_error>

#include "shared/child_process.hpp"

namespace zbroker::bench {
namespace {

// Points that differ only in their in-flight window: one line of the plot.
struct Series {
    std::string title;
    std::string target;
    std::vector<const Point*> points;
};

// Quoted for gnuplot: in single quotes nothing is special but the quote itself, doubled.
std::string quoted(const std::string& text) {
    std::string out = "'";
    for (const char c : text)
        out += c == '\'' ? std::string("''") : std::string(1, c);
    return out + "'";
}

std::string color_of(const std::string& target) {
    static const std::map<std::string, std::string> colors{
        {"zbroker", "#1f5fbf"}, {"relay", "#2a9d3a"}, {"direct", "#d0402a"},
        {"floor", "#000000"},   {"mdp", "#8e44ad"},   {"relay-mdp", "#e08a1e"}};
    const auto it = colors.find(target);
    return it == colors.end() ? "#606060" : it->second;
}

// Groups points by everything but in-flight. Whatever all points share goes into the
// `common` caption instead of every title.
std::vector<Series> group(const std::vector<Point>& points, std::string& common) {
    std::set<std::string> modes;
    std::set<std::size_t> clients, sizes;
    std::set<std::optional<std::size_t>> workers;
    for (const Point& p : points) {
        modes.insert(p.mode);
        clients.insert(p.clients);
        workers.insert(p.workers);
        sizes.insert(p.size);
    }
    const auto plural = [](std::size_t n, const char* what) {
        return std::to_string(n) + " " + what + (n == 1 ? "" : "s");
    };
    std::vector<Series> series;
    std::map<std::string, std::size_t> index;
    for (const Point& p : points) {
        std::string title = p.target;
        if (modes.size() > 1) title += " " + p.mode;
        if (clients.size() > 1) title += ", " + plural(p.clients, "client");
        if (workers.size() > 1)
            title += ", " + (p.workers ? plural(*p.workers, "worker") : "workers unknown");
        if (sizes.size() > 1) title += ", " + std::to_string(p.size) + " B";
        const auto [it, added] = index.try_emplace(title, series.size());
        if (added) series.push_back({title, p.target, {}});
        series[it->second].points.push_back(&p);
    }
    for (Series& s : series) {
        std::stable_sort(s.points.begin(), s.points.end(),
                         [](const Point* a, const Point* b) { return a->inflight < b->inflight; });
    }
    std::vector<std::string> shared;
    if (modes.size() == 1) shared.push_back(*modes.begin());
    if (sizes.size() == 1) shared.push_back(std::to_string(*sizes.begin()) + " B requests");
    if (clients.size() == 1) shared.push_back(plural(*clients.begin(), "client"));
    if (workers.size() == 1 && workers.begin()->value_or(0) > 0) {
        shared.push_back(plural(**workers.begin(), "worker"));
    }
    for (const std::string& part : shared)
        common += (common.empty() ? "" : ", ") + part;
    return series;
}

// Columns: inflight, req/s, p50 us, p99 us; one block per series, two blank lines apart so
// that gnuplot's `index N` selects series N.
void write_data(const std::string& path, const std::vector<Series>& series) {
    std::ofstream data(path);
    data << "# inflight req_per_s p50_us p99_us\n";
    for (const Series& s : series) {
        data << "# " << s.title << '\n';
        for (const Point* p : s.points) {
            data << p->inflight << ' ' << p->result.requests_per_second() << ' '
                 << p->result.latency.p50_us << ' ' << p->result.latency.p99_us << '\n';
        }
        data << "\n\n";
    }
    if (!data) throw std::runtime_error("cannot write the plot data to " + path);
}

void write_script(const std::string& path, const std::string& data_path,
                  const std::string& png_path, const std::vector<Series>& series,
                  const std::string& common) {
    std::ofstream script(path);
    const std::string data = quoted(data_path);
    // pngcairo draws smoother lines; plain png (libgd) is the fallback of minimal builds.
    script << "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
              "  set terminal pngcairo size 1500,620 font 'sans,10'\n"
              "} else {\n"
              "  set terminal png size 1500,620\n"
              "}\n"
           << "set output " << quoted(png_path) << "\n"
           << "set multiplot layout 1,2 title " << quoted("zbench: " + common) << "\n"
           << "set logscale x\n"
              "set xlabel 'requests in flight per client'\n"
              "set grid\n"
              "set key top left box opaque\n"
              "set format y '%g'\n"
              "set yrange [0:*]\n"
              "set ylabel 'throughput (thousand req/s)'\n"
              "set title 'Throughput'\n"
              "set offsets graph 0.05, graph 0.05, graph 0.05, 0\n";
    // Point types tell apart the lines of one target, colours the targets.
    std::map<std::string, int> lines_of_target;
    std::vector<std::string> style(series.size());
    for (std::size_t i = 0; i < series.size(); ++i) {
        const int nth = lines_of_target[series[i].target]++;
        style[i] = "lc rgb '" + color_of(series[i].target) + "' pt " + std::to_string(7 + 2 * nth);
    }
    script << "plot";
    for (std::size_t i = 0; i < series.size(); ++i) {
        script << (i == 0 ? " " : ", \\\n     ") << data << " index " << i
               << " using 1:($2/1000) with linespoints lw 2 " << style[i] << " title "
               << quoted(series[i].title);
    }
    script << "\nset logscale y\n"
              "set yrange [*:*]\n"
              "set ylabel 'round-trip latency (us)'\n"
              "set title 'Latency: p50 solid, p99 dashed'\n"
              "set offsets graph 0.05, graph 0.05, 0, 0\n"
              "plot";
    for (std::size_t i = 0; i < series.size(); ++i) {
        script << (i == 0 ? " " : ", \\\n     ") << data << " index " << i
               << " using 1:3 with linespoints lw 2 dt 1 " << style[i] << " title "
               << quoted(series[i].title) << ", \\\n     " << data << " index " << i
               << " using 1:4 with linespoints lw 2 dt 2 " << style[i] << " notitle";
    }
    script << "\nunset multiplot\n";
    if (!script) throw std::runtime_error("cannot write the plot script to " + path);
}

}  // namespace

std::optional<std::string> find_gnuplot() {
    const char* path = std::getenv("PATH");
    std::istringstream dirs(path != nullptr ? path : "");
    std::string dir;
    while (std::getline(dirs, dir, ':')) {
        if (dir.empty()) continue;
        const std::string candidate = dir + "/gnuplot";
        if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    }
    return std::nullopt;
}

void plot(const std::string& gnuplot, const std::string& png_path,
          const std::vector<Point>& points) {
    if (points.empty()) throw std::runtime_error("no points were measured, so there is no plot");
    char dir_template[] = "/tmp/zbench-plot-XXXXXX";
    if (::mkdtemp(dir_template) == nullptr) {
        throw std::system_error(errno, std::generic_category(), "mkdtemp for the plot files");
    }
    const std::filesystem::path dir = dir_template;
    struct RemoveDir {
        std::filesystem::path dir;
        ~RemoveDir() {
            std::error_code ignored;
            std::filesystem::remove_all(dir, ignored);
        }
    } remove_dir{dir};

    std::string common;
    const std::vector<Series> series = group(points, common);
    const std::string data_path = (dir / "points.dat").string();
    const std::string script_path = (dir / "plot.gp").string();
    write_data(data_path, series);
    write_script(script_path, data_path, std::filesystem::absolute(png_path).string(), series,
                 common);

    ChildProcess process({gnuplot, script_path});
    const auto exit_code = process.wait(std::chrono::seconds(60));
    std::error_code error;
    const auto size = std::filesystem::file_size(png_path, error);
    if (exit_code != 0 || error || size == 0) {
        throw std::runtime_error("gnuplot could not draw " + png_path + " (exit " +
                                 (exit_code ? std::to_string(*exit_code) : "timeout") + "):\n" +
                                 process.output());
    }
}

}  // namespace zbroker::bench
