#include "server/rpc.h"

#include <algorithm>
#include <cstdlib>
#include <limits>

#include "absl/strings/str_cat.h"
#include "server/log.h"
#include "server/work_queue.h"

namespace quantd {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// One per call: the in-flight gauge while it lives, the status-code counter and latency at the
// status it sends, and the UNIMPLEMENTED-to-INVALID_ARGUMENT mapping of an unparsable request.
class CallInterceptor final : public grpc::experimental::Interceptor {
 public:
  CallInterceptor(grpc::experimental::ServerRpcInfo* info, Metrics* metrics)
      : info_(info),
        metrics_(metrics),
        in_flight_(metrics != nullptr ? &metrics->InFlight(info->method()) : nullptr),
        start_(Clock::now()) {
    if (in_flight_ != nullptr) in_flight_->Increment();
  }
  ~CallInterceptor() override {
    if (in_flight_ != nullptr) in_flight_->Decrement();
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    using Type = grpc::experimental::ServerRpcInfo::Type;
    // A unary or server-streaming call has exactly one request; no message means it did not
    // deserialize.
    const bool single_request =
        info_->type() == Type::UNARY || info_->type() == Type::SERVER_STREAMING;
    if (single_request &&
        methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE) &&
        methods->GetRecvMessage() == nullptr) {
      unparsable_ = true;
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      grpc::Status status = methods->GetSendStatus();
      if (unparsable_ && status.error_code() == grpc::StatusCode::UNIMPLEMENTED &&
          status.error_message().empty()) {
        status = grpc::Status(
            grpc::StatusCode::INVALID_ARGUMENT,
            absl::StrCat("the request to ", info_->method(),
                         " does not parse as its request message (cut short, not protobuf, or a "
                         "string field that is not UTF-8)"));
        methods->ModifySendStatus(status);
      }
      if (metrics_ != nullptr) {
        metrics_->RecordRequest(info_->method(), status.error_code(), SecondsSince(start_));
      }
    }
    methods->Proceed();
  }

 private:
  grpc::experimental::ServerRpcInfo* info_;
  Metrics* metrics_;
  prometheus::Gauge* in_flight_;
  Clock::time_point start_;
  bool unparsable_ = false;
};

class CallInterceptorFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit CallInterceptorFactory(Metrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new CallInterceptor(info, metrics_);
  }

 private:
  Metrics* metrics_;
};

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // Messages quote what the caller sent (names, job ids, tokens). A message past the client's
  // metadata limit (8 KiB by default) reaches it as RESOURCE_EXHAUSTED "received initial metadata
  // size exceeds limit", losing the real code and message: long ones keep their start (the field
  // and value) and their end (what is wrong), and say how much is left out.
  constexpr size_t kHead = 768;
  constexpr size_t kTail = 256;
  absl::string_view message = status.message();
  if (message.size() <= kHead + kTail) {
    return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(message));
  }
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      absl::StrCat(message.substr(0, kHead), "...[", message.size() - kHead - kTail,
                                   " bytes elided]...", message.substr(message.size() - kTail)));
}

int TransportReceiveLimit(int64_t max_request_bytes) {
  return static_cast<int>(
      std::min<int64_t>(std::numeric_limits<int>::max(), 2 * max_request_bytes));
}

absl::Status CheckRequestSize(const google::protobuf::Message& request, int64_t max_bytes,
                              absl::string_view method) {
  if (max_bytes <= 0) return absl::OkStatus();
  const size_t bytes = request.ByteSizeLong();
  if (bytes <= static_cast<size_t>(max_bytes)) return absl::OkStatus();
  return absl::ResourceExhaustedError(
      absl::StrFormat("%s request of %d bytes exceeds the %d-byte message limit (--max_message_mb)",
                      method, bytes, max_bytes));
}

absl::Status CallPath::Admit(const grpc::CallbackServerContext& context, absl::string_view method,
                             const google::protobuf::Message* request) const {
  if (absl::Status denied = authorizer_.Authorize(context, method); !denied.ok()) return denied;
  if (request == nullptr) return absl::OkStatus();
  return CheckRequestSize(*request, limits_.max_request_bytes, method);
}

CallPath::~CallPath() {
  std::lock_guard lock(threads_mu_);
  for (OwnThread& own : threads_) own.thread.join();
}

grpc::ServerUnaryReactor* CallPath::Unary(grpc::CallbackServerContext* context,
                                          absl::string_view method, RunOn run_on,
                                          const google::protobuf::Message& request,
                                          std::function<absl::Status()> work) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  if (absl::Status denied = Admit(*context, method, &request); !denied.ok()) {
    reactor->Finish(ToGrpcStatus(denied));
    return reactor;
  }
  switch (run_on) {
    case RunOn::kCallThread:
      reactor->Finish(ToGrpcStatus(work()));
      break;
    case RunOn::kServingPool:
      OnPool(context, reactor, method, std::move(work));
      break;
    case RunOn::kOwnThread:
      OnOwnThread(reactor, std::move(work));
      break;
  }
  return reactor;
}

void CallPath::OnPool(grpc::CallbackServerContext* context, grpc::ServerUnaryReactor* reactor,
                      absl::string_view method, std::function<absl::Status()> work) {
  if (limits_.pool == nullptr) {
    reactor->Finish(ToGrpcStatus(work()));
    return;
  }
  const Clock::time_point start = Clock::now();
  // The call's budget: the client's deadline capped at max_deadline, else default_deadline.
  std::chrono::nanoseconds budget = limits_.default_deadline;
  const auto client_deadline = context->deadline();
  const auto now = std::chrono::system_clock::now();
  if (client_deadline < now + limits_.max_deadline) {
    budget = std::chrono::duration_cast<std::chrono::nanoseconds>(client_deadline - now);
  } else if (client_deadline != std::chrono::system_clock::time_point::max()) {
    budget = limits_.max_deadline;
  }
  const Clock::time_point deadline = start + budget;
  auto task = [context, reactor, method, start, deadline, work = std::move(work)] {
    absl::Status status;
    if (context->IsCancelled()) {
      status = absl::CancelledError(absl::StrFormat("%s was cancelled before it ran", method));
    } else if (Clock::now() >= deadline) {
      status = absl::DeadlineExceededError(absl::StrFormat(
          "%s waited %.3f s for a worker, past its deadline", method, SecondsSince(start)));
    } else {
      status = work();
    }
    reactor->Finish(ToGrpcStatus(status));
  };
  if (!limits_.pool->TrySubmit(std::move(task))) {
    reactor->Finish(ToGrpcStatus(absl::ResourceExhaustedError(absl::StrFormat(
        "server busy: %d %s calls already waiting for %d workers (--search_queue); retry "
        "with backoff",
        limits_.pool->capacity(), "Search/Encode/GetStats", limits_.pool->threads()))));
  }
}

void CallPath::OnOwnThread(grpc::ServerUnaryReactor* reactor, std::function<absl::Status()> work) {
  std::lock_guard lock(threads_mu_);
  // Threads whose call ended are joined here, so at most the running ones are kept.
  std::erase_if(threads_, [](OwnThread& own) {
    if (!own.done->load()) return false;
    own.thread.join();
    return true;
  });
  auto done = std::make_shared<std::atomic<bool>>(false);
  threads_.push_back({std::thread([reactor, done, work = std::move(work)] {
                        const absl::Status status = work();
                        reactor->Finish(ToGrpcStatus(status));
                        *done = true;
                      }),
                      done});
}

namespace rpc_internal {

int MethodIndex(const google::protobuf::ServiceDescriptor& service, absl::string_view method,
                bool client_streaming, bool server_streaming,
                const google::protobuf::Descriptor* request,
                const google::protobuf::Descriptor* response) {
  const google::protobuf::MethodDescriptor* found = service.FindMethodByName(std::string(method));
  if (found == nullptr || found->client_streaming() != client_streaming ||
      found->server_streaming() != server_streaming || found->input_type() != request ||
      found->output_type() != response) {
    LogError("%s.%s: no such method of that shape and message types", service.full_name(), method);
    std::abort();
  }
  return found->index();
}

void CheckEveryMethodRegistered(const google::protobuf::ServiceDescriptor& service,
                                const std::vector<bool>& registered) {
  bool complete = true;
  for (int i = 0; i < service.method_count(); ++i) {
    if (!registered[static_cast<size_t>(i)]) {
      LogError("%s: method %s has no handler", service.full_name(), service.method(i)->name());
      complete = false;
    }
  }
  if (!complete) std::abort();
}

}  // namespace rpc_internal

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> CallInterceptors(
    Metrics* metrics) {
  return std::make_unique<CallInterceptorFactory>(metrics);
}

}  // namespace quantd
