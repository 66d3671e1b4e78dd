#include "client/client.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/client_interceptor.h"

namespace quantd {
namespace {

grpc::ChannelArguments ChannelArgs() {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  return args;
}

absl::StatusOr<std::string> ReadPem(absl::string_view field, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s '%s' cannot be read: %s", field, path, std::strerror(errno)));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// Adds "authorization: Bearer <token>" to every call, on plaintext and TLS channels alike
// (call credentials would refuse a plaintext channel).
class BearerTokenInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit BearerTokenInterceptor(const std::string& header) : header_(header) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace("authorization", header_);
    }
    methods->Proceed();
  }

 private:
  std::string header_;
};

class BearerTokenFactory final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerTokenFactory(const std::string& token) : header_(absl::StrCat("Bearer ", token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new BearerTokenInterceptor(header_);
  }

 private:
  std::string header_;  // lives as long as the channel, which owns the factory
};

}  // namespace

std::string FileRowOfBatchError(absl::string_view message, absl::string_view path,
                                int64_t first_row, int64_t batch_rows) {
  // The server names the batch of the stream and the row within it: "batch 1: vectors[row 484,
  // component 17] = nan: ...". Every batch but the last holds batch_rows rows.
  int64_t batch = 0;
  int64_t row = 0;
  absl::string_view rest = message;
  if (!absl::ConsumePrefix(&rest, "batch ")) return "";
  const size_t colon = rest.find(':');
  if (colon == absl::string_view::npos || !absl::SimpleAtoi(rest.substr(0, colon), &batch)) {
    return "";
  }
  const int64_t batch_first = first_row + batch * batch_rows;
  const size_t at = rest.find("[row ");
  if (at != absl::string_view::npos) {
    absl::string_view digits = rest.substr(at + 5);
    digits = digits.substr(0, digits.find_first_not_of("0123456789"));
    if (absl::SimpleAtoi(digits, &row)) {
      return absl::StrFormat("%s row %d: ", path, batch_first + row);
    }
  }
  return absl::StrFormat("%s rows %d..%d: ", path, batch_first, batch_first + batch_rows - 1);
}

std::shared_ptr<grpc::Channel> Connect(const std::string& address) {
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), ChannelArgs());
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect(const std::string& address,
                                                       const ConnectOptions& options) {
  grpc::ChannelArguments args = ChannelArgs();
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options.tls || !options.tls_ca.empty() || !options.tls_cert.empty() ||
      !options.tls_key.empty() || !options.tls_server_name.empty()) {
    if (options.tls_cert.empty() != options.tls_key.empty()) {
      return absl::InvalidArgumentError(
          "tls_cert and tls_key go together: give both (a client certificate) or neither");
    }
    grpc::SslCredentialsOptions ssl;
    if (!options.tls_ca.empty()) {
      auto pem = ReadPem("tls_ca", options.tls_ca);
      if (!pem.ok()) return pem.status();
      ssl.pem_root_certs = std::move(*pem);
    }
    if (!options.tls_cert.empty()) {
      auto cert = ReadPem("tls_cert", options.tls_cert);
      if (!cert.ok()) return cert.status();
      auto key = ReadPem("tls_key", options.tls_key);
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = std::move(*cert);
      ssl.pem_private_key = std::move(*key);
    }
    if (!options.tls_server_name.empty()) {
      args.SetSslTargetNameOverride(options.tls_server_name);
    }
    credentials = grpc::SslCredentials(ssl);
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  if (options.token.empty()) return grpc::CreateCustomChannel(address, credentials, args);
  for (const char c : options.token) {
    if (c < 0x21 || c > 0x7e) {  // never echoed: it is a secret
      return absl::InvalidArgumentError(
          "the bearer token has a character outside visible ASCII (0x21-0x7E)");
    }
  }
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> factories;
  factories.push_back(std::make_unique<BearerTokenFactory>(options.token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(address, credentials, args,
                                                                 std::move(factories));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

int64_t BatchRowsFor(int64_t dimension, int64_t target_bytes) {
  return std::max<int64_t>(1, target_bytes / (dimension * 4 + 8));
}

absl::StatusOr<UploadResult> UploadVectors(v1::Quantd::Stub& stub, const std::string& collection,
                                           VectorReader& reader, const UploadOptions& options) {
  const int64_t dim = reader.dim();
  const int64_t total =
      options.max_rows < 0 ? reader.rows() : std::min(options.max_rows, reader.rows());
  if (options.ids != nullptr && static_cast<int64_t>(options.ids->size()) != total) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%d ids for %d rows of %s: give one id per row", options.ids->size(), total,
                        reader.path()));
  }
  if (options.attributes != nullptr && static_cast<int64_t>(options.attributes->size()) != total) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%d attribute rows for %d rows of %s: give one per row (an empty one for none)",
        options.attributes->size(), total, reader.path()));
  }
  int64_t batch_rows = options.batch_rows > 0 ? options.batch_rows : BatchRowsFor(dim);
  if (options.attributes != nullptr && options.batch_rows <= 0) {
    // About 1 MiB a batch with the largest row's attributes (the server takes 64 MiB).
    size_t widest = 0;
    for (const v1::Attributes& a : *options.attributes) widest = std::max(widest, a.ByteSizeLong());
    batch_rows = std::max<int64_t>(
        1, std::min(batch_rows, BatchRowsFor(dim + static_cast<int64_t>(widest + 3) / 4)));
  }
  const int64_t first_row = reader.rows_read();  // file row of the first row sent
  const auto start = std::chrono::steady_clock::now();

  grpc::ClientContext context;
  auto stream = stub.Upsert(&context);
  UploadResult result;
  std::mutex mu;  // guards result between the writer and the acknowledgement reader

  // Acknowledgements are read on their own thread so batches can be in flight meanwhile.
  std::thread reader_thread([&] {
    v1::UpsertResponse ack;
    while (stream->Read(&ack)) {
      int64_t rows = 0;
      {
        std::lock_guard lock(mu);
        result.rows += static_cast<int64_t>(ack.rows());
        result.inserted += static_cast<int64_t>(ack.inserted());
        result.item_count = ack.item_count();
        ++result.batches;
        rows = result.rows;
      }
      if (options.on_progress) options.on_progress(rows);
    }
  });

  absl::Status read_status;
  v1::UpsertRequest request;
  request.set_collection(collection);
  int64_t sent = 0;
  std::vector<float> buffer;
  while (sent < total) {
    const int64_t n = std::min(batch_rows, total - sent);
    buffer.resize(static_cast<size_t>(n * dim));
    auto got = reader.Read(n, buffer.data());
    if (!got.ok() || *got != n) {
      read_status = got.ok() ? absl::DataLossError(absl::StrFormat("%s ended after %d rows",
                                                                   reader.path(), sent + *got))
                             : got.status();
      break;
    }
    request.mutable_ids()->Clear();
    for (int64_t i = 0; i < n; ++i) {
      request.add_ids(options.ids != nullptr ? (*options.ids)[sent + i]
                                             : options.id_offset + static_cast<uint64_t>(sent + i));
    }
    request.mutable_vectors()->Assign(buffer.begin(), buffer.end());
    if (options.attributes != nullptr) {
      request.mutable_attributes()->Assign(options.attributes->begin() + sent,
                                           options.attributes->begin() + sent + n);
    }
    if (!stream->Write(request)) break;  // the server ended the stream; Finish says why
    request.clear_collection();
    sent += n;
  }
  if (!read_status.ok()) context.TryCancel();
  stream->WritesDone();
  reader_thread.join();
  const grpc::Status status = stream->Finish();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!read_status.ok()) return read_status;
  if (!status.ok()) {
    return absl::Status(FromGrpcStatus(status).code(),
                        absl::StrFormat("%s%s (%d rows acknowledged before the error)",
                                        FileRowOfBatchError(status.error_message(), reader.path(),
                                                            first_row, batch_rows),
                                        status.error_message(), result.rows));
  }
  return result;
}

}  // namespace quantd
