/* cli.h: command-line parsing and the subcommands of SPEC §3. */
#ifndef TANDEM_CLI_H
#define TANDEM_CLI_H

#include <stdbool.h>

/* Exit codes (SPEC §3). */
enum {
    EXIT_OK = 0,
    EXIT_RUNTIME = 1,
    EXIT_USAGE = 2,
    EXIT_DRIFT = 3      /* reconcile drift, or check found an unmet prerequisite */
};

#define CLI_MAX_ARGS 8

/* Options may stand anywhere after the command. */
struct cli_opts {
    const char *command;
    const char *config;         /* -c FILE */
    const char *mapping;        /* -m MAPPING */
    const char *take;           /* --take a|b|FILE.json */
    bool json, help, repair, all, history, open_only;
    int limit;                  /* --limit N, default 100 */
    const char *args[CLI_MAX_ARGS]; /* positional words after the command */
    int nargs;
};

/* Parses argv; returns 0, or EXIT_USAGE after printing the problem. */
int cli_parse(int argc, char **argv, struct cli_opts *o);

/* Runs the parsed command; returns the process exit code. */
int cli_main(struct cli_opts *o);

#endif
