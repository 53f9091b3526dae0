/* fuzz_config.c: libFuzzer target for the pipeline config loader
 * (daemon/config.c, config_load_string).
 *
 * The input is the config text (cut at its first NUL byte, as a C string
 * would be). A rejected config must come back as -EINVAL or -ENOMEM with
 * no config, e.code set to the return value and a non-empty message that
 * fits its buffer; an accepted one must be internally consistent (names
 * found by the lookups, every mapping side resolved to its endpoint, field
 * map one-to-one both ways) and is then freed, so ASan reports any leak on
 * either path.
 *
 * ${VAR} reads the fuzzer's own environment (none is set here). ${file:…}
 * reads real files of at most 1 MiB; stdin is /dev/null so that
 * "${file:/dev/stdin}" cannot block. The loader registers secrets with the
 * logger, which keeps at most 64 for the process (reachable, not leaked). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/config.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    CHECK(freopen("/dev/null", "r", stdin) != NULL);
    return 0;
}

static void check_side(const struct config *c, const struct cfg_side *s)
{
    CHECK(s->ep != NULL && s->ep == config_endpoint(c, s->endpoint));
    CHECK(s->nkey >= 1 && s->key != NULL);
    if (s->ep->kind == CFG_KIND_POSTGRES)
        CHECK(s->schema != NULL && s->relname != NULL && s->schema[0] &&
              s->relname[0]);
    else
        CHECK(s->resource != NULL && s->resource[0] == '/');
}

static void check_config(const struct config *c)
{
    CHECK(c->name != NULL && c->state_path != NULL && c->http_listen != NULL);
    CHECK(c->nendpoints >= 1 && c->nmappings >= 1);
    for (size_t i = 0; i < c->nendpoints; i++)
        CHECK(config_endpoint(c, c->endpoints[i].name) == &c->endpoints[i]);
    for (size_t i = 0; i < c->nmappings; i++) {
        const struct cfg_mapping *m = &c->mappings[i];

        CHECK(config_mapping(c, m->name) == m);
        check_side(c, &m->a);
        check_side(c, &m->b);
        CHECK(strcmp(config_strategy_name(m->strategy), "unknown") != 0);
        for (size_t k = 0; k < m->nfields; k++) {
            const struct cfg_pair *f = &m->fields[k];

            CHECK(strcmp(config_field_a_to_b(m, f->name), f->value) == 0);
            CHECK(strcmp(config_field_b_to_a(m, f->value), f->name) == 0);
        }
        for (size_t k = 0; k < m->ndepends_on; k++)
            CHECK(m->depends_on[k].parent != NULL);
    }
    for (size_t i = 0; i < c->reconcile.nmappings; i++)
        CHECK(config_mapping(c, c->reconcile.mappings[i]) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config *c = (struct config *)1;
    struct err e;
    char *text = malloc(size + 1);
    int rc;

    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    memset(&e, 0x55, sizeof(e));        /* the loader must set all it uses */
    rc = config_load_string(&c, text, &e);
    if (rc == 0) {
        CHECK(c != NULL);
        check_config(c);
        config_free(c);
    } else {
        CHECK(rc == -EINVAL || rc == -ENOMEM);
        CHECK(c == NULL && e.code == rc);
        CHECK(e.msg[0] != '\0' && memchr(e.msg, '\0', sizeof(e.msg)) != NULL);
    }
    free(text);
    return 0;
}
