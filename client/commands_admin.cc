// Operations commands: backup (on the server) and health (grpc.health.v1).
#include <cstdio>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "client/cli.h"
#include "client/client.h"
#include "client/commands.h"
#include "client/output.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace quantd::quantctl {

absl::Status BackupCommand(Cli& cli) {
  const Args& args = cli.args();
  if (auto s = cli.NeedPositional(1, "a backup NAME"); !s.ok()) return s;
  v1::BackupRequest request;
  request.set_name(args.positional[1]);
  v1::BackupResponse response;
  auto context = cli.Context(/*fallback_seconds=*/3600);
  if (auto s = FromGrpcStatus(cli.stub().Backup(context.get(), request, &response)); !s.ok()) {
    return s;
  }
  if (cli.json()) {
    PrintJson(response);
  } else {
    std::printf("backup '%s' written to %s: %s in %llu files, %.2f s (sequence %llu)\n",
                request.name().c_str(), response.path().c_str(),
                HumanBytes(response.bytes()).c_str(),
                static_cast<unsigned long long>(response.files()), response.seconds(),
                static_cast<unsigned long long>(response.sequence()));
  }
  return absl::OkStatus();
}

// grpc.health.v1.Health/Check: exit code 0 when SERVING, 1 otherwise (NOT_SERVING, an
// unknown service, no answer), for container health checks and scripts.
absl::Status HealthCommand(Cli& cli) {
  const Args& args = cli.args();
  if (auto s = cli.NeedPositional(0, "no arguments"); !s.ok()) return s;
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(args.Get("service"));
  grpc::health::v1::HealthCheckResponse response;
  auto context = cli.Context(/*fallback_seconds=*/5);
  const auto health = grpc::health::v1::Health::NewStub(cli.channel());
  if (auto s = FromGrpcStatus(health->Check(context.get(), request, &response)); !s.ok()) {
    return s;
  }
  const std::string status =
      grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
  const std::string service = request.service().empty() ? "server" : request.service();
  if (cli.json()) {
    PrintJson(response);
  } else {
    std::printf("%s: %s\n", service.c_str(), status.c_str());
  }
  if (response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    return absl::UnavailableError(absl::StrFormat("%s is %s", service, status));
  }
  return absl::OkStatus();
}

}  // namespace quantd::quantctl
