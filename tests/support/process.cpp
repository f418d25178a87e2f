#include "support/process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <thread>

extern char** environ;

namespace sluice::test {

temp_dir::temp_dir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = std::string(base && *base ? base : "/tmp") + "/sluice-test-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) throw std::system_error(errno, std::generic_category(), "mkdtemp " + pattern);
  path_ = pattern;
}

temp_dir::~temp_dir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

void write_file(const std::filesystem::path& path, std::string_view text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error("cannot write " + path.string());
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::uint16_t closed_port() {
  net::io_context ioc(1);
  tcp::acceptor acceptor(ioc, tcp::endpoint{net::ip::make_address_v4("127.0.0.1"), 0});
  return acceptor.local_endpoint().port();
}

void wait_for_port(std::uint16_t port, std::chrono::milliseconds deadline, child_process* child) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  const tcp::endpoint ep{net::ip::make_address_v4("127.0.0.1"), port};
  net::io_context ioc(1);
  for (;;) {
    tcp::socket socket(ioc);
    error_code ec;
    socket.connect(ep, ec);  // loopback: refused or accepted at once, never a long block
    if (!ec) return;
    if (child != nullptr) {
      if (const auto code = child->try_wait()) {
        FAIL("the child exited with " << *code << " before port " << port << " accepted connections; stderr:\n"
                                      << child->stderr_text());
      }
    }
    if (std::chrono::steady_clock::now() >= until) {
      FAIL("port " << port << " did not accept connections within " << deadline.count() << " ms"
                   << (child ? "; child stderr:\n" + child->stderr_text() : std::string()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

child_process::child_process(std::string binary, std::vector<std::string> args, options opts) {
  const auto out_path = output_dir_ / "stdout";
  const auto err_path = output_dir_ / "stderr";

  std::vector<std::string> argv_text;
  argv_text.push_back(binary);
  argv_text.insert(argv_text.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_text) argv.push_back(a.data());
  argv.push_back(nullptr);

  std::vector<std::string> env_text;
  for (char** e = environ; *e != nullptr; ++e) env_text.emplace_back(*e);
  env_text.insert(env_text.end(), opts.extra_env.begin(), opts.extra_env.end());
  std::vector<char*> envp;
  for (auto& e : env_text) envp.push_back(e.data());
  envp.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (!opts.cwd.empty()) posix_spawn_file_actions_addchdir_np(&actions, opts.cwd.c_str());

  // The child must start with default signal handling and an empty mask whatever the test runner set.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  sigset_t all;
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  const int rc = ::posix_spawn(&pid_, binary.c_str(), &actions, &attr, argv.data(), envp.data());
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    pid_ = -1;
    FAIL("posix_spawn " << binary << " failed: " << std::strerror(rc));
  }
}

child_process::~child_process() {
  if (pid_ > 0 && !exit_code_) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
}

void child_process::signal(int sig) {
  if (pid_ > 0 && !exit_code_) ::kill(pid_, sig);
}

std::optional<int> child_process::try_wait() {
  if (exit_code_ || pid_ <= 0) return exit_code_;
  int status = 0;
  const pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r != pid_) return std::nullopt;
  if (WIFEXITED(status)) {
    exit_code_ = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    exit_code_ = 128 + WTERMSIG(status);
  } else {
    return std::nullopt;
  }
  return exit_code_;
}

int child_process::wait(std::chrono::milliseconds deadline) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  for (;;) {
    if (const auto code = try_wait()) return *code;
    if (std::chrono::steady_clock::now() >= until) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::kill(pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  exit_code_ = 128 + SIGKILL;
  FAIL("pid " << pid_ << " did not exit within " << deadline.count() << " ms; killed it. stderr:\n" << stderr_text());
  return *exit_code_;
}

std::string child_process::stdout_text() const { return read_file(output_dir_ / "stdout"); }

std::string child_process::stderr_text() const { return read_file(output_dir_ / "stderr"); }

}  // namespace sluice::test
