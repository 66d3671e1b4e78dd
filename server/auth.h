// Transport security and bearer-token authorization of quantd.
//
// Tokens come from a file (--tokens_file), one "<role> <token>" per line; role `read` may call
// the read-only RPCs (kReadMethods), role `write` every RPC. Only SHA-256 digests of the tokens
// are kept, compared in constant time; a token never appears in a log line or an error.
// grpc.health.v1 and server reflection are separate services and stay open.
#ifndef QUANTD_SERVER_AUTH_H_
#define QUANTD_SERVER_AUTH_H_

#include <array>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_context.h"
#include "server/server.h"

namespace quantd {

enum class Role { kRead, kWrite };  // write implies read

absl::string_view RoleName(Role role);

// The role an RPC of quantd.v1.Quantd needs, by method name ("Search"): kRead for the methods
// that change nothing, kWrite for every other method, including ones added later.
Role RequiredRole(absl::string_view method);

// Shortest token accepted: 16 characters of visible ASCII (0x21-0x7E).
inline constexpr size_t kMinTokenLength = 16;

struct TokenEntry {
  Role role = Role::kRead;
  std::array<unsigned char, 32> digest{};  // SHA-256 of the token
  int line = 0;                            // line of the tokens file
};

// Parses the text of a tokens file named `file_name` (used in errors): one "<role> <token>" per
// line, blank lines and lines starting with '#' ignored. Errors name the file and line number,
// never the token. A file without tokens is an error too: every call would be refused.
absl::StatusOr<std::vector<TokenEntry>> ParseTokens(absl::string_view text,
                                                    absl::string_view file_name);

// Reads and parses --tokens_file `path`.
absl::StatusOr<std::vector<TokenEntry>> ReadTokensFile(const std::string& path);

class Authorizer {
 public:
  // Authorization off: every call is allowed with the write role.
  Authorizer() = default;
  explicit Authorizer(std::vector<TokenEntry> tokens) : tokens_(std::move(tokens)) {}

  bool enabled() const { return !tokens_.empty(); }

  // OK if the call's `authorization: Bearer <token>` metadata names a token whose role may call
  // `method`. Missing, malformed or unknown token: UNAUTHENTICATED; a read token on a write
  // method: PERMISSION_DENIED naming the method and the role.
  absl::Status Authorize(const grpc::ServerContextBase& context, absl::string_view method) const;

  // The role of `token`, or UNAUTHENTICATED; compares against every known token in constant
  // time.
  absl::StatusOr<Role> RoleOf(absl::string_view token) const;

 private:
  std::vector<TokenEntry> tokens_;
};

// What QuantdServer::Start needs from the security flags: the listening port's credentials and
// the authorizer. Checks every file (readable, PEM, key matching the certificate) so a mistake
// fails start-up naming the flag and path, and logs whether TLS, client-certificate
// verification and token authorization are on.
struct Security {
  std::shared_ptr<grpc::ServerCredentials> credentials;
  Authorizer authorizer;
};
absl::StatusOr<Security> LoadSecurity(const ServerOptions& options);

}  // namespace quantd

#endif  // QUANTD_SERVER_AUTH_H_
