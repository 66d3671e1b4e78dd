// A small reusable client library for quantd: connecting, status conversion and streaming a
// vector file into a collection. Used by quantctl, the process-level tests and the benchmarks.
#ifndef QUANTD_CLIENT_CLIENT_H_
#define QUANTD_CLIENT_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/channel.h"
#include "io/vector_file.h"
#include "quantd/v1/quantd.grpc.pb.h"

namespace quantd {

// An insecure channel to `address` (host:port) with message limits matching the server's.
std::shared_ptr<grpc::Channel> Connect(const std::string& address);

// How to reach a server with TLS and/or bearer-token authorization.
struct ConnectOptions {
  // TLS is on when `tls` is set or any file below is given. tls_ca: PEM CA certificate(s)
  // verifying the server (empty: the system's roots). tls_cert and tls_key: the client's
  // certificate and key, for a server that requires one (both or neither).
  bool tls = false;
  std::string tls_ca;
  std::string tls_cert;
  std::string tls_key;
  // The name checked against the server certificate instead of the host in the address.
  std::string tls_server_name;
  // Sent as "authorization: Bearer <token>" with every call of the channel; empty: none.
  std::string token;
};

// A channel to `address` per `options`; an error names an unreadable file or a bad token.
absl::StatusOr<std::shared_ptr<grpc::Channel>> Connect(const std::string& address,
                                                       const ConnectOptions& options);

absl::Status FromGrpcStatus(const grpc::Status& status);

// Rows per Upsert batch so that one batch is about `target_bytes` on the wire.
int64_t BatchRowsFor(int64_t dimension, int64_t target_bytes = 1 << 20);

struct UploadOptions {
  // Rows per batch; 0 picks about 1 MiB per batch, well under gRPC's 4 MiB default limit.
  int64_t batch_rows = 0;
  // Ids: explicit (size must be the number of rows uploaded), or row number + id_offset.
  const std::vector<uint64_t>* ids = nullptr;
  uint64_t id_offset = 0;
  // Attributes, one per row uploaded (null: none sent, stored ones stay). Batches then hold at
  // most about 1 MiB of vectors and attributes.
  const std::vector<v1::Attributes>* attributes = nullptr;
  // Upload at most this many rows (-1: all).
  int64_t max_rows = -1;
  // Called after each acknowledgement with the rows acknowledged so far.
  std::function<void(int64_t acknowledged_rows)> on_progress;
};

struct UploadResult {
  int64_t rows = 0;      // rows acknowledged by the server
  int64_t inserted = 0;  // of those, ids not stored before
  int64_t batches = 0;
  uint64_t item_count = 0;
  double seconds = 0;
};

// For an Upsert error of the server ("batch 1: vectors[row 484, ...] ..."), the file row it is
// about, as a prefix "<path> row 2500: ", knowing that the stream started at file row
// `first_row` and every batch but the last held `batch_rows` rows; "" if the message names no
// batch.
std::string FileRowOfBatchError(absl::string_view message, absl::string_view path,
                                int64_t first_row, int64_t batch_rows);

// Streams the rows of `reader` into `collection` with one Upsert stream. Batches are written
// while earlier ones await their acknowledgement (gRPC flow control bounds what is in flight).
// On error the status
// says which batch failed and which row of the file; every acknowledged batch (result.rows on
// success) is stored.
absl::StatusOr<UploadResult> UploadVectors(v1::Quantd::Stub& stub, const std::string& collection,
                                           VectorReader& reader, const UploadOptions& options);

}  // namespace quantd

#endif  // QUANTD_CLIENT_CLIENT_H_
