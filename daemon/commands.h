/* commands.h: one function per subcommand; each returns an exit code. */
#ifndef TANDEM_COMMANDS_H
#define TANDEM_COMMANDS_H

#include "cli.h"

int cmd_run(struct cli_opts *o);
int cmd_check(struct cli_opts *o);
int cmd_setup(struct cli_opts *o);
int cmd_status(struct cli_opts *o);
int cmd_teardown(struct cli_opts *o);
int cmd_version(struct cli_opts *o);
int cmd_conflicts(struct cli_opts *o);
int cmd_dlq(struct cli_opts *o);
int cmd_reconcile(struct cli_opts *o);
int cmd_snapshot(struct cli_opts *o);

#endif
