#include "server/health.h"

#include <optional>
#include <utility>

namespace quantd {

using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

// One Watch call. Statuses to deliver are recorded under the watcher's mutex; the gRPC
// operations (StartWrite, Finish) are started by Step() outside every lock, since their
// reactions may run inline and take locks again. At most one write is in flight; a status that
// changes meanwhile is sent once the write completes, and only the latest one.
class HealthStatus::Watcher final : public grpc::ServerWriteReactor<HealthCheckResponse> {
 public:
  Watcher(HealthStatus* health, std::string service)
      : health_(health), service_(std::move(service)) {}

  const std::string& service() const { return service_; }

  // Records `status` as the one to deliver; with `last`, the call ends after it.
  void Want(ServingStatus status, bool last) {
    absl::MutexLock lock(&mu_);
    wanted_ = status;
    last_ = last_ || last;
  }

  // Starts whatever is due: a write of a new status, or the end of the call.
  void Step() {
    enum class Action { kNone, kWrite, kFinish } action = Action::kNone;
    grpc::Status status;
    {
      absl::MutexLock lock(&mu_);
      if (writing_ || finishing_) return;
      if (cancelled_) {
        finishing_ = true;
        action = Action::kFinish;
        status = grpc::Status::CANCELLED;
      } else if (wanted_.has_value() && wanted_ != sent_) {
        writing_ = true;
        sent_ = wanted_;
        response_.set_status(*wanted_);
        action = Action::kWrite;
      } else if (last_) {
        finishing_ = true;
        action = Action::kFinish;
      }
    }
    if (action == Action::kWrite) StartWrite(&response_);
    if (action == Action::kFinish) Finish(status);
  }

  void OnWriteDone(bool ok) override {
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) cancelled_ = true;
    }
    Step();
  }

  void OnCancel() override {
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
    }
    Step();
  }

  void OnDone() override { health_->Forget(this); }  // may delete this

 private:
  HealthStatus* const health_;
  const std::string service_;
  absl::Mutex mu_;
  std::optional<ServingStatus> wanted_ ABSL_GUARDED_BY(mu_);
  std::optional<ServingStatus> sent_ ABSL_GUARDED_BY(mu_);
  bool last_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  HealthCheckResponse response_;  // the message of the write in flight
};

class HealthStatus::Service final : public grpc::health::v1::Health::CallbackService {
 public:
  explicit Service(HealthStatus* health) : health_(health) {}

  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* context,
                                  const HealthCheckRequest* request,
                                  HealthCheckResponse* response) override {
    ServingStatus status;
    {
      absl::MutexLock lock(&health_->mu_);
      status = health_->StatusLocked(request->service());
    }
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    if (status == HealthCheckResponse::SERVICE_UNKNOWN) {
      reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND,
                                   "unknown service '" + request->service() + "'"));
    } else {
      response->set_status(status);
      reactor->Finish(grpc::Status::OK);
    }
    return reactor;
  }

  grpc::ServerWriteReactor<HealthCheckResponse>* Watch(grpc::CallbackServerContext* context,
                                                       const HealthCheckRequest* request) override {
    return health_->StartWatch(request->service());
  }

 private:
  HealthStatus* const health_;
};

HealthStatus::HealthStatus(const std::vector<std::string>& services) {
  serving_[""] = false;
  for (const std::string& service : services) serving_[service] = false;
}

HealthStatus::~HealthStatus() = default;

HealthStatus::ServingStatus HealthStatus::StatusLocked(const std::string& service) const {
  const auto it = serving_.find(service);
  if (it == serving_.end()) return HealthCheckResponse::SERVICE_UNKNOWN;
  return it->second ? HealthCheckResponse::SERVING : HealthCheckResponse::NOT_SERVING;
}

void HealthStatus::SetServing(bool serving) {
  std::vector<std::shared_ptr<Watcher>> watchers;
  {
    absl::MutexLock lock(&mu_);
    if (draining_) return;
    for (auto& [service, value] : serving_) value = serving;
    for (auto& [raw, watcher] : watchers_) {
      watcher->Want(StatusLocked(watcher->service()), /*last=*/false);
      watchers.push_back(watcher);
    }
  }
  for (const auto& watcher : watchers) watcher->Step();
}

void HealthStatus::Drain() {
  std::vector<std::shared_ptr<Watcher>> watchers;
  {
    absl::MutexLock lock(&mu_);
    draining_ = true;
    for (auto& [service, value] : serving_) value = false;
    for (auto& [raw, watcher] : watchers_) {
      watcher->Want(StatusLocked(watcher->service()), /*last=*/true);
      watchers.push_back(watcher);
    }
  }
  for (const auto& watcher : watchers) watcher->Step();
}

grpc::ServerWriteReactor<HealthCheckResponse>* HealthStatus::StartWatch(
    const std::string& service) {
  auto watcher = std::make_shared<Watcher>(this, service);
  {
    absl::MutexLock lock(&mu_);
    watchers_[watcher.get()] = watcher;  // until OnDone
    watcher->Want(StatusLocked(service), /*last=*/draining_);
  }
  watcher->Step();
  return watcher.get();
}

void HealthStatus::Forget(Watcher* watcher) {
  std::shared_ptr<Watcher> last_reference;
  {
    absl::MutexLock lock(&mu_);
    const auto it = watchers_.find(watcher);
    if (it == watchers_.end()) return;
    last_reference = std::move(it->second);
    watchers_.erase(it);
  }
}  // the watcher is deleted here, outside the lock, unless a Step() still holds it

std::unique_ptr<grpc::Service> HealthStatus::NewService() {
  return std::make_unique<Service>(this);
}

}  // namespace quantd
