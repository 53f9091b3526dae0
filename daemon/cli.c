#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"

struct command {
    const char *name;
    const char *usage;
    const char *summary;
    int (*fn)(struct cli_opts *o);
    bool needs_config;
};

/* Only commands that work are listed: none prints a fake success. */
static const struct command commands[] = {
    { "run", "tandem run -c FILE", "run the daemon in the foreground",
      cmd_run, true },
    { "check", "tandem check -c FILE",
      "validate config, reach both sides, verify prerequisites", cmd_check, true },
    { "setup", "tandem setup -c FILE",
      "create publication, slot, origin and state db (idempotent)", cmd_setup, true },
    { "snapshot", "tandem snapshot -c FILE [-m MAPPING]",
      "initial load/merge of existing rows, consistent with the new slot (every mapping without -m)",
      cmd_snapshot, true },
    { "status", "tandem status -c FILE [--json]",
      "positions, lag, journal depth, conflicts, DLQ", cmd_status, true },
    { "conflicts", "tandem conflicts -c FILE list [--open] [--json] | show ID | resolve ID --take a|b|FILE.json",
      "recorded conflicts, decided or open, newest first", cmd_conflicts, true },
    { "dlq", "tandem dlq -c FILE list [--history] [--json] | show ID | retry ID | retry --all | drop ID",
      "dead-lettered changes: inspect, retry, drop", cmd_dlq, true },
    { "reconcile", "tandem reconcile -c FILE [-m MAPPING] [--json] [--limit N] [--repair]",
      "compare both sides in full; --repair fixes differences by policy",
      cmd_reconcile, true },
    { "teardown", "tandem teardown -c FILE",
      "drop slot, publication and origin", cmd_teardown, true },
    { "version", "tandem version", "print the version", cmd_version, false },
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static void print_usage(FILE *f)
{
    fprintf(f, "usage: tandem COMMAND [options]\n\ncommands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\noptions:\n"
               "  -c, --config FILE   pipeline configuration (JSON)\n"
               "  -m, --mapping NAME  limit to one mapping\n"
               "  --json              machine-readable output\n"
               "  -h, --help          help for a command\n"
               "\nexit codes: 0 ok, 1 runtime failure, 2 usage or config error,\n"
               "            3 drift found or prerequisite unmet\n");
}

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "tandem: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nrun 'tandem --help' for usage\n");
    return EXIT_USAGE;
}

/* Takes the value of an option, either "--opt=v" or "--opt v". */
static int take_value(int argc, char **argv, int *i, const char *eq,
                      const char **out)
{
    if (eq != NULL) {
        *out = eq + 1;
        return 0;
    }
    if (*i + 1 >= argc)
        return usage_error("option %s needs a value", argv[*i]);
    *out = argv[++*i];
    return 0;
}

static int parse_option(int argc, char **argv, int *i, struct cli_opts *o)
{
    const char *a = argv[*i], *eq = strchr(a, '='), *v = NULL;
    char name[64];
    size_t n = eq ? (size_t)(eq - a) : strlen(a);

    if (n >= sizeof(name))
        return usage_error("unknown option %s", a);
    memcpy(name, a, n);
    name[n] = '\0';
    if (!strcmp(name, "-h") || !strcmp(name, "--help")) o->help = true;
    else if (!strcmp(name, "--json")) o->json = true;
    else if (!strcmp(name, "--repair")) o->repair = true;
    else if (!strcmp(name, "--all")) o->all = true;
    else if (!strcmp(name, "--history")) o->history = true;
    else if (!strcmp(name, "--open")) o->open_only = true;
    else if (!strcmp(name, "-c") || !strcmp(name, "--config"))
        return take_value(argc, argv, i, eq, &o->config);
    else if (!strcmp(name, "-m") || !strcmp(name, "--mapping"))
        return take_value(argc, argv, i, eq, &o->mapping);
    else if (!strcmp(name, "--take"))
        return take_value(argc, argv, i, eq, &o->take);
    else if (!strcmp(name, "--limit")) {
        char *end;
        if (take_value(argc, argv, i, eq, &v) != 0)
            return EXIT_USAGE;
        o->limit = (int)strtol(v, &end, 10);
        if (*v == '\0' || *end != '\0' || o->limit < 1)
            return usage_error("--limit needs a positive integer, got %s", v);
    } else
        return usage_error("unknown option %s", a);
    return 0;
}

int cli_parse(int argc, char **argv, struct cli_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->limit = 100;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];

        if (a[0] == '-' && a[1] != '\0') {
            if (parse_option(argc, argv, &i, o) != 0)
                return EXIT_USAGE;
        } else if (o->command == NULL) {
            o->command = a;
        } else if (o->nargs < CLI_MAX_ARGS) {
            o->args[o->nargs++] = a;
        } else {
            return usage_error("too many arguments at %s", a);
        }
    }
    return 0;
}

int cli_main(struct cli_opts *o)
{
    const struct command *c;

    if (o->command == NULL) {
        print_usage(o->help ? stdout : stderr);
        return o->help ? EXIT_OK : EXIT_USAGE;
    }
    if (!strcmp(o->command, "help")) {
        print_usage(stdout);
        return EXIT_OK;
    }
    c = find_command(o->command);
    if (c == NULL)
        return usage_error("unknown command %s", o->command);
    if (o->help) {
        printf("usage: %s\n\n%s\n", c->usage, c->summary);
        return EXIT_OK;
    }
    if (c->needs_config && o->config == NULL)
        return usage_error("%s needs -c FILE", c->name);
    return c->fn(o);
}
