/* Unit tests for daemon/status.c against a real state file in a temp dir. */
#include <errno.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/config.h"
#include "daemon/status.h"
#include "state/conflicts.h"
#include "state/dlq.h"
#include "state/journal.h"
#include "state/state.h"

struct fx {
    char dir[64];
    char path[128];
    struct state *s;
    struct config c;
    struct cfg_endpoint ep[2];
    struct cfg_pair hdr;
    struct cfg_mapping m;
};

static int setup(void **st)
{
    struct fx *f = calloc(1, sizeof(*f));
    struct err e = { 0 };

    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/tandem-status-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->path, sizeof(f->path), "%s/state.db", f->dir);
    if (state_open(&f->s, f->path, STATE_EXCLUSIVE, &e) != 0) {
        fprintf(stderr, "state_open: %s\n", e.msg);
        return -1;
    }
    /* The config as the loader would give it, with secrets in it. */
    f->ep[0].name = "app";
    f->ep[0].kind = CFG_KIND_POSTGRES;
    f->ep[0].conninfo = "host=127.0.0.1 dbname=app user=tandem";
    f->ep[0].password = "pg-secret-pw";
    f->ep[1].name = "crm";
    f->ep[1].kind = CFG_KIND_REST;
    f->ep[1].base_url = "http://127.0.0.1:8080";
    f->hdr.name = "Authorization";
    f->hdr.value = "Bearer crm-secret-token";
    f->ep[1].headers = &f->hdr;
    f->ep[1].nheaders = 1;
    f->m.name = "customers";
    f->m.a.endpoint = "app";
    f->m.a.ep = &f->ep[0];
    f->m.b.endpoint = "crm";
    f->m.b.ep = &f->ep[1];
    f->m.direction = CFG_DIR_BOTH;
    f->c.name = "crm-sync";
    f->c.state_path = f->path;
    f->c.endpoints = f->ep;
    f->c.nendpoints = 2;
    f->c.mappings = &f->m;
    f->c.nmappings = 1;
    *st = f;
    return 0;
}

static int teardown(void **st)
{
    struct fx *f = *st;
    char p[160];

    state_close(f->s);
    unlink(f->path);
    snprintf(p, sizeof(p), "%s-wal", f->path);
    unlink(p);
    snprintf(p, sizeof(p), "%s-shm", f->path);
    unlink(p);
    snprintf(p, sizeof(p), "%s.lock", f->path);
    unlink(p);
    rmdir(f->dir);
    free(f);
    return 0;
}

/* Journals one committed source transaction with n changes. */
static int64_t journal_txn(struct state *s, const char *ep, uint64_t end_lsn,
                           int n)
{
    struct err e = { 0 };
    int64_t txn = 0, seq = 0;

    assert_int_equal(state_begin(s, &e), 0);
    if (journal_txn_open(s, ep, 700, end_lsn ? end_lsn - 8 : 0,
                         1700000000000000LL, &txn, &e) != 0)
        fail_msg("journal_txn_open: %s", e.msg);
    for (int i = 0; i < n; i++) {
        char key[32];
        struct change c = { .endpoint = ep, .mapping = "customers",
                            .op = CHANGE_UPDATE, .fields = "{\"name\":\"x\"}",
                            .version_us = 1700000000000000LL };

        snprintf(key, sizeof(key), "[\"%d\"]", i);
        c.key = key;
        if (journal_append(s, txn, &c, &e) != 0)
            fail_msg("journal_append: %s", e.msg);
    }
    if (journal_txn_commit(s, txn, end_lsn, &seq, &e) != 0)
        fail_msg("journal_txn_commit: %s", e.msg);
    assert_int_equal(state_commit(s, &e), 0);
    return seq;
}

static json_t *ep_get(json_t *doc, const char *name, const char *k)
{
    return json_object_get(json_object_get(json_object_get(doc, "endpoints"),
                                           name), k);
}

static void test_empty(void **st)
{
    struct fx *f = *st;
    struct err e = { 0 };
    json_t *doc = status_build(f->s, &f->c, &e);

    if (doc == NULL)
        fail_msg("status_build: %s", e.msg);
    assert_string_equal(json_string_value(json_object_get(doc, "pipeline")), "crm-sync");
    assert_true(json_is_null(ep_get(doc, "app", "position")));
    assert_true(json_is_null(ep_get(doc, "app", "last_journaled_lsn")));
    assert_string_equal(json_string_value(ep_get(doc, "app", "kind")), "postgres");
    assert_string_equal(json_string_value(ep_get(doc, "crm", "kind")), "rest");
    assert_int_equal(json_integer_value(ep_get(doc, "app", "journaled_txns")), 0);
    assert_int_equal(json_integer_value(ep_get(doc, "crm", "pending_txns")), 0);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(doc, "journal"),
                                                        "depth_txns")), 0);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(doc, "dlq"),
                                                        "depth")), 0);
    assert_int_equal(json_object_size(json_object_get(doc, "parked")), 0);
    json_decref(doc);

    assert_null(status_build(NULL, &f->c, &e));
    assert_int_equal(e.code, -EINVAL);
}

static void test_full(void **st)
{
    struct fx *f = *st;
    struct err e = { 0 };
    struct state *ro = NULL;
    int64_t s1, s2, s3, s4;
    json_t *doc;
    char *text;

    s1 = journal_txn(f->s, "app", 0x16B3748, 3);   /* app -> crm */
    s2 = journal_txn(f->s, "crm", 0, 2);           /* crm -> app */
    s3 = journal_txn(f->s, "app", 0x1000016B3800ULL, 4);
    s4 = journal_txn(f->s, "app", 0x1000016B3900ULL, 1);
    assert_true(s1 < s2 && s2 < s3 && s3 < s4);
    assert_int_equal(state_position_set(f->s, "app", "1000/16B3900", &e), 0);
    assert_int_equal(state_position_set(f->s, "crm", "{\"updated_at\":\"2024-01-01T00:00:00.123456Z\",\"id\":\"cust-000000007\"}", &e), 0);
    assert_int_equal(state_applied_set(f->s, "crm", s1, &e), 0);   /* crm has s3, s4 to go */
    assert_int_equal(state_applied_set(f->s, "app", s2, &e), 0);   /* app is caught up */

    struct conflict c1 = { .mapping = "customers", .key = "[\"1\"]",
                           .strategy = "last_write_wins", .result = "{}",
                           .rule = "a newer" };
    struct conflict c2 = { .mapping = "customers", .key = "[\"2\"]",
                           .strategy = "manual", .open = true };
    assert_int_equal(conflict_record(f->s, &c1, &e), 0);
    assert_int_equal(conflict_record(f->s, &c2, &e), 0);
    struct dlq_entry d = { .mapping = "customers", .key = "[\"3\"]",
                           .source = "app", .target = "crm",
                           .change = "{}", .error = "422 unprocessable" };
    if (dlq_add(f->s, &d, &e) != 0)
        fail_msg("dlq_add: %s", e.msg);
    assert_int_equal(parked_park(f->s, "customers", "[\"3\"]", "dlq", 0, &e), 0);
    assert_int_equal(parked_park(f->s, "customers", "[\"4\"]", "dlq", 0, &e), 0);
    assert_int_equal(parked_park(f->s, "customers", "[\"5\"]", "dependency", 0, &e), 0);

    /* Read through a second, read-only handle, as `tandem status` does
     * while the daemon holds the state. */
    if (state_open(&ro, f->path, STATE_READONLY, &e) != 0)
        fail_msg("state_open readonly: %s", e.msg);
    doc = status_build(ro, &f->c, &e);
    if (doc == NULL)
        fail_msg("status_build: %s", e.msg);

    assert_string_equal(json_string_value(ep_get(doc, "app", "position")), "1000/16B3900");
    assert_string_equal(json_string_value(ep_get(doc, "app", "last_journaled_lsn")), "1000/16B3900");
    assert_int_equal(json_integer_value(ep_get(doc, "app", "journaled_txns")), 3);
    assert_int_equal(json_integer_value(ep_get(doc, "app", "applied_commit_seq")), s2);
    assert_int_equal(json_integer_value(ep_get(doc, "app", "pending_txns")), 0);
    assert_true(json_is_true(ep_get(doc, "app", "target")));

    assert_true(json_is_null(ep_get(doc, "crm", "last_journaled_lsn")));
    assert_int_equal(json_integer_value(ep_get(doc, "crm", "journaled_txns")), 1);
    assert_int_equal(json_integer_value(ep_get(doc, "crm", "applied_commit_seq")), s1);
    assert_int_equal(json_integer_value(ep_get(doc, "crm", "pending_txns")), 2);
    assert_int_equal(json_integer_value(ep_get(doc, "crm", "pending_changes")), 5);

    json_t *j = json_object_get(doc, "journal");
    assert_int_equal(json_integer_value(json_object_get(j, "last_commit_seq")), s4);
    assert_int_equal(json_integer_value(json_object_get(j, "depth_txns")), 2);
    assert_int_equal(json_integer_value(json_object_get(j, "depth_changes")), 5);
    json_t *cf = json_object_get(doc, "conflicts");
    assert_int_equal(json_integer_value(json_object_get(cf, "total")), 2);
    assert_int_equal(json_integer_value(json_object_get(cf, "open")), 1);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(doc, "dlq"), "depth")), 1);
    json_t *pk = json_object_get(doc, "parked");
    assert_int_equal(json_integer_value(json_object_get(pk, "dlq")), 2);
    assert_int_equal(json_integer_value(json_object_get(pk, "dependency")), 1);

    /* No secret, conninfo, URL or header anywhere. */
    text = json_dumps(doc, JSON_COMPACT);
    assert_non_null(text);
    assert_null(strstr(text, "pg-secret-pw"));
    assert_null(strstr(text, "crm-secret-token"));
    assert_null(strstr(text, "dbname"));
    assert_null(strstr(text, "8080"));
    assert_null(strstr(text, "Authorization"));
    free(text);

    text = status_json_text(ro, &f->c, &e);
    assert_non_null(text);
    assert_non_null(strstr(text, "\"pipeline\":\"crm-sync\""));
    free(text);

    /* The human table. */
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);

    assert_non_null(out);
    assert_int_equal(status_print_text(out, doc), 0);
    fclose(out);
    if (getenv("STATUS_SHOW")) fputs(buf, stderr);
    assert_non_null(strstr(buf, "pipeline: crm-sync\n"));
    assert_non_null(strstr(buf, "ENDPOINT"));
    assert_non_null(strstr(buf, "PENDING CHANGES"));
    assert_non_null(strstr(buf, "app "));
    assert_non_null(strstr(buf, "1000/16B3900"));
    assert_non_null(strstr(buf, "...")); /* the long REST cursor is cut */
    assert_non_null(strstr(buf, "conflicts: 2 total, 1 open\n"));
    assert_non_null(strstr(buf, "dlq:       1 open\n"));
    assert_non_null(strstr(buf, "dependency 1"));
    assert_non_null(strstr(buf, "dlq 2"));
    free(buf);

    json_decref(doc);
    state_close(ro);
}

static void test_one_way_and_bad_doc(void **st)
{
    struct fx *f = *st;
    struct err e = { 0 };
    json_t *doc, *bad;
    FILE *devnull = fopen("/dev/null", "w");

    journal_txn(f->s, "app", 0x100, 2);
    f->m.direction = CFG_DIR_A_TO_B;   /* app is no target */
    doc = status_build(f->s, &f->c, &e);
    assert_non_null(doc);
    assert_true(json_is_false(ep_get(doc, "app", "target")));
    assert_int_equal(json_integer_value(ep_get(doc, "app", "pending_txns")), 0);
    assert_int_equal(json_integer_value(ep_get(doc, "crm", "pending_txns")), 1);
    json_decref(doc);

    assert_non_null(devnull);
    bad = json_pack("{s:s}", "pipeline", "x");
    assert_int_equal(status_print_text(devnull, bad), -EINVAL);
    assert_int_equal(status_print_text(devnull, NULL), -EINVAL);
    json_decref(bad);
    fclose(devnull);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_way_and_bad_doc, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
