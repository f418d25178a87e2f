#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "support/run.hpp"

namespace sluice::test {

/// A temporary directory removed (with its contents) on destruction. Not thread-safe.
class temp_dir {
 public:
  /// Creates a fresh directory under $TMPDIR (or /tmp); throws on failure.
  temp_dir();
  ~temp_dir();
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;

  /// The directory.
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }
  /// path() / name.
  [[nodiscard]] std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

/// Writes text to path (replacing it); throws on failure.
void write_file(const std::filesystem::path& path, std::string_view text);
/// The whole file; throws when it cannot be opened.
std::string read_file(const std::filesystem::path& path);

/// A port on 127.0.0.1 with nothing listening (bound to port 0, read back, closed), for connect-refused
/// tests. Another process could take it in between; that is unlikely within one test.
std::uint16_t closed_port();

class child_process;

/// Polls a connect to 127.0.0.1:port every 10 ms until one succeeds; FAILs when the deadline passes or,
/// when child is given, when it exits first (its stderr goes into the failure message). Test thread only.
void wait_for_port(std::uint16_t port, std::chrono::milliseconds deadline = default_deadline,
                   child_process* child = nullptr);

/// How child_process starts the child. Plain value.
struct spawn_options {
  std::filesystem::path cwd;           ///< empty: the test's working directory
  std::vector<std::string> extra_env;  ///< "NAME=value" entries added to the inherited environment
};

/// A child process started with posix_spawn, stdout and stderr captured to files. The destructor kills
/// (SIGKILL) and reaps it if it still runs. Use from the test thread only.
class child_process {
 public:
  /// How to start the child.
  using options = spawn_options;

  /// Spawns binary with args (argv[0] is the binary); FAILs when it cannot be spawned.
  child_process(std::string binary, std::vector<std::string> args, options opts);
  /// Spawns with default options.
  child_process(std::string binary, std::vector<std::string> args) : child_process(std::move(binary), std::move(args), options{}) {}
  ~child_process();
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  /// The process id.
  [[nodiscard]] pid_t pid() const { return pid_; }
  /// Sends a signal (SIGTERM, SIGINT, SIGHUP...); a no-op once it has been reaped.
  void signal(int sig);
  /// Reaps it if it has exited; its exit code (see wait), or nullopt while it runs.
  std::optional<int> try_wait();
  /// Waits for it to exit and returns the exit status, or 128+N when signal N ended it. When the deadline
  /// passes, kills it with SIGKILL and FAILs (with its stderr in the message).
  int wait(std::chrono::milliseconds deadline = default_deadline);
  /// True while it has not exited.
  bool running() { return !try_wait().has_value(); }
  /// What it wrote to stdout so far.
  [[nodiscard]] std::string stdout_text() const;
  /// What it wrote to stderr so far.
  [[nodiscard]] std::string stderr_text() const;

 private:
  temp_dir output_dir_;
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
};

}  // namespace sluice::test
