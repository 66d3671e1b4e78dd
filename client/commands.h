// quantctl's command handlers, one per command of the table in command_table.cc, grouped by the
// file that defines them. Each reads its arguments from `cli`, calls the server and prints the
// answer (the response message with --json).
#ifndef QUANTD_CLIENT_COMMANDS_H_
#define QUANTD_CLIENT_COMMANDS_H_

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
absl::Status DeleteCommand(Cli& cli);
absl::Status InspectCommand(Cli& cli);

// Semantic IDs (commands_sids.cc).
absl::Status TrainCommand(Cli& cli);
absl::Status EncodeCommand(Cli& cli);
absl::Status LookupCommand(Cli& cli);
absl::Status StatsCommand(Cli& cli);
absl::Status ExportSidsCommand(Cli& cli);

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

// Shared by the training commands (train, train-index), defined in commands_jobs.cc.
// Prints a job, one line (the message with --json).
void PrintJob(Cli& cli, const v1::Job& job);
// Prints a just-started job (--detach) or polls it to its end with a progress bar; an error
// unless it succeeded.
absl::Status FollowJob(Cli& cli, v1::Job job);

}  // namespace quantd::quantctl

#endif  // QUANTD_CLIENT_COMMANDS_H_
