#include "client/client.h"

#include <algorithm>
#include <chrono>
#include <mutex>
#include <thread>

#include "absl/strings/str_format.h"
#include "grpcpp/grpcpp.h"

namespace quantd {

std::shared_ptr<grpc::Channel> Connect(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
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
  const int64_t batch_rows = options.batch_rows > 0 ? options.batch_rows : BatchRowsFor(dim);
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
                        absl::StrFormat("%s (%d rows acknowledged before the error)",
                                        status.error_message(), result.rows));
  }
  return result;
}

}  // namespace quantd
