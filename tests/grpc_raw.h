// Calls to services whose generated stubs Debian does not ship (grpc.health.v1,
// grpc.reflection.v1alpha), made with raw protobuf bytes over a generic stub.
#ifndef QUANTD_TESTS_GRPC_RAW_H_
#define QUANTD_TESTS_GRPC_RAW_H_

#include <string>

#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"

namespace quantd::testing {

// One request on a unary or streaming `method` ("/pkg.Service/Method"), sent with
// `authorization` metadata unless it is empty; a streaming call writes the request, closes its
// side and reads until the server ends the call. Returns the status; the serialized (first)
// response in *response.
inline grpc::Status RawCall(grpc::Channel* channel, const std::string& method,
                            const std::string& request, std::string* response, bool streaming,
                            const std::string& authorization = "") {
  grpc::GenericStub stub(channel->shared_from_this());
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!authorization.empty()) context.AddMetadata("authorization", authorization);
  grpc::Slice slice(request);
  grpc::ByteBuffer request_buffer(&slice, 1);
  grpc::ByteBuffer response_buffer;
  grpc::Status status;
  void* tag = nullptr;
  bool ok = false;
  auto wait = [&] { return cq.Next(&tag, &ok) && ok; };
  if (streaming) {
    auto call = stub.PrepareCall(&context, method, &cq);
    call->StartCall(reinterpret_cast<void*>(1));
    if (wait()) {
      call->Write(request_buffer, reinterpret_cast<void*>(2));
      if (wait()) {
        call->WritesDone(reinterpret_cast<void*>(3));
        wait();
        call->Read(&response_buffer, reinterpret_cast<void*>(4));
        if (wait()) {
          grpc::ByteBuffer later;  // the rest of the stream, until the server ends it
          do {
            call->Read(&later, reinterpret_cast<void*>(4));
          } while (wait());
        }
      }
    }
    call->Finish(&status, reinterpret_cast<void*>(5));
    cq.Next(&tag, &ok);
  } else {
    auto call = stub.PrepareUnaryCall(&context, method, request_buffer, &cq);
    call->StartCall();
    call->Finish(&response_buffer, &status, reinterpret_cast<void*>(1));
    cq.Next(&tag, &ok);
  }
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  response->clear();
  std::vector<grpc::Slice> slices;
  if (response_buffer.Valid() && response_buffer.Dump(&slices).ok()) {
    for (const grpc::Slice& s : slices) {
      response->append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
  }
  return status;
}

// grpc.health.v1.Health/Check for the whole server; true if it answers SERVING.
inline bool HealthServing(grpc::Channel* channel) {
  std::string response;
  const grpc::Status status =
      RawCall(channel, "/grpc.health.v1.Health/Check", "", &response, false);
  // HealthCheckResponse{status: SERVING (1)} is field 1, varint 1.
  return status.ok() && response == std::string("\x08\x01", 2);
}

// grpc.health.v1.Health/Check for `service` ("" = the whole server): the ServingStatus number
// (1 SERVING, 2 NOT_SERVING, ...), or -(gRPC code) when the check itself fails.
inline int HealthStatus(grpc::Channel* channel, const std::string& service) {
  // HealthCheckRequest{service: string field 1}.
  std::string request;
  if (!service.empty()) {
    request = std::string("\x0a", 1) + static_cast<char>(service.size()) + service;
  }
  std::string response;
  const grpc::Status status =
      RawCall(channel, "/grpc.health.v1.Health/Check", request, &response, false);
  if (!status.ok()) return -static_cast<int>(status.error_code());
  if (response.empty()) return 0;  // UNKNOWN: the default value is not serialized
  return response.size() == 2 && response[0] == '\x08' ? response[1] : -1000;
}

}  // namespace quantd::testing

#endif  // QUANTD_TESTS_GRPC_RAW_H_
