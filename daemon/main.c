/* main.c: the tandem command line (SPEC §3). */
#include "daemon/cli.h"

int main(int argc, char **argv)
{
    struct cli_opts o;
    int rc = cli_parse(argc, argv, &o);

    if (rc != 0)
        return rc;
    return cli_main(&o);
}
