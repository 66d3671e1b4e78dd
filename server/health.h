// grpc.health.v1.Health for quantd's gRPC servers (the main port and the plaintext health port),
// implemented here rather than with gRPC's default health service so that a drain can end the
// Watch streams: the default service keeps them open, and an open stream holds a stopping server
// for its whole --shutdown_grace.
#ifndef QUANTD_SERVER_HEALTH_H_
#define QUANTD_SERVER_HEALTH_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace quantd {

// The serving status of the whole server ("") and of named services, shared by the Health
// services of several grpc::Servers. Thread-safe.
class HealthStatus {
 public:
  using ServingStatus = grpc::health::v1::HealthCheckResponse::ServingStatus;

  // Knows "" and `services`, all NOT_SERVING until SetServing(true).
  explicit HealthStatus(const std::vector<std::string>& services);
  ~HealthStatus();

  // Every known service; open Watch streams get the change.
  void SetServing(bool serving);

  // NOT_SERVING for good: every open Watch stream is sent NOT_SERVING and then ends (status OK;
  // clients retry, and find the server gone or draining), and a Watch call arriving later ends
  // after its first answer. So health streams never hold a draining server open.
  void Drain();

  // A grpc.health.v1.Health service answering from this status, for one grpc::Server (a service
  // object can be registered with one server only). It must not outlive this object.
  std::unique_ptr<grpc::Service> NewService();

 private:
  class Service;
  class Watcher;
  friend class Service;
  friend class Watcher;

  // The status of `service`, or SERVICE_UNKNOWN.
  ServingStatus StatusLocked(const std::string& service) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  grpc::ServerWriteReactor<grpc::health::v1::HealthCheckResponse>* StartWatch(
      const std::string& service);
  void Forget(Watcher* watcher);  // the watcher's call is done

  mutable absl::Mutex mu_;
  std::map<std::string, bool> serving_ ABSL_GUARDED_BY(mu_);
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  std::map<Watcher*, std::shared_ptr<Watcher>> watchers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace quantd

#endif  // QUANTD_SERVER_HEALTH_H_
