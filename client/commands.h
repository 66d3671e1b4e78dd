// quantctl's command handlers, one per command of the table in command_table.cc, grouped by the
// file that defines them. Each reads its arguments from `cli`, calls the server and prints the
// answer (the response message with --json).
#ifndef QUANTD_CLIENT_COMMANDS_H_
#define QUANTD_CLIENT_COMMANDS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client/cli.h"
#include "quantd/v1/quantd.pb.h"

namespace quantd::quantctl {

// The command table (command_table.cc): every command with its help, options and handler.
const std::vector<Command>& Commands();
// The command called `name`; nullptr if there is none.
const Command* FindCommand(const std::string& name);
// The text of `quantctl --help`: the command overview, generated from the table, and the global
// options.
const std::string& UsageText();

// Collections and items (commands_collections.cc).
absl::Status CreateCommand(Cli& cli);
absl::Status ListCommand(Cli& cli);
absl::Status DescribeCommand(Cli& cli);
absl::Status DropCommand(Cli& cli);
absl::Status UpsertCommand(Cli& cli);
absl::Status GetCommand(Cli& cli);
absl::Status ListItemsCommand(Cli& cli);
absl::Status DeleteCommand(Cli& cli);
absl::Status InspectCommand(Cli& cli);

// Semantic IDs (commands_sids.cc).
absl::Status TrainCommand(Cli& cli);
absl::Status EncodeCommand(Cli& cli);
absl::Status LookupCommand(Cli& cli);
absl::Status StatsCommand(Cli& cli);
absl::Status ExportSidsCommand(Cli& cli);

// Tokenizer versions, SID maps and constrained decoding (commands_versions.cc).
absl::Status VersionsCommand(Cli& cli);
absl::Status ActivateCommand(Cli& cli);
absl::Status DropVersionCommand(Cli& cli);
absl::Status PinCommand(Cli& cli);
absl::Status UnpinCommand(Cli& cli);
absl::Status RetentionCommand(Cli& cli);
absl::Status SidMapCommand(Cli& cli);
absl::Status NextCodesCommand(Cli& cli);

// Files for decoders and other pipelines (commands_tokenizer_files.cc).
absl::Status ExportTrieCommand(Cli& cli);
absl::Status ExportTokenizerCommand(Cli& cli);
absl::Status ImportTokenizerCommand(Cli& cli);

// Training jobs (commands_jobs.cc).
absl::Status JobsCommand(Cli& cli);
absl::Status JobCommand(Cli& cli);
absl::Status CancelCommand(Cli& cli);

// Nearest-neighbour search (commands_search.cc).
absl::Status TrainIndexCommand(Cli& cli);
absl::Status SearchCommand(Cli& cli);

// Operations (commands_admin.cc).
absl::Status BackupCommand(Cli& cli);
absl::Status HealthCommand(Cli& cli);

// Option parsers shared by several commands (commands_versions.cc); each a usage error naming
// the option and value when it does not parse.
// --NAME V: a kept tokenizer version; 0 (and no option) means the active one.
absl::StatusOr<uint32_t> VersionOption(Cli& cli, const std::string& name = "version");
// --activation always|never|if-better; ACTIVATION_UNSPECIFIED (the server's default, always)
// without it.
absl::StatusOr<v1::Activation> ActivationOption(Cli& cli);
// --assignment nearest|capacity; ASSIGNMENT_UNSPECIFIED without it.
absl::StatusOr<v1::Assignment> AssignmentOption(Cli& cli);

// Every SID of a tokenizer version, as ExportSids streams them (item-id order).
struct SidTable {
  uint32_t version = 0;
  uint32_t levels = 0;
  std::vector<uint64_t> ids;
  std::vector<uint32_t> codes;  // ids.size() x levels, row-major
  std::vector<uint32_t> suffixes;
};
// Reads them (commands_sids.cc); with expected_items > 0, a progress bar on a terminal.
absl::StatusOr<SidTable> ReadSids(Cli& cli, const std::string& collection, uint32_t version,
                                  int64_t expected_items);

// The kept tokenizer version `version` of `collection` (0: the active one) as
// ListTokenizerVersions describes it; NOT_FOUND naming both if it is not kept.
absl::StatusOr<v1::TokenizerVersion> FetchVersion(Cli& cli, const std::string& collection,
                                                  uint32_t version);

// Shared by the training commands (train, train-index), defined in commands_jobs.cc.
// Prints a job, one line (the message with --json).
void PrintJob(Cli& cli, const v1::Job& job);
// Prints a just-started job (--detach) or polls it to its end with a progress bar; an error
// unless it succeeded.
absl::Status FollowJob(Cli& cli, v1::Job job);

}  // namespace quantd::quantctl

#endif  // QUANTD_CLIENT_COMMANDS_H_
