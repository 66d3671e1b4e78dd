// Training jobs: jobs, job and cancel, and following a job that train or train-index started.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "client/cli.h"
#include "client/client.h"
#include "client/commands.h"
#include "client/output.h"

namespace quantd::quantctl {
namespace {

// JOB_STATE_RUNNING -> "running".
std::string JobStateText(v1::JobState state) {
  std::string name = v1::JobState_Name(state);
  return absl::AsciiStrToLower(absl::StripPrefix(name, "JOB_STATE_"));
}

// `quantctl job ID` and `quantctl cancel ID`: fetches or cancels the job, then prints it.
absl::Status ShowOrCancelJob(Cli& cli, bool cancel) {
  const Args& args = cli.args();
  if (auto s = cli.NeedPositional(1, "a job ID"); !s.ok()) return s;
  v1::Job job;
  absl::Status status;
  if (cancel) {
    v1::CancelJobRequest request;
    request.set_id(args.positional[1]);
    status = cli.Call(&v1::Quantd::Stub::CancelJob, request, &job);
  } else {
    v1::GetJobRequest request;
    request.set_id(args.positional[1]);
    status = cli.Call(&v1::Quantd::Stub::GetJob, request, &job);
  }
  if (!status.ok()) return status;
  PrintJob(cli, job);
  return absl::OkStatus();
}

}  // namespace

void PrintJob(Cli& cli, const v1::Job& job) {
  if (cli.json()) {
    PrintJson(job);
    return;
  }
  std::string result;
  if (job.result_version() > 0) {
    result = absl::StrCat("version ", job.result_version());
    // Tokenizer jobs say whether their version became the active one, and why ("activated
    // (activation: always)"); index jobs, the layout and the defaults chosen.
    if (!job.decision().empty()) {
      absl::StrAppend(&result, " (", job.decision(), ")");
    } else if (job.kind() != "train_index") {
      absl::StrAppend(&result, job.activated() ? " (activated)" : " (not activated)");
    }
  }
  std::printf("%s  %-15s %-10s %-9s %5.1f%%  %-22s %8.1f s  %s%s\n", job.id().c_str(),
              job.kind().c_str(), job.collection().c_str(), JobStateText(job.state()).c_str(),
              100 * job.progress(), job.phase().c_str(), job.elapsed_seconds(), result.c_str(),
              job.error().empty() ? "" : absl::StrCat("  ", job.error()).c_str());
}

// Prints a just-started job (--detach) or polls it to its end with a progress bar; an error
// unless it succeeded.
absl::Status FollowJob(Cli& cli, v1::Job job) {
  const Args& args = cli.args();
  if (args.Has("detach")) {
    PrintJob(cli, job);
    return absl::OkStatus();
  }
  const bool bar = !args.Has("no-progress") && isatty(STDERR_FILENO);
  if (!cli.json())
    std::fprintf(stderr, "started %s on '%s'\n", job.id().c_str(), job.collection().c_str());
  while (job.state() == v1::JOB_STATE_PENDING || job.state() == v1::JOB_STATE_RUNNING) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    v1::GetJobRequest get;
    get.set_id(job.id());
    if (auto s = cli.Call(&v1::Quantd::Stub::GetJob, get, &job); !s.ok()) return s;
    if (bar) {
      constexpr int kWidth = 30;
      const int filled = static_cast<int>(job.progress() * kWidth);
      std::fprintf(stderr, "\r[%s%s] %5.1f%%  %-22s %6.1f s   ", std::string(filled, '#').c_str(),
                   std::string(kWidth - filled, '.').c_str(), 100 * job.progress(),
                   job.phase().c_str(), job.elapsed_seconds());
      std::fflush(stderr);
    }
  }
  if (bar) std::fprintf(stderr, "\n");
  PrintJob(cli, job);
  if (job.state() != v1::JOB_STATE_SUCCEEDED) {
    return absl::AbortedError(
        absl::StrFormat("job %s ended %s: %s", job.id(), JobStateText(job.state()), job.error()));
  }
  return absl::OkStatus();
}

absl::Status JobsCommand(Cli& cli) {
  const Args& args = cli.args();
  if (args.positional.size() > 2) return cli.Usage("expected at most a collection NAME");
  v1::ListJobsRequest request;
  if (args.positional.size() == 2) request.set_collection(args.positional[1]);
  v1::ListJobsResponse response;
  if (auto s = cli.Call(&v1::Quantd::Stub::ListJobs, request, &response); !s.ok()) return s;
  if (cli.json()) {
    PrintJson(response);
    return absl::OkStatus();
  }
  for (const v1::Job& job : response.jobs()) PrintJob(cli, job);
  return absl::OkStatus();
}

absl::Status JobCommand(Cli& cli) { return ShowOrCancelJob(cli, /*cancel=*/false); }
absl::Status CancelCommand(Cli& cli) { return ShowOrCancelJob(cli, /*cancel=*/true); }

}  // namespace quantd::quantctl
