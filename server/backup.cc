#include "server/backup.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <system_error>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace quantd {
namespace {

namespace fs = std::filesystem;

constexpr size_t kMaxBackupNameLength = 128;
constexpr char kPartialMarker[] = ".partial-";

// A filesystem failure: RESOURCE_EXHAUSTED for a full disk, INTERNAL otherwise.
absl::Status FromErrno(int error, absl::string_view what) {
  const std::string message = absl::StrCat(what, ": ", std::strerror(error));
  if (error == ENOSPC || error == EDQUOT || error == EFBIG) {
    return absl::ResourceExhaustedError(message);
  }
  return absl::InternalError(message);
}

// fsyncs a file or directory, so that a rename into it (or the data in it) is durable.
absl::Status SyncPath(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return FromErrno(errno, absl::StrCat("open '", path.string(), "' to sync"));
  const int result = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  if (result != 0) return FromErrno(error, absl::StrCat("fsync '", path.string(), "'"));
  return absl::OkStatus();
}

// Removes `path` and everything under it; best effort (used on failure paths and for stale
// partials, where a leftover is reported by the next attempt anyway).
void RemoveAll(const fs::path& path) {
  std::error_code ignored;
  fs::remove_all(path, ignored);
}

}  // namespace

absl::Status ValidateBackupName(absl::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError("name is empty: name the backup");
  if (name.size() > kMaxBackupNameLength) {
    return absl::InvalidArgumentError(absl::StrFormat("name '%s...' has %d characters, at most %d",
                                                      name.substr(0, 32), name.size(),
                                                      kMaxBackupNameLength));
  }
  if (name == "." || name == "..") {
    return absl::InvalidArgumentError(
        absl::StrFormat("name '%s' is not a directory name: give a single path component", name));
  }
  for (size_t i = 0; i < name.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(name[i]);
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!(alnum || c == '_' || c == '-' || c == '.')) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "name '%s' is invalid at position %d: a backup name is one path component of "
          "[A-Za-z0-9._-]",
          absl::CHexEscape(name), i));
    }
  }
  if (absl::StrContains(name, kPartialMarker)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "name '%s' contains '%s', which marks backups in progress", name, kPartialMarker));
  }
  return absl::OkStatus();
}

absl::StatusOr<BackupResult> Backups::Backup(const std::string& backup_dir,
                                             absl::string_view name) {
  if (auto status = ValidateBackupName(name); !status.ok()) return status;
  std::unique_lock lock(mu_, std::try_to_lock);
  if (!lock.owns_lock()) {
    return absl::AbortedError(absl::StrFormat(
        "backup '%s' not started: another backup is running; retry when it ends", name));
  }
  const auto start = std::chrono::steady_clock::now();

  const fs::path dir(backup_dir);
  std::error_code error;
  fs::create_directories(dir, error);
  if (error) {
    return FromErrno(error.value(),
                     absl::StrFormat("backup '%s': create backup_dir '%s'", name, backup_dir));
  }
  const fs::path final_path = dir / std::string(name);
  const fs::file_type existing = fs::symlink_status(final_path, error).type();
  if (existing != fs::file_type::not_found) {
    if (error) {
      return FromErrno(error.value(),
                       absl::StrFormat("backup '%s': look up '%s'", name, final_path.string()));
    }
    return absl::AlreadyExistsError(
        absl::StrFormat("backup '%s' already exists: '%s'", name, final_path.string()));
  }

  // Leftovers of an attempt that a crash interrupted: <name>.partial-* (and RocksDB's own
  // <partial>.tmp). Names cannot contain the marker, so these belong to no other backup.
  const std::string partial_prefix = absl::StrCat(name, kPartialMarker);
  for (fs::directory_iterator it(dir, error), end; !error && it != end; it.increment(error)) {
    if (absl::StartsWith(it->path().filename().string(), partial_prefix)) RemoveAll(it->path());
  }
  if (error) {
    return FromErrno(error.value(),
                     absl::StrFormat("backup '%s': list backup_dir '%s'", name, backup_dir));
  }

  std::random_device random;
  const fs::path partial = dir / absl::StrFormat("%s%08x", partial_prefix, random());
  auto cleanup = [&] {
    RemoveAll(partial);
    RemoveAll(partial.string() + ".tmp");
  };

  BackupResult result;
  auto sequence = db_->Checkpoint(partial.string());
  if (!sequence.ok()) {
    cleanup();
    return absl::Status(sequence.status().code(), absl::StrFormat("backup '%s' failed: %s", name,
                                                                  sequence.status().message()));
  }
  result.sequence = *sequence;

  for (fs::recursive_directory_iterator it(partial, error), end; !error && it != end;
       it.increment(error)) {
    if (!it->is_regular_file()) continue;
    ++result.files;
    result.bytes += it->file_size();
  }
  absl::Status status =
      error ? FromErrno(error.value(), "list the backup's files") : SyncPath(partial);
  if (status.ok()) {
    fs::rename(partial, final_path, error);
    if (error) {
      status = FromErrno(error.value(), absl::StrCat("rename into '", final_path.string(), "'"));
    }
  }
  if (status.ok()) status = SyncPath(dir);
  if (!status.ok()) {
    cleanup();
    RemoveAll(final_path);
    return absl::Status(status.code(), absl::StrFormat("backup '%s': %s", name, status.message()));
  }
  result.path = final_path.string();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace quantd
