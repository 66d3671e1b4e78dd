// The real binaries as child processes: a quantd server with its log in a file, and quantctl.
// Shared by the process-level suites.
#ifndef QUANTD_TESTS_PROCESS_SUPPORT_H_
#define QUANTD_TESTS_PROCESS_SUPPORT_H_

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "client/client.h"
#include "gtest/gtest.h"
#include "tests/grpc_raw.h"

namespace quantd::testing {

// What the child does before exec (async-signal-safe calls only).
struct ChildSetup {
  // RLIMIT_FSIZE in bytes (writes past it fail with EFBIG; SIGXFSZ is ignored); -1: unchanged.
  long file_size_limit = -1;
  // Run as this user (a root test process dropping privileges); -1: unchanged.
  int uid = -1;
  // The server binary to run instead of the build's: a copy that `uid` can reach, when the
  // build tree is not (a private temporary checkout, as CI's).
  std::string binary;
};

inline std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// A quantd child process with its stderr in a log file. It picks its own port (port 0) and
// the test reads the port from the start-up line.
class ServerProcess {
 public:
  ServerProcess(const std::string& data_dir, const std::string& log_path,
                std::vector<std::string> extra_args = {}, std::vector<std::string> environment = {},
                ChildSetup setup = {})
      : log_path_(log_path) {
    // Backups beside the data directory rather than in the test's working directory.
    std::vector<std::string> args = {
        setup.binary.empty() ? QUANTD_BINARY : setup.binary, "--listen=127.0.0.1:0",
        "--metrics_addr=", "--data_dir=" + data_dir, "--backup_dir=" + data_dir + "-backups"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    // Everything the child needs is prepared before fork: between fork and exec a child of a
    // multi-threaded process may only make async-signal-safe calls (no malloc).
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<char*> envp;  // the test's assignments first: getenv takes the first match
    for (std::string& assignment : environment) envp.push_back(assignment.data());
    for (char** e = environ; *e != nullptr; ++e) envp.push_back(*e);
    envp.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      const int fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(fd, STDERR_FILENO);
      if (setup.file_size_limit >= 0) {
        signal(SIGXFSZ, SIG_IGN);  // stays ignored across exec: writes fail with EFBIG instead
        const rlimit limit = {static_cast<rlim_t>(setup.file_size_limit),
                              static_cast<rlim_t>(setup.file_size_limit)};
        setrlimit(RLIMIT_FSIZE, &limit);
      }
      if (setup.uid >= 0 && (setgid(setup.uid) != 0 || setuid(setup.uid) != 0)) _exit(126);
      execve(argv[0], argv.data(), envp.data());
      _exit(127);
    }
  }
  ~ServerProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }

  // Waits for the start-up line and, if `health_check`, a SERVING health check over plaintext
  // (a server with TLS on cannot answer it); returns the address or "".
  std::string WaitReady(bool health_check = true) {
    const std::regex port_line(R"(\(port (\d+)\))");
    for (int attempt = 0; attempt < 400; ++attempt) {
      std::smatch match;
      const std::string log = ReadText(log_path_);
      if (std::regex_search(log, match, port_line)) {
        const std::string address = "127.0.0.1:" + match[1].str();
        if (!health_check) return address;
        auto channel = Connect(address);
        if (channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(5)) &&
            quantd::testing::HealthServing(channel.get())) {
          return address;
        }
      }
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        ADD_FAILURE() << "quantd exited during start-up: " << log;
        return "";
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ADD_FAILURE() << "quantd did not become ready: " << ReadText(log_path_);
    return "";
  }

  void Signal(int signal_number) { kill(pid_, signal_number); }
  pid_t pid() const { return pid_; }

  // Waits for the process to end, killing it after `timeout` (zero: no limit); returns its wait
  // status.
  int Wait(std::chrono::milliseconds timeout = std::chrono::milliseconds(0)) {
    int status = 0;
    const auto give_up = std::chrono::steady_clock::now() + timeout;
    while (timeout.count() > 0 && waitpid(pid_, &status, WNOHANG) != pid_) {
      if (std::chrono::steady_clock::now() > give_up) {
        kill(pid_, SIGKILL);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (timeout.count() == 0 || std::chrono::steady_clock::now() > give_up) {
      waitpid(pid_, &status, 0);
    }
    pid_ = -1;
    return status;
  }

 private:
  std::string log_path_;
  pid_t pid_ = -1;
};

// Runs quantctl with `args`; returns the exit code and stdout (+ stderr) in *output.
// Runs `command` through the shell; its exit code (-1 if it did not exit), with stdout and
// stderr in *output.
inline int RunShell(const std::string& command, std::string* output) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  output->clear();
  char buffer[4096];
  size_t got;
  while ((got = fread(buffer, 1, sizeof(buffer), pipe)) > 0) output->append(buffer, got);
  const int status = pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

inline int RunQuantctl(const std::string& address, const std::string& args, std::string* output) {
  return RunShell(std::string(QUANTCTL_BINARY) + " --addr " + address + " " + args, output);
}

// Creates an L2 collection `name` of dimension `dim`; a failure fails the test.
inline void CreateCollection(v1::Quantd::Stub& stub, const std::string& name, uint32_t dim) {
  grpc::ClientContext context;
  v1::CreateCollectionRequest request;
  request.set_name(name);
  request.set_dimension(dim);
  request.set_metric(v1::METRIC_L2);
  v1::CreateCollectionResponse response;
  const grpc::Status status = stub.CreateCollection(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
}

// The item count of collection `name` (0, and a test failure, if it cannot be read).
inline uint64_t ItemCount(v1::Quantd::Stub& stub, const std::string& name) {
  grpc::ClientContext context;
  v1::DescribeCollectionRequest request;
  request.set_name(name);
  v1::DescribeCollectionResponse response;
  const grpc::Status status = stub.DescribeCollection(&context, request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return response.collection().item_count();
}

// Job `id` as the server reports it now.
inline v1::Job GetJob(v1::Quantd::Stub& stub, const std::string& id) {
  grpc::ClientContext context;
  v1::GetJobRequest request;
  request.set_id(id);
  v1::Job job;
  const grpc::Status status = stub.GetJob(&context, request, &job);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return job;
}

}  // namespace quantd::testing

#endif  // QUANTD_TESTS_PROCESS_SUPPORT_H_
