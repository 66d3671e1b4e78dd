#include "server/auth.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "grpcpp/security/server_credentials.h"
#include "server/log.h"

namespace quantd {
namespace {

// The RPCs that change nothing. Every other method of quantd.v1.Quantd needs the write role.
const absl::flat_hash_set<absl::string_view>& ReadMethods() {
  // clang-format off
  static const auto* methods = new absl::flat_hash_set<absl::string_view>{
      "Encode", "Search", "GetStats", "Lookup", "GetItems", "ListItems", "ListCollections",
      "DescribeCollection", "GetJob", "ListJobs", "ExportSids", "ListTokenizerVersions",
      "MapSids", "NextCodes", "ExportTokenizer"};
  // clang-format on
  return *methods;
}

std::array<unsigned char, 32> Sha256(absl::string_view text) {
  std::array<unsigned char, 32> digest{};
  unsigned int size = 0;
  EVP_Digest(text.data(), text.size(), digest.data(), &size, EVP_sha256(), nullptr);
  return digest;
}

absl::StatusOr<std::string> ReadFile(absl::string_view flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::FailedPreconditionError(
        absl::StrFormat("--%s '%s' cannot be read: %s", flag, path, std::strerror(errno)));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) {
    return absl::FailedPreconditionError(absl::StrFormat("--%s '%s' cannot be read", flag, path));
  }
  return buffer.str();
}

// OpenSSL objects freed on scope exit.
struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Free {
  void operator()(X509* x509) const { X509_free(x509); }
};
struct KeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using Certificate = std::unique_ptr<X509, X509Free>;

std::unique_ptr<BIO, BioFree> MemoryBio(const std::string& pem) {
  return std::unique_ptr<BIO, BioFree>(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// Never prompts for a passphrase: an encrypted key fails to load instead.
int NoPassphrase(char*, int, int, void*) { return -1; }

absl::StatusOr<Certificate> FirstCertificate(absl::string_view flag, const std::string& path,
                                             const std::string& pem) {
  Certificate certificate(PEM_read_bio_X509(MemoryBio(pem).get(), nullptr, NoPassphrase, nullptr));
  ERR_clear_error();
  if (certificate == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrFormat("--%s '%s' holds no PEM certificate", flag, path));
  }
  return certificate;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> TlsCredentials(
    const ServerOptions& options) {
  auto cert_pem = ReadFile("tls_cert", options.tls_cert);
  if (!cert_pem.ok()) return cert_pem.status();
  auto key_pem = ReadFile("tls_key", options.tls_key);
  if (!key_pem.ok()) return key_pem.status();
  auto certificate = FirstCertificate("tls_cert", options.tls_cert, *cert_pem);
  if (!certificate.ok()) return certificate.status();
  std::unique_ptr<EVP_PKEY, KeyFree> key(
      PEM_read_bio_PrivateKey(MemoryBio(*key_pem).get(), nullptr, NoPassphrase, nullptr));
  ERR_clear_error();
  if (key == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrFormat("--tls_key '%s' holds no unencrypted PEM private key", options.tls_key));
  }
  if (X509_check_private_key(certificate->get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::FailedPreconditionError(
        absl::StrFormat("--tls_key '%s' does not match the certificate in --tls_cert '%s'",
                        options.tls_key, options.tls_cert));
  }

  grpc::SslServerCredentialsOptions ssl(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  ssl.pem_key_cert_pairs.push_back({*key_pem, *cert_pem});
  if (!options.tls_client_ca.empty()) {
    auto ca_pem = ReadFile("tls_client_ca", options.tls_client_ca);
    if (!ca_pem.ok()) return ca_pem.status();
    auto ca = FirstCertificate("tls_client_ca", options.tls_client_ca, *ca_pem);
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *ca_pem;
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

}  // namespace

absl::string_view RoleName(Role role) { return role == Role::kRead ? "read" : "write"; }

Role RequiredRole(absl::string_view method) {
  return ReadMethods().contains(method) ? Role::kRead : Role::kWrite;
}

absl::StatusOr<std::vector<TokenEntry>> ParseTokens(absl::string_view text,
                                                    absl::string_view file_name) {
  std::vector<TokenEntry> entries;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line.front() == '#') continue;
    const auto error = [&](absl::string_view what) {
      return absl::InvalidArgumentError(
          absl::StrFormat("--tokens_file '%s' line %d: %s", file_name, line_number, what));
    };
    const std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (fields.size() != 2) {
      return error(absl::StrFormat("expected '<role> <token>', found %d fields", fields.size()));
    }
    TokenEntry entry;
    entry.line = line_number;
    if (fields[0] == "read") {
      entry.role = Role::kRead;
    } else if (fields[0] == "write") {
      entry.role = Role::kWrite;
    } else {
      // The first field is not echoed: it may be a token written in the wrong order.
      return error("the role (first field) is not 'read' or 'write'");
    }
    const absl::string_view token = fields[1];
    if (token.size() < kMinTokenLength) {
      return error(absl::StrFormat("the token has %d characters, at least %d are required",
                                   token.size(), kMinTokenLength));
    }
    for (const char c : token) {
      if (c < 0x21 || c > 0x7e) {
        return error("the token has a character outside visible ASCII (0x21-0x7E)");
      }
    }
    entry.digest = Sha256(token);
    for (const TokenEntry& earlier : entries) {
      if (earlier.digest == entry.digest) {
        return error(absl::StrFormat("the token repeats the one on line %d", earlier.line));
      }
    }
    entries.push_back(entry);
  }
  if (entries.empty()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "--tokens_file '%s' has no tokens: every call would be refused", file_name));
  }
  return entries;
}

absl::StatusOr<std::vector<TokenEntry>> ReadTokensFile(const std::string& path) {
  auto text = ReadFile("tokens_file", path);
  if (!text.ok()) return text.status();
  return ParseTokens(*text, path);
}

absl::StatusOr<Role> Authorizer::RoleOf(absl::string_view token) const {
  const std::array<unsigned char, 32> digest = Sha256(token);
  bool found = false;
  Role role = Role::kRead;
  for (const TokenEntry& entry : tokens_) {  // no early exit: the time does not depend on it
    const bool match = CRYPTO_memcmp(digest.data(), entry.digest.data(), digest.size()) == 0;
    found |= match;
    if (match) role = entry.role;
  }
  if (!found) return absl::UnauthenticatedError("missing or invalid bearer token");
  return role;
}

absl::Status Authorizer::Authorize(const grpc::ServerContextBase& context,
                                   absl::string_view method) const {
  if (!enabled()) return absl::OkStatus();
  const auto& metadata = context.client_metadata();
  const auto header = metadata.find("authorization");
  if (header == metadata.end() || metadata.count("authorization") != 1) {
    return absl::UnauthenticatedError("missing or invalid bearer token");
  }
  const absl::string_view value(header->second.data(), header->second.size());
  const size_t space = value.find(' ');
  if (space == absl::string_view::npos ||
      !absl::EqualsIgnoreCase(value.substr(0, space), "bearer")) {
    return absl::UnauthenticatedError("missing or invalid bearer token");
  }
  auto role = RoleOf(absl::StripAsciiWhitespace(value.substr(space + 1)));
  if (!role.ok()) return role.status();
  const Role needed = RequiredRole(method);
  if (needed == Role::kWrite && *role != Role::kWrite) {
    return absl::PermissionDeniedError(
        absl::StrFormat("%s needs the %s role; this token has the %s role", method,
                        RoleName(needed), RoleName(*role)));
  }
  return absl::OkStatus();
}

absl::StatusOr<Security> LoadSecurity(const ServerOptions& options) {
  Security security;
  if (options.tls_cert.empty() != options.tls_key.empty()) {
    return absl::InvalidArgumentError(
        options.tls_cert.empty() ? "--tls_key is set without --tls_cert: give both or neither"
                                 : "--tls_cert is set without --tls_key: give both or neither");
  }
  if (options.tls_cert.empty() && !options.tls_client_ca.empty()) {
    return absl::InvalidArgumentError(
        "--tls_client_ca is set without --tls_cert and --tls_key: client certificates need TLS");
  }
  if (options.tls_cert.empty()) {
    security.credentials = grpc::InsecureServerCredentials();
  } else {
    auto credentials = TlsCredentials(options);
    if (!credentials.ok()) return credentials.status();
    security.credentials = std::move(*credentials);
  }
  if (!options.tokens_file.empty()) {
    auto tokens = ReadTokensFile(options.tokens_file);
    if (!tokens.ok()) return tokens.status();
    int writers = 0;
    for (const TokenEntry& entry : *tokens) writers += entry.role == Role::kWrite;
    LogInfo("bearer-token authorization on: %d read and %d write tokens from %s",
            static_cast<int>(tokens->size()) - writers, writers, options.tokens_file);
    security.authorizer = Authorizer(std::move(*tokens));
  } else {
    LogWarning("authorization off (no --tokens_file): every client has write access");
  }
  if (options.tls_cert.empty()) {
    LogWarning("TLS off (no --tls_cert/--tls_key): gRPC traffic is plaintext");
  } else if (options.tls_client_ca.empty()) {
    LogInfo("TLS on with certificate %s; client certificates not requested", options.tls_cert);
  } else {
    LogInfo("TLS on with certificate %s; client certificates required, verified against %s",
            options.tls_cert, options.tls_client_ca);
  }
  return security;
}

}  // namespace quantd
