// The one call path of quantd's gRPC services.
//
// A service derives from GuardedService<v1::Quantd> and registers every method of the service
// descriptor with a handler written against protobuf messages and absl::Status only:
//   unary          absl::Status(const Req&, Resp*)
//   server stream  absl::StatusOr<MessageSource<Resp>>(const Req&)
//   bidi stream    a StreamSession<Req, Resp> per call, absl::Status(const Req&, Resp*) per message
// Registration replaces the generated virtual methods, so a handler never sees the
// grpc::CallbackServerContext and cannot finish a call itself: every call is authorized first
// (Authorizer, role by method), then run where its method says (RunOn: gRPC's thread, the
// serving pool with the call's budget and cancel checks, or a thread of its own), and its
// absl::Status is mapped to a grpc::Status by ToGrpcStatus. Counting and timing of every call,
// including the ones the transport refuses before any handler runs, is done by
// CallInterceptors() at the status the call sends.
#ifndef QUANTD_SERVER_RPC_H_
#define QUANTD_SERVER_RPC_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/support/server_callback.h"
#include "grpcpp/support/server_interceptor.h"
#include "server/auth.h"
#include "server/metrics.h"

namespace quantd {

class WorkQueue;

// absl::Status to grpc::Status (the codes are the same numbers). Messages longer than 1 KiB keep
// their first 768 and last 256 bytes, so that they fit the client's metadata limit.
grpc::Status ToGrpcStatus(const absl::Status& status);

// How the serving calls are bounded (see ServerOptions for the flags behind them).
struct ServiceLimits {
  // Methods that RunOn::kServingPool run through it (inline when a slot is free, else queued;
  // null: always inline, unbounded); a full queue refuses the call with RESOURCE_EXHAUSTED.
  WorkQueue* pool = nullptr;
  // Budget of a queued call whose client set no deadline, and the most any call gets: a call
  // still queued when its budget runs out is answered DEADLINE_EXCEEDED without being run.
  std::chrono::milliseconds default_deadline{30000};
  std::chrono::milliseconds max_deadline{600000};
  // Largest request message (--max_message_mb), refused with RESOURCE_EXHAUSTED by the call path
  // so that the refusal is counted like any other call; 0: no check. The transport's own limit
  // is set above it (TransportReceiveLimit): gRPC drops a unary request above that limit before
  // any interceptor or handler of the server runs, so such a call could not be counted.
  int64_t max_request_bytes = 0;
};

// The transport's receive limit for a server whose call path refuses requests above
// `max_request_bytes`: twice that (at most INT_MAX), still a hard bound on a request's memory.
int TransportReceiveLimit(int64_t max_request_bytes);

// RESOURCE_EXHAUSTED if `request` serializes to more than `max_bytes` bytes (0: no limit).
absl::Status CheckRequestSize(const google::protobuf::Message& request, int64_t max_bytes,
                              absl::string_view method);

// Where a method's handler runs, a property of the method fixed at registration.
enum class RunOn {
  kCallThread,   // inline on gRPC's callback thread: cheap calls
  kServingPool,  // on ServiceLimits::pool, CPU-bound serving calls (Search, Encode, GetStats)
  kOwnThread,    // on a thread of its own: long I/O (Backup) that must not hold a gRPC thread
};

// Fills the next message of a server stream; false when the stream is complete (the message is
// then not sent).
template <typename Resp>
using MessageSource = std::function<bool(Resp*)>;

// One bidi stream's state: answers each request message with one response message; an error
// ends the stream with it.
template <typename Req, typename Resp>
using StreamSession = std::function<absl::Status(const Req&, Resp*)>;

// Rows (items, vectors, queries) a successful call carried, for quantd_request_rows.
template <typename Req, typename Resp>
using RowCounter = std::function<double(const Req&, const Resp&)>;

// Authorization, placement (RunOn) and status mapping of a call. Shared by every method of a
// service; outlives every call (the server drains calls before the service is destroyed).
class CallPath {
 public:
  CallPath(Metrics* metrics, ServiceLimits limits) : metrics_(metrics), limits_(limits) {}
  ~CallPath();  // joins the RunOn::kOwnThread threads
  CallPath(const CallPath&) = delete;
  CallPath& operator=(const CallPath&) = delete;

  void set_authorizer(Authorizer authorizer) { authorizer_ = std::move(authorizer); }
  Metrics* metrics() const { return metrics_; }
  int64_t max_request_bytes() const { return limits_.max_request_bytes; }

  // Admits a call of `method` carrying `request` (null for a stream's call, whose messages are
  // checked one by one): authorized for the call's token, and within the size limit.
  absl::Status Admit(const grpc::CallbackServerContext& context, absl::string_view method,
                     const google::protobuf::Message* request) const;

  // Finishes the unary call of `context` with `work`'s status: refused unless admitted, else
  // run where `run_on` says. `method` outlives the call.
  grpc::ServerUnaryReactor* Unary(grpc::CallbackServerContext* context, absl::string_view method,
                                  RunOn run_on, const google::protobuf::Message& request,
                                  std::function<absl::Status()> work);

 private:
  void OnPool(grpc::CallbackServerContext* context, grpc::ServerUnaryReactor* reactor,
              absl::string_view method, std::function<absl::Status()> work);
  void OnOwnThread(grpc::ServerUnaryReactor* reactor, std::function<absl::Status()> work);

  Metrics* metrics_;
  ServiceLimits limits_;
  Authorizer authorizer_;
  struct OwnThread {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::mutex threads_mu_;
  std::vector<OwnThread> threads_;  // guarded by threads_mu_; finished ones joined at the next
};

namespace rpc_internal {

// Streams the messages of a MessageSource, one write at a time.
template <typename Resp>
class SourceWriter final : public grpc::ServerWriteReactor<Resp> {
 public:
  explicit SourceWriter(MessageSource<Resp> source) : source_(std::move(source)) { WriteNext(); }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      this->Finish(ToGrpcStatus(absl::CancelledError("the client went away")));
      return;
    }
    WriteNext();
  }
  void OnDone() override { delete this; }

 private:
  void WriteNext() {
    response_.Clear();
    if (!source_(&response_)) {
      this->Finish(grpc::Status::OK);
      return;
    }
    this->StartWrite(&response_);
  }
  MessageSource<Resp> source_;
  Resp response_;
};

// A call ended with `status` before any message was read or written.
template <typename Reactor>
Reactor* Refuse(const absl::Status& status) {
  class Refused final : public Reactor {
   public:
    explicit Refused(const absl::Status& s) { this->Finish(ToGrpcStatus(s)); }
    void OnDone() override { delete this; }
  };
  return new Refused(status);
}

// Reads request messages one at a time; each is handled (and, for Upsert, committed) before its
// response is written and the next one read, so responses are in request order and an error
// ends the stream with every earlier message handled and the failing one not.
template <typename Req, typename Resp>
class SessionReactor final : public grpc::ServerBidiReactor<Req, Resp> {
 public:
  SessionReactor(grpc::CallbackServerContext* context, StreamSession<Req, Resp> session,
                 const CallPath& calls, absl::string_view method, RowCounter<Req, Resp> rows)
      : context_(context),
        session_(std::move(session)),
        calls_(calls),
        method_(method),
        rows_(std::move(rows)) {
    Read();
  }

  void OnReadDone(bool ok) override {
    if (!ok && !request_.GetReflection()->GetUnknownFields(request_).empty()) {
      // Either the client closed its side (every message is answered) or the transport ended
      // the call (a message above its limit, a cancel): the latter must not count as OK.
      Done(context_->IsCancelled()
               ? absl::CancelledError("the call was cancelled or refused by the transport")
               : absl::OkStatus());
      return;
    }
    if (!ok) {
      Done(absl::InvalidArgumentError(absl::StrFormat(
          "batch %d does not parse as an %s (cut short, not protobuf, or a string field that is "
          "not UTF-8)",
          index_, Req::descriptor()->name())));
      return;
    }
    response_.Clear();
    absl::Status status = CheckRequestSize(request_, calls_.max_request_bytes(), method_);
    if (status.ok()) status = session_(request_, &response_);
    if (!status.ok()) {
      Done(absl::Status(status.code(), absl::StrFormat("batch %d: %s", index_, status.message())));
      return;
    }
    if (calls_.metrics() != nullptr && rows_) {
      calls_.metrics()->RecordRows(method_, rows_(request_, response_));
    }
    this->StartWrite(&response_);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Done(absl::CancelledError("the client went away before an acknowledgement was sent"));
      return;
    }
    ++index_;
    Read();
  }

  void OnDone() override { delete this; }

 private:
  // gRPC reports a message that does not deserialize like the end of the stream (ok = false).
  // Deserializing clears the message first, so a marker (an unknown field) left in it before
  // each read tells the two apart.
  void Read() {
    request_.Clear();
    request_.GetReflection()->MutableUnknownFields(&request_)->AddVarint(kMarkerField, 1);
    this->StartRead(&request_);
  }
  void Done(const absl::Status& status) { this->Finish(ToGrpcStatus(status)); }

  static constexpr int kMarkerField = 536870911;  // the largest field number
  grpc::CallbackServerContext* context_;
  StreamSession<Req, Resp> session_;
  const CallPath& calls_;
  absl::string_view method_;
  RowCounter<Req, Resp> rows_;
  Req request_;
  Resp response_;
  int64_t index_ = 0;
};

// Index of `method` in `service`; aborts (a programming error, found by every test that starts
// a server) when it does not exist or its shape or message types differ from the handler's.
int MethodIndex(const google::protobuf::ServiceDescriptor& service, absl::string_view method,
                bool client_streaming, bool server_streaming,
                const google::protobuf::Descriptor* request,
                const google::protobuf::Descriptor* response);

// Aborts unless every method of `service` is marked in `registered`.
void CheckEveryMethodRegistered(const google::protobuf::ServiceDescriptor& service,
                                const std::vector<bool>& registered);

}  // namespace rpc_internal

// A callback service of the generated `Service` (v1::Quantd) whose methods are reached only
// through the CallPath. The derived class registers each method once in its constructor and
// calls SealRegistration() last, which aborts if a method of the descriptor was left out.
template <typename Service>
class GuardedService : public Service::CallbackService {
 public:
  // Bearer-token checks for every call (server/auth.h); the default allows every call.
  void set_authorizer(Authorizer authorizer) { calls_.set_authorizer(std::move(authorizer)); }

 protected:
  GuardedService(Metrics* metrics, ServiceLimits limits)
      : calls_(metrics, limits),
        service_(*google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
            Service::service_full_name())),
        registered_(static_cast<size_t>(service_.method_count()), false) {}

  template <typename Req, typename Resp>
  void Unary(absl::string_view method, RunOn run_on,
             std::function<absl::Status(const Req&, Resp*)> handler,
             RowCounter<Req, Resp> rows = nullptr) {
    const int index = Mark(method, false, false, Req::descriptor(), Resp::descriptor());
    this->MarkMethodCallback(
        index, new grpc::internal::CallbackUnaryHandler<Req, Resp>(
                   [this, method, run_on, handler = std::move(handler), rows = std::move(rows)](
                       grpc::CallbackServerContext* context, const Req* request, Resp* response) {
                     return calls_.Unary(context, method, run_on, *request, [&, request, response] {
                       absl::Status status = handler(*request, response);
                       if (status.ok() && rows && calls_.metrics() != nullptr) {
                         calls_.metrics()->RecordRows(method, rows(*request, *response));
                       }
                       return status;
                     });
                   }));
  }

  // A server-streaming method, run on gRPC's thread; `handler` checks the request and returns
  // the source of the messages, or the error the call ends with.
  template <typename Req, typename Resp>
  void ServerStream(absl::string_view method,
                    std::function<absl::StatusOr<MessageSource<Resp>>(const Req&)> handler) {
    const int index = Mark(method, false, true, Req::descriptor(), Resp::descriptor());
    this->MarkMethodCallback(
        index, new grpc::internal::CallbackServerStreamingHandler<Req, Resp>(
                   [this, method, handler = std::move(handler)](
                       grpc::CallbackServerContext* context,
                       const Req* request) -> grpc::ServerWriteReactor<Resp>* {
                     absl::Status denied = calls_.Admit(*context, method, request);
                     if (!denied.ok()) {
                       return rpc_internal::Refuse<grpc::ServerWriteReactor<Resp>>(denied);
                     }
                     auto source = handler(*request);
                     if (!source.ok()) {
                       return rpc_internal::Refuse<grpc::ServerWriteReactor<Resp>>(source.status());
                     }
                     return new rpc_internal::SourceWriter<Resp>(std::move(*source));
                   }));
  }

  // A bidi-streaming method run on gRPC's threads: `new_session` makes the state of one call.
  template <typename Req, typename Resp>
  void BidiStream(absl::string_view method, std::function<StreamSession<Req, Resp>()> new_session,
                  RowCounter<Req, Resp> rows = nullptr) {
    const int index = Mark(method, true, true, Req::descriptor(), Resp::descriptor());
    this->MarkMethodCallback(
        index,
        new grpc::internal::CallbackBidiHandler<Req, Resp>(
            [this, method, new_session = std::move(new_session), rows = std::move(rows)](
                grpc::CallbackServerContext* context) -> grpc::ServerBidiReactor<Req, Resp>* {
              absl::Status denied = calls_.Admit(*context, method, nullptr);
              if (!denied.ok()) {
                return rpc_internal::Refuse<grpc::ServerBidiReactor<Req, Resp>>(denied);
              }
              return new rpc_internal::SessionReactor<Req, Resp>(context, new_session(), calls_,
                                                                 method, rows);
            }));
  }

  // Aborts unless every method of the service descriptor was registered.
  void SealRegistration() const { rpc_internal::CheckEveryMethodRegistered(service_, registered_); }

 private:
  int Mark(absl::string_view method, bool client_streaming, bool server_streaming,
           const google::protobuf::Descriptor* request,
           const google::protobuf::Descriptor* response) {
    const int index = rpc_internal::MethodIndex(service_, method, client_streaming,
                                                server_streaming, request, response);
    registered_[static_cast<size_t>(index)] = true;
    return index;
  }

  CallPath calls_;
  const google::protobuf::ServiceDescriptor& service_;
  std::vector<bool> registered_;
};

// Interceptors for every call the server matches (quantd.v1 and the others): count it in flight
// while it runs and, at the status it sends (PRE_SEND_STATUS, which calls refused by the
// transport pass too), in quantd_requests_total by method and gRPC code name with its latency;
// and give a unary or server-streaming request that does not deserialize INVALID_ARGUMENT
// naming the method instead of the bare UNIMPLEMENTED gRPC answers. `metrics` (may be null:
// then nothing is counted) outlives the server.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> CallInterceptors(
    Metrics* metrics);

}  // namespace quantd

#endif  // QUANTD_SERVER_RPC_H_
