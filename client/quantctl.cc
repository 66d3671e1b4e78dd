// quantctl: command-line client of quantd. `quantctl --help` lists the commands,
// `quantctl COMMAND --help` explains one.
#include <cstdio>
#include <string>

#include "client/cli.h"
#include "client/commands.h"

int main(int argc, char** argv) {
  using quantd::quantctl::UsageText;
  auto args = quantd::quantctl::ParseArgs(argc, argv);
  if (!args.ok()) {
    std::fprintf(stderr, "quantctl: %s\n", std::string(args.status().message()).c_str());
    return 2;
  }
  if (args->positional.empty()) {
    std::fputs(UsageText().c_str(), args->Has("help") ? stdout : stderr);
    return args->Has("help") ? 0 : 2;
  }
  const auto* command = quantd::quantctl::FindCommand(args->positional[0]);
  if (command == nullptr) {
    std::fprintf(stderr, "quantctl: unknown command '%s'\n\n%s", args->positional[0].c_str(),
                 UsageText().c_str());
    return 2;
  }
  if (args->Has("help")) {
    std::fputs(command->help.c_str(), stdout);
    return 0;
  }
  return quantd::quantctl::RunCommand(*command, *args);
}
