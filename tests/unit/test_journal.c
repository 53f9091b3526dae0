/* test_journal.c: journal append/commit/scan/recover/prune, durability
 * across a killed process, and the append rate. */
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "resolver/canon.h"
#include "state/conflicts.h"
#include "state/journal.h"
#include "state/shadow.h"
#include "state/state.h"

struct fx {
    char dir[256];
    char path[300];
    int64_t now;            /* fake clock, µs */
    struct state *s;
};

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb; (void)flag; (void)f;
    return remove(p);
}

static int64_t fake_clock(void *arg)
{
    return ((struct fx *)arg)->now;
}

static void fx_open(struct fx *fx)
{
    struct err e = {0};

    assert_int_equal(state_open(&fx->s, fx->path, STATE_EXCLUSIVE, &e), 0);
    state_set_clock(fx->s, fake_clock, fx);
}

static void fx_reopen(struct fx *fx)
{
    state_close(fx->s);
    fx->s = NULL;
    fx_open(fx);
}

static int setup(void **ctx)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    const char *t = getenv("TMPDIR");

    assert_non_null(fx);
    snprintf(fx->dir, sizeof(fx->dir), "%s/tandem-journal-XXXXXX",
             t != NULL && t[0] != '\0' ? t : "/tmp");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->path, sizeof(fx->path), "%s/state.db", fx->dir);
    fx->now = INT64_C(1700000000000000);
    fx_open(fx);
    *ctx = fx;
    return 0;
}

static int teardown(void **ctx)
{
    struct fx *fx = *ctx;

    state_close(fx->s);
    nftw(fx->dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return 0;
}

/* Journals one source transaction of n changes; returns its commit_seq. */
static int64_t journal_one(struct state *s, const char *endpoint, int64_t xid,
                           int n, int64_t *txn_out)
{
    struct err e = {0};
    int64_t txn = 0, seq = -1;
    char key[32], fields[64];

    assert_int_equal(state_begin(s, &e), 0);
    assert_int_equal(journal_txn_open(s, endpoint, xid, (uint64_t)xid * 100,
                                      xid * 1000, &txn, &e), 0);
    for (int i = 0; i < n; i++) {
        struct change c = {
            .mapping = "customers", .op = CHANGE_UPDATE, .key = key,
            .fields = fields, .version_us = xid * 1000 + i
        };

        snprintf(key, sizeof(key), "[\"%d\"]", i);
        snprintf(fields, sizeof(fields), "{\"name\":\"n%" PRId64 "-%d\"}", xid, i);
        assert_int_equal(journal_append(s, txn, &c, &e), 0);
    }
    assert_int_equal(journal_txn_commit(s, txn, (uint64_t)xid * 100 + 8, &seq, &e), 0);
    assert_int_equal(state_commit(s, &e), 0);
    if (txn_out != NULL)
        *txn_out = txn;
    return seq;
}

struct seen {
    int n;
    int64_t txn[64];
    int64_t seq[64];
    char endpoint[64][16];
    int stop_at;            /* return 7 at this call (1-based), 0 = never */
};

static int collect_txn(const struct journal_txn_info *info, void *arg)
{
    struct seen *sn = arg;

    if (sn->n < 64) {
        sn->txn[sn->n] = info->txn;
        sn->seq[sn->n] = info->commit_seq;
        snprintf(sn->endpoint[sn->n], sizeof(sn->endpoint[0]), "%s", info->endpoint);
    }
    sn->n++;
    return sn->stop_at == sn->n ? 7 : 0;
}

struct changes {
    int n;
    struct change c[8];
    char key[8][32], fields[8][64];
    char old_key[8][32];
};

static int collect_change(const struct change *c, void *arg)
{
    struct changes *cs = arg;

    if (cs->n < 8) {
        cs->c[cs->n] = *c;
        snprintf(cs->key[cs->n], 32, "%s", c->key);
        snprintf(cs->fields[cs->n], 64, "%s", c->fields ? c->fields : "(null)");
        snprintf(cs->old_key[cs->n], 32, "%s", c->old_key ? c->old_key : "(null)");
        cs->c[cs->n].key = cs->c[cs->n].fields = cs->c[cs->n].old_key = NULL;
        cs->c[cs->n].endpoint = cs->c[cs->n].mapping = cs->c[cs->n].unchanged = NULL;
        if (c->unchanged != NULL)
            cs->c[cs->n].unchanged = "set";
        if (strcmp(c->endpoint, "app") == 0)
            cs->c[cs->n].endpoint = "app";
    }
    cs->n++;
    return 0;
}

static void test_append_commit_scan(void **ctx)
{
    struct fx *fx = *ctx;
    struct state *s = fx->s;
    struct err e = {0};
    struct seen sn = {0};
    struct changes cs = {0};
    int64_t txn = 0, seq = -1;
    struct change c1 = { .mapping = "customers", .op = CHANGE_INSERT,
                         .key = "[\"1\"]", .fields = "{\"id\":\"1\",\"name\":\"A\"}",
                         .version_us = 11 };
    struct change c2 = { .mapping = "customers", .op = CHANGE_UPDATE,
                         .key = "[\"2\"]", .old_key = "[\"1\"]",
                         .fields = "{\"id\":\"2\"}", .unchanged = "[\"notes\"]",
                         .version_us = 12 };
    struct change c3 = { .mapping = "customers", .op = CHANGE_DELETE,
                         .key = "[\"2\"]", .version_us = 13 };

    assert_int_equal(state_begin(s, &e), 0);
    assert_int_equal(journal_txn_open(s, "app", 700, 0x16B3700, 5000, &txn, &e), 0);
    assert_true(txn > 0);
    assert_int_equal(journal_append(s, txn, &c1, &e), 0);
    assert_int_equal(journal_append(s, txn, &c2, &e), 0);
    assert_int_equal(journal_append(s, txn, &c3, &e), 0);
    assert_true(c1.seq > 0 && c2.seq > c1.seq && c3.seq > c2.seq);
    assert_int_equal(c1.txn, txn);
    /* Not committed: not visible to appliers. */
    assert_int_equal(journal_scan_txns(s, 0, 0, NULL, collect_txn, &sn, &e), 0);
    assert_int_equal(sn.n, 0);
    assert_int_equal(journal_txn_commit(s, txn, 0x16B3748, &seq, &e), 0);
    assert_int_equal(seq, 1);
    assert_int_equal(state_commit(s, &e), 0);

    assert_int_equal(journal_scan_txns(s, 0, 0, NULL, collect_txn, &sn, &e), 0);
    assert_int_equal(sn.n, 1);
    assert_int_equal(sn.txn[0], txn);
    assert_int_equal(sn.seq[0], 1);
    assert_string_equal(sn.endpoint[0], "app");

    assert_int_equal(journal_scan_changes(s, txn, collect_change, &cs, &e), 0);
    assert_int_equal(cs.n, 3);
    assert_int_equal(cs.c[0].op, CHANGE_INSERT);
    assert_int_equal(cs.c[1].op, CHANGE_UPDATE);
    assert_int_equal(cs.c[2].op, CHANGE_DELETE);
    assert_int_equal(cs.c[0].seq, c1.seq);
    assert_int_equal(cs.c[2].seq, c3.seq);
    assert_int_equal(cs.c[1].txn, txn);
    assert_string_equal(cs.key[0], "[\"1\"]");
    assert_string_equal(cs.fields[0], "{\"id\":\"1\",\"name\":\"A\"}");
    assert_string_equal(cs.old_key[1], "[\"1\"]");
    assert_string_equal(cs.old_key[0], "(null)");
    assert_string_equal(cs.fields[2], "(null)");
    assert_null(cs.c[0].unchanged);
    assert_non_null(cs.c[1].unchanged);
    assert_non_null(cs.c[0].endpoint);
    assert_int_equal(cs.c[1].version_us, 12);

    /* Info fields round-trip, LSNs included. */
    {
        uint64_t lsn = 0;
        int64_t n = 0;

        assert_int_equal(journal_endpoint_stats(s, "app", &lsn, &n, &e), 0);
        assert_int_equal(lsn, 0x16B3748);
        assert_int_equal(n, 1);
        assert_int_equal(journal_endpoint_stats(s, "crm", &lsn, &n, &e), 0);
        assert_int_equal(lsn, 0);
        assert_int_equal(n, 0);
    }
}

static int check_info(const struct journal_txn_info *info, void *arg)
{
    (void)arg;
    assert_int_equal(info->source_xid, 700);
    assert_int_equal(info->commit_lsn, UINT64_C(0xFFFF00000016B370));
    assert_int_equal(info->end_lsn, UINT64_C(0xFFFF00000016B748));
    assert_int_equal(info->commit_ts_us, 5000);
    assert_int_equal(info->nchanges, 1);
    return 0;
}

static void test_info_fields(void **ctx)
{
    struct fx *fx = *ctx;
    struct state *s = fx->s;
    struct err e = {0};
    int64_t txn = 0, seq = 0;
    struct change c = { .mapping = "m", .op = CHANGE_INSERT, .key = "[\"1\"]" };

    assert_int_equal(state_begin(s, &e), 0);
    /* LSNs keep all 64 bits. */
    assert_int_equal(journal_txn_open(s, "app", 700, UINT64_C(0xFFFF00000016B370),
                                      5000, &txn, &e), 0);
    assert_int_equal(journal_append(s, txn, &c, &e), 0);
    assert_int_equal(journal_txn_commit(s, txn, UINT64_C(0xFFFF00000016B748),
                                        &seq, &e), 0);
    assert_int_equal(state_commit(s, &e), 0);
    assert_int_equal(journal_scan_txns(s, 0, 0, NULL, check_info, NULL, &e), 0);
}

static void test_misuse(void **ctx)
{
    struct fx *fx = *ctx;
    struct state *s = fx->s;
    struct err e = {0};
    int64_t txn = 0, seq = 0;
    struct change c = { .mapping = "m", .op = CHANGE_INSERT, .key = "[\"1\"]" };
    struct change bad = { .mapping = "m", .op = (enum change_op)'X', .key = "k" };

    assert_int_equal(journal_txn_open(s, "app", 1, 0, 0, &txn, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "state_begin"));
    assert_int_equal(state_begin(s, &e), 0);
    assert_int_equal(journal_append(s, 12345, &c, &e), -ENOENT);
    assert_int_equal(journal_txn_open(s, "app", 1, 0, 0, &txn, &e), 0);
    assert_int_equal(journal_append(s, txn, &bad, &e), -EINVAL);
    bad.op = CHANGE_INSERT;
    bad.key = NULL;
    assert_int_equal(journal_append(s, txn, &bad, &e), -EINVAL);
    assert_int_equal(journal_append(s, txn, &c, &e), 0);
    assert_int_equal(journal_txn_commit(s, txn, 10, &seq, &e), 0);
    assert_int_equal(journal_txn_commit(s, txn, 10, &seq, &e), -EALREADY);
    assert_int_equal(journal_txn_commit(s, 999, 10, &seq, &e), -ENOENT);
    /* A failed call inside a batch leaves the batch usable. */
    assert_true(state_in_txn(s));
    assert_int_equal(state_commit(s, &e), 0);
    assert_int_equal(journal_last_commit_seq(s, &seq, &e), 0);
    assert_int_equal(seq, 1);
}

static void test_commit_seq_order(void **ctx)
{
    struct fx *fx = *ctx;
    struct state *s = fx->s;
    struct err e = {0};
    struct seen sn = {0};
    int64_t t1 = 0, t2 = 0, seq1 = 0, seq2 = 0, last = 0;
    struct change c = { .mapping = "m", .op = CHANGE_INSERT, .key = "[\"1\"]" };

    /* Two sources interleave; commit order, not open order, decides. */
    assert_int_equal(state_begin(s, &e), 0);
    assert_int_equal(journal_txn_open(s, "app", 1, 0, 0, &t1, &e), 0);
    assert_int_equal(journal_txn_open(s, "crm", 0, 0, 0, &t2, &e), 0);
    assert_int_equal(journal_append(s, t1, &c, &e), 0);
    assert_int_equal(journal_append(s, t2, &c, &e), 0);
    assert_int_equal(journal_append(s, t1, &c, &e), 0);
    assert_int_equal(journal_txn_commit(s, t2, 0, &seq2, &e), 0);
    assert_int_equal(state_commit(s, &e), 0);
    assert_int_equal(state_begin(s, &e), 0);
    assert_int_equal(journal_append(s, t1, &c, &e), 0);   /* spans commits */
    assert_int_equal(journal_txn_commit(s, t1, 0, &seq1, &e), 0);
    assert_int_equal(state_commit(s, &e), 0);
    assert_int_equal(seq2, 1);
    assert_int_equal(seq1, 2);
    for (int i = 0; i < 5; i++)
        assert_int_equal(journal_one(s, i % 2 ? "app" : "crm", 10 + i, 1, NULL), 3 + i);
    assert_int_equal(journal_last_commit_seq(s, &last, &e), 0);
    assert_int_equal(last, 7);
    assert_int_equal(journal_scan_txns(s, 0, 0, NULL, collect_txn, &sn, &e), 0);
    assert_int_equal(sn.n, 7);
    assert_int_equal(sn.txn[0], t2);
    assert_int_equal(sn.txn[1], t1);
    for (int i = 0; i < 7; i++)
        assert_int_equal(sn.seq[i], i + 1);
    /* After, max. */
    memset(&sn, 0, sizeof(sn));
    assert_int_equal(journal_scan_txns(s, 3, 2, NULL, collect_txn, &sn, &e), 0);
    assert_int_equal(sn.n, 2);
    assert_int_equal(sn.seq[0], 4);
    assert_int_equal(sn.seq[1], 5);
    /* The counter survives a reopen. */
    fx_reopen(fx);
    assert_int_equal(journal_one(fx->s, "app", 99, 1, NULL), 8);
}

static void test_scan_skip_and_stop(void **ctx)
{
    struct fx *fx = *ctx;
    struct state *s = fx->s;
    struct err e = {0};
    struct seen sn = {0};

    for (int i = 0; i < 6; i++)
        journal_one(s, i % 2 ? "crm" : "app", i + 1, 2, NULL);
    assert_int_equal(journal_scan_txns(s, 0, 0, "app", collect_txn, &sn, &e), 0);
    assert_int_equal(sn.n, 3);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(sn.endpoint[i], "crm");
        assert_int_equal(sn.seq[i], 2 * i + 2);
    }
    memset(&sn, 0, sizeof(sn));
    assert_int_equal(journal_scan_txns(s, 0, 2, "crm", collect_txn, &sn, &e), 0);
    assert_int_equal(sn.n, 2);
    assert_int_equal(sn.seq[0], 1);
    assert_int_equal(sn.seq[1], 3);
    memset(&sn, 0, sizeof(sn));
    assert_int_equal(journal_scan_txns(s, 0, 0, "nobody", collect_txn, &sn, &e), 0);
    assert_int_equal(sn.n, 6);
    memset(&sn, 0, sizeof(sn));
    sn.stop_at = 2;
    assert_int_equal(journal_scan_txns(s, 0, 0, NULL, collect_txn, &sn, &e), 7);
    assert_int_equal(sn.n, 2);
}

struct nest {
    struct state *s;
    int outer, inner, changes;
};

static int count_change(const struct change *c, void *arg)
{
    (void)c;
    ((struct nest *)arg)->changes++;
    return 0;
}

static int inner_txn(const struct journal_txn_info *info, void *arg)
{
    (void)info;
    ((struct nest *)arg)->inner++;
    return 0;
}

static int outer_txn(const struct journal_txn_info *info, void *arg)
{
    struct nest *n = arg;
    struct err e = {0};

    n->outer++;
    /* Re-entering the same scan from a callback works. */
    assert_int_equal(journal_scan_txns(n->s, 0, 0, NULL, inner_txn, n, &e), 0);
    assert_int_equal(journal_scan_changes(n->s, info->txn, count_change, n, &e), 0);
    return 0;
}

static void test_scan_reentrant(void **ctx)
{
    struct fx *fx = *ctx;
    struct err e = {0};
    struct nest n = { .s = fx->s };

    for (int i = 0; i < 3; i++)
        journal_one(fx->s, "app", i + 1, 4, NULL);
    assert_int_equal(journal_scan_txns(fx->s, 0, 0, NULL, outer_txn, &n, &e), 0);
    assert_int_equal(n.outer, 3);
    assert_int_equal(n.inner, 9);
    assert_int_equal(n.changes, 12);
}

static int count_only(const struct change *c, void *arg)
{
    int64_t *last = arg;

    assert_true(c->seq > *last);
    *last = c->seq;
    return 0;
}

static int stop_neg(const struct change *c, void *arg)
{
    (void)c;
    (void)arg;
    return -EPIPE;
}

static void test_scan_changes_from(void **ctx)
{
    struct fx *fx = *ctx;
    struct state *s = fx->s;
    struct err e = {0};
    struct changes cs = {0};
    int64_t txn = 0, seq = 0, after = 0, total = 0;
    int n;
    struct change tr = { .mapping = "m", .op = CHANGE_TRUNCATE, .key = "[]",
                         .fields = "{}" };

    journal_one(s, "app", 1, 25, &txn);
    /* Slices of 10: 10, 10, 5, then 0. */
    for (int i = 0; i < 4; i++) {
        n = journal_scan_changes_from(s, txn, after, 10, count_only, &after, &e);
        assert_true(n >= 0);
        assert_int_equal(n, i < 2 ? 10 : i == 2 ? 5 : 0);
        total += n;
    }
    assert_int_equal(total, 25);
    assert_int_equal(journal_scan_changes_from(s, txn, 0, 0, count_only,
                                               &(int64_t){0}, &e), 25);
    assert_int_equal(journal_scan_changes_from(s, txn, 0, 10, stop_neg, NULL, &e),
                     -EPIPE);
    /* A TRUNCATE is journaled like any change. */
    assert_int_equal(state_begin(s, &e), 0);
    assert_int_equal(journal_txn_open(s, "app", 2, 0, 0, &txn, &e), 0);
    assert_int_equal(journal_append(s, txn, &tr, &e), 0);
    assert_int_equal(journal_txn_commit(s, txn, 0, &seq, &e), 0);
    assert_int_equal(state_commit(s, &e), 0);
    assert_int_equal(journal_scan_changes(s, txn, collect_change, &cs, &e), 0);
    assert_int_equal(cs.n, 1);
    assert_int_equal(cs.c[0].op, CHANGE_TRUNCATE);
    assert_string_equal(cs.key[0], "[]");
}

static void test_empty_txn_deleted(void **ctx)
{
    struct fx *fx = *ctx;
    struct state *s = fx->s;
    struct err e = {0};
    int64_t txn = 0, seq = -1, t = -1, c = -1;

    assert_int_equal(state_begin(s, &e), 0);
    assert_int_equal(journal_txn_open(s, "app", 5, 0, 0, &txn, &e), 0);
    assert_int_equal(journal_txn_commit(s, txn, 42, &seq, &e), 0);
    assert_int_equal(seq, 0);
    assert_int_equal(state_commit(s, &e), 0);
    assert_int_equal(journal_txn_commit(s, txn, 42, &seq, &e), -ENOENT);
    assert_int_equal(journal_depth(s, 0, &t, &c, &e), 0);
    assert_int_equal(t, 0);
    assert_int_equal(c, 0);
    assert_int_equal(journal_last_commit_seq(s, &seq, &e), 0);
    assert_int_equal(seq, 0);
    /* The next real transaction still gets 1. */
    assert_int_equal(journal_one(s, "app", 6, 1, NULL), 1);
}

static void test_depth(void **ctx)
{
    struct fx *fx = *ctx;
    struct state *s = fx->s;
    struct err e = {0};
    int64_t t = -1, c = -1, txn = 0;
    struct change ch = { .mapping = "m", .op = CHANGE_INSERT, .key = "[\"1\"]" };

    journal_one(s, "app", 1, 3, NULL);
    journal_one(s, "crm", 2, 5, NULL);
    journal_one(s, "app", 3, 1, NULL);
    /* Uncommitted changes are not counted. */
    assert_int_equal(state_begin(s, &e), 0);
    assert_int_equal(journal_txn_open(s, "app", 4, 0, 0, &txn, &e), 0);
    assert_int_equal(journal_append(s, txn, &ch, &e), 0);
    assert_int_equal(state_commit(s, &e), 0);
    assert_int_equal(journal_depth(s, 0, &t, &c, &e), 0);
    assert_int_equal(t, 3);
    assert_int_equal(c, 9);
    assert_int_equal(journal_depth(s, 1, &t, &c, &e), 0);
    assert_int_equal(t, 2);
    assert_int_equal(c, 6);
    assert_int_equal(journal_depth(s, 3, &t, &c, &e), 0);
    assert_int_equal(t, 0);
    assert_int_equal(c, 0);
    assert_int_equal(journal_depth(s, 0, NULL, &c, &e), 0);
}

static void test_recover(void **ctx)
{
    struct fx *fx = *ctx;
    struct err e = {0};
    struct seen sn = {0};
    struct changes cs = {0};
    int64_t txn = 0, kept = 0, t = 0, c = 0, seq = 0;
    struct change ch = { .mapping = "m", .op = CHANGE_INSERT, .key = "[\"1\"]" };

    assert_int_equal(journal_one(fx->s, "app", 1, 2, &kept), 1);
    /* A large transaction spilled over two state commits, then a crash
     * before its source commit arrived. */
    assert_int_equal(state_begin(fx->s, &e), 0);
    assert_int_equal(journal_txn_open(fx->s, "app", 2, 0, 0, &txn, &e), 0);
    assert_int_equal(journal_append(fx->s, txn, &ch, &e), 0);
    assert_int_equal(state_commit(fx->s, &e), 0);
    assert_int_equal(state_begin(fx->s, &e), 0);
    assert_int_equal(journal_append(fx->s, txn, &ch, &e), 0);
    assert_int_equal(state_commit(fx->s, &e), 0);
    fx_reopen(fx);
    assert_int_equal(journal_recover(fx->s, &e), 1);
    assert_int_equal(journal_recover(fx->s, &e), 0);
    assert_int_equal(journal_scan_changes(fx->s, txn, collect_change, &cs, &e), 0);
    assert_int_equal(cs.n, 0);
    assert_int_equal(journal_scan_txns(fx->s, 0, 0, NULL, collect_txn, &sn, &e), 0);
    assert_int_equal(sn.n, 1);
    assert_int_equal(sn.txn[0], kept);
    assert_int_equal(journal_depth(fx->s, 0, &t, &c, &e), 0);
    assert_int_equal(t, 1);
    assert_int_equal(c, 2);
    assert_int_equal(journal_txn_commit(fx->s, txn, 0, &seq, &e), -ENOENT);
    assert_int_equal(journal_one(fx->s, "app", 2, 2, NULL), 2);
}

static void test_prune(void **ctx)
{
    struct fx *fx = *ctx;
    struct err e = {0};
    struct seen sn = {0};
    struct changes cs = {0};
    int64_t txn1 = 0, last = 0, t = 0, c = 0;

    journal_one(fx->s, "app", 1, 3, &txn1);
    journal_one(fx->s, "crm", 2, 3, NULL);
    fx->now += INT64_C(100) * 1000000;
    journal_one(fx->s, "app", 3, 3, NULL);
    fx->now += INT64_C(10) * 1000000;
    /* Txn 1 and 2 are 110 s old, txn 3 is 10 s old. */
    assert_int_equal(journal_prune(fx->s, 3, 200, &e), 0);
    assert_int_equal(journal_depth(fx->s, 0, &t, &c, &e), 0);
    assert_int_equal(t, 3);
    assert_int_equal(journal_prune(fx->s, 1, 60, &e), 0);     /* only seq 1 */
    assert_int_equal(journal_depth(fx->s, 0, &t, &c, &e), 0);
    assert_int_equal(t, 2);
    assert_int_equal(c, 6);
    assert_int_equal(journal_scan_changes(fx->s, txn1, collect_change, &cs, &e), 0);
    assert_int_equal(cs.n, 0);
    assert_int_equal(journal_prune(fx->s, 3, 60, &e), 0);     /* seq 2, not 3 */
    assert_int_equal(journal_scan_txns(fx->s, 0, 0, NULL, collect_txn, &sn, &e), 0);
    assert_int_equal(sn.n, 1);
    assert_int_equal(sn.seq[0], 3);
    fx->now += INT64_C(60) * 1000000;
    assert_int_equal(journal_prune(fx->s, 3, 60, &e), 0);     /* all */
    assert_int_equal(journal_depth(fx->s, 0, &t, &c, &e), 0);
    assert_int_equal(t, 0);
    assert_int_equal(c, 0);
    /* Sequences are never given out twice, even after pruning the newest. */
    assert_int_equal(journal_last_commit_seq(fx->s, &last, &e), 0);
    assert_int_equal(last, 3);
    assert_int_equal(journal_one(fx->s, "app", 4, 1, NULL), 4);
    fx->now += INT64_C(60) * 1000000;
    assert_int_equal(journal_prune(fx->s, 4, 0, &e), 0);
    fx_reopen(fx);
    assert_int_equal(journal_last_commit_seq(fx->s, &last, &e), 0);
    assert_int_equal(last, 4);
    assert_int_equal(journal_one(fx->s, "app", 5, 1, &txn1), 5);
    /* So are change sequences: ten were given out and pruned before. */
    cs.n = 0;
    assert_int_equal(journal_scan_changes(fx->s, txn1, collect_change, &cs, &e), 0);
    assert_int_equal(cs.n, 1);
    assert_int_equal(cs.c[0].seq, 11);
    assert_int_equal(journal_prune(fx->s, 5, -1, &e), -EINVAL);
}

/* Transactions a reconnect cut short go; the source's current one, other
 * endpoints' and committed ones stay, with their changes. */
static void test_drop_open(void **ctx)
{
    struct fx *fx = *ctx;
    struct err e = {0};
    struct change c = { .mapping = "m", .op = CHANGE_INSERT, .key = "[\"1\"]", .fields = "{}" };
    struct changes cs = {0};
    int64_t cut = 0, cur = 0, other = 0, done = 0, t = 0, n = 0;

    journal_one(fx->s, "app", 1, 2, &done);
    assert_int_equal(state_begin(fx->s, &e), 0);
    assert_int_equal(journal_txn_open(fx->s, "app", 2, 0, 0, &cut, &e), 0);
    assert_int_equal(journal_append(fx->s, cut, &c, &e), 0);
    assert_int_equal(journal_txn_open(fx->s, "crm", 3, 0, 0, &other, &e), 0);
    assert_int_equal(journal_append(fx->s, other, &c, &e), 0);
    assert_int_equal(journal_txn_open(fx->s, "app", 4, 0, 0, &cur, &e), 0);
    assert_int_equal(journal_append(fx->s, cur, &c, &e), 0);
    assert_int_equal(state_commit(fx->s, &e), 0);
    assert_int_equal(journal_drop_open(fx->s, "app", cur, &e), 1);
    assert_int_equal(journal_scan_changes(fx->s, cut, collect_change, &cs, &e), 0);
    assert_int_equal(cs.n, 0);
    for (int64_t *x = (int64_t[]){ done, other, cur, 0 }; *x != 0; x++) {
        cs.n = 0;
        assert_int_equal(journal_scan_changes(fx->s, *x, collect_change, &cs, &e), 0);
        assert_true(cs.n >= 1);
    }
    assert_int_equal(journal_drop_open(fx->s, "app", cur, &e), 0);
    assert_int_equal(journal_drop_open(fx->s, "app", 0, &e), 1);    /* cur cut short too */
    assert_int_equal(journal_newest_open(fx->s, "app", &t, &e), 0);
    assert_int_equal(t, 0);
    assert_int_equal(journal_newest_open(fx->s, "crm", &t, &e), 0);
    assert_int_equal(t, other);
    assert_int_equal(journal_depth(fx->s, 0, &n, NULL, &e), 0);
    assert_int_equal(n, 1);                                         /* the committed one */
}

/* The daemon's bounded prune: at most max_txns of the oldest, never past
 * upto, and nothing while even the oldest is inside the window. */
static void test_prune_some(void **ctx)
{
    struct fx *fx = *ctx;
    struct err e = {0};
    int64_t t = 0, c = 0;

    assert_int_equal(journal_prune_some(fx->s, 10, 60, 2, &e), 0);   /* empty */
    for (int i = 1; i <= 5; i++)
        journal_one(fx->s, "app", i, 2, NULL);
    fx->now += INT64_C(30) * 1000000;
    assert_int_equal(journal_prune_some(fx->s, 5, 60, 2, &e), 0);    /* too young */
    assert_int_equal(journal_depth(fx->s, 0, &t, &c, &e), 0);
    assert_int_equal(t, 5);
    fx->now += INT64_C(60) * 1000000;
    assert_int_equal(journal_prune_some(fx->s, 5, 60, 2, &e), 0);    /* seqs 1, 2 */
    assert_int_equal(journal_depth(fx->s, 0, &t, &c, &e), 0);
    assert_int_equal(t, 3);
    assert_int_equal(c, 6);
    assert_int_equal(journal_prune_some(fx->s, 3, 60, 2, &e), 0);    /* upto: seq 3 */
    assert_int_equal(journal_depth(fx->s, 0, &t, &c, &e), 0);
    assert_int_equal(t, 2);
    assert_int_equal(journal_prune_some(fx->s, 3, 60, 2, &e), 0);    /* past upto: none */
    assert_int_equal(journal_depth(fx->s, 0, &t, &c, &e), 0);
    assert_int_equal(t, 2);
    assert_int_equal(journal_prune_some(fx->s, 9, 60, 100, &e), 0);  /* the rest */
    assert_int_equal(journal_depth(fx->s, 0, &t, &c, &e), 0);
    assert_int_equal(t, 0);
    assert_int_equal(c, 0);
}

/* Two open transactions whose changes interleave (two sources, each
 * spilling a large transaction): each scan sees its own changes in order,
 * and pruning the one that committed keeps every change of the other. */
static void test_interleaved_txns(void **ctx)
{
    struct fx *fx = *ctx;
    struct err e = {0};
    struct changes cs = {0};
    int64_t t1 = 0, t2 = 0, seq = 0, t = 0, c = 0;
    char key[16];

    assert_int_equal(state_begin(fx->s, &e), 0);
    assert_int_equal(journal_txn_open(fx->s, "app", 1, 0, 0, &t1, &e), 0);
    assert_int_equal(journal_txn_open(fx->s, "crm", 2, 0, 0, &t2, &e), 0);
    for (int i = 0; i < 6; i++) {
        struct change ch = { .mapping = "m", .op = CHANGE_INSERT, .key = key };

        snprintf(key, sizeof(key), "[\"%d\"]", i);
        assert_int_equal(journal_append(fx->s, i % 2 ? t2 : t1, &ch, &e), 0);
    }
    assert_int_equal(journal_txn_commit(fx->s, t2, 5, &seq, &e), 0);
    assert_int_equal(state_commit(fx->s, &e), 0);
    assert_int_equal(journal_scan_changes(fx->s, t2, collect_change, &cs, &e), 0);
    assert_int_equal(cs.n, 3);
    assert_string_equal(cs.key[0], "[\"1\"]");
    assert_string_equal(cs.key[2], "[\"5\"]");
    fx->now += INT64_C(10) * 1000000;
    assert_int_equal(journal_prune(fx->s, seq, 0, &e), 0);
    cs.n = 0;
    assert_int_equal(journal_scan_changes(fx->s, t2, collect_change, &cs, &e), 0);
    assert_int_equal(cs.n, 0);
    /* t1 opened first, got more changes after t2 committed, then commits. */
    assert_int_equal(state_begin(fx->s, &e), 0);
    {
        struct change ch = { .mapping = "m", .op = CHANGE_INSERT, .key = "[\"6\"]" };
        assert_int_equal(journal_append(fx->s, t1, &ch, &e), 0);
    }
    assert_int_equal(journal_txn_commit(fx->s, t1, 6, &seq, &e), 0);
    assert_int_equal(state_commit(fx->s, &e), 0);
    assert_int_equal(journal_scan_changes(fx->s, t1, collect_change, &cs, &e), 0);
    assert_int_equal(cs.n, 4);
    assert_string_equal(cs.key[0], "[\"0\"]");
    assert_string_equal(cs.key[1], "[\"2\"]");
    assert_string_equal(cs.key[2], "[\"4\"]");
    assert_string_equal(cs.key[3], "[\"6\"]");
    assert_int_equal(journal_depth(fx->s, 0, &t, &c, &e), 0);
    assert_int_equal(t, 1);
    assert_int_equal(c, 4);
}

struct txn_ranges {
    int n;
    int64_t txn[8], first[8], last[8];
};

static int collect_range(const struct journal_txn_info *info, void *arg)
{
    struct txn_ranges *r = arg;

    if (r->n < 8) {
        r->txn[r->n] = info->txn;
        r->first[r->n] = info->first_seq;
        r->last[r->n] = info->last_seq;
    }
    r->n++;
    return 0;
}

/* Consecutive transactions read in one range: each change says its
 * transaction; the range bounds and the limit hold; a transaction's
 * sequence range is in its info. */
static void test_scan_seq_range(void **ctx)
{
    struct fx *fx = *ctx;
    struct err e = {0};
    struct changes cs = {0};
    struct txn_ranges r = {0};
    int64_t t1 = 0, t2 = 0, t3 = 0;

    journal_one(fx->s, "app", 1, 2, &t1);
    journal_one(fx->s, "app", 2, 1, &t2);
    journal_one(fx->s, "app", 3, 3, &t3);
    assert_int_equal(journal_scan_txns(fx->s, 0, 0, NULL, collect_range, &r, &e), 0);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.first[0], 1);
    assert_int_equal(r.last[0], 2);
    assert_int_equal(r.first[1], 3);
    assert_int_equal(r.last[1], 3);
    assert_int_equal(r.first[2], 4);
    assert_int_equal(r.last[2], 6);
    /* (1, 5]: the second change of t1, t2's, two of t3's. */
    assert_int_equal(journal_scan_seq_range(fx->s, 1, 5, 0, collect_change, &cs, &e), 4);
    assert_int_equal(cs.n, 4);
    assert_int_equal(cs.c[0].seq, 2);
    assert_int_equal(cs.c[0].txn, t1);
    assert_int_equal(cs.c[1].txn, t2);
    assert_string_equal(cs.fields[1], "{\"name\":\"n2-0\"}");
    assert_int_equal(cs.c[2].txn, t3);
    assert_int_equal(cs.c[3].seq, 5);
    assert_int_equal(cs.c[3].txn, t3);
    assert_string_equal(cs.c[3].endpoint, "app");
    /* The limit cuts it short; an empty range reads nothing. */
    cs.n = 0;
    assert_int_equal(journal_scan_seq_range(fx->s, 0, 6, 2, collect_change, &cs, &e), 2);
    assert_int_equal(cs.c[1].seq, 2);
    cs.n = 0;
    assert_int_equal(journal_scan_seq_range(fx->s, 6, 9, 0, collect_change, &cs, &e), 0);
    assert_int_equal(cs.n, 0);
}

/* The newest transaction an endpoint has not committed, as capture leaves
 * it mid-stream (one cut short stays until recovery). */
static void test_newest_open(void **ctx)
{
    struct fx *fx = *ctx;
    struct err e = {0};
    int64_t t1 = 0, t2 = 0, t3 = 0, seq = 0, open = -1;
    struct change c = { .mapping = "m", .op = CHANGE_INSERT, .key = "[\"1\"]", .fields = "{}" };

    assert_int_equal(journal_newest_open(fx->s, "app", &open, &e), 0);
    assert_int_equal(open, 0);
    assert_int_equal(state_begin(fx->s, &e), 0);
    assert_int_equal(journal_txn_open(fx->s, "app", 1, 0, 0, &t1, &e), 0);
    assert_int_equal(journal_append(fx->s, t1, &c, &e), 0);
    assert_int_equal(journal_txn_open(fx->s, "crm", 2, 0, 0, &t2, &e), 0);
    assert_int_equal(journal_append(fx->s, t2, &c, &e), 0);
    /* Seen inside the writing transaction, before any commit. */
    assert_int_equal(journal_newest_open(fx->s, "app", &open, &e), 0);
    assert_int_equal(open, t1);
    assert_int_equal(journal_txn_open(fx->s, "app", 3, 0, 0, &t3, &e), 0);
    assert_int_equal(journal_append(fx->s, t3, &c, &e), 0);
    assert_int_equal(state_commit(fx->s, &e), 0);
    assert_int_equal(journal_newest_open(fx->s, "app", &open, &e), 0);
    assert_int_equal(open, t3);
    assert_int_equal(journal_newest_open(fx->s, "crm", &open, &e), 0);
    assert_int_equal(open, t2);
    assert_int_equal(state_begin(fx->s, &e), 0);
    assert_int_equal(journal_txn_commit(fx->s, t3, 9, &seq, &e), 0);
    assert_int_equal(state_commit(fx->s, &e), 0);
    assert_int_equal(journal_newest_open(fx->s, "app", &open, &e), 0);
    assert_int_equal(open, t1);
}

/* A change replayed after its key was released is superseded only by a
 * committed change bound the same way, journaled after it, once an
 * operator settled a conflict of that key. */
static void test_decided_later(void **ctx)
{
    struct fx *fx = *ctx;
    struct err e = {0};
    struct conflict cf = { .mapping = "customers", .key = "[\"0\"]", .strategy = "manual",
                           .side_a = "{}", .side_b = "{}", .open = true };
    struct change c = { .mapping = "customers", .op = CHANGE_UPDATE, .key = "[\"0\"]",
                        .fields = "{}" };
    struct changes cs = {0};
    int64_t seq = 0, txn = 0;
    bool later = true;

    journal_one(fx->s, "crm", 10, 1, &txn);
    assert_int_equal(journal_scan_changes(fx->s, txn, collect_change, &cs, &e), 0);
    assert_int_equal(cs.n, 1);
    seq = cs.c[0].seq;
    assert_int_equal(journal_decided_later(fx->s, "app", "customers", "[\"0\"]", 0,
                                           &later, &e), 0);
    assert_false(later);                        /* no conflict at all */
    assert_int_equal(state_begin(fx->s, &e), 0);
    assert_int_equal(conflict_record(fx->s, &cf, &e), 0);
    assert_int_equal(state_commit(fx->s, &e), 0);
    assert_int_equal(journal_decided_later(fx->s, "app", "customers", "[\"0\"]", 0,
                                           &later, &e), 0);
    assert_false(later);                        /* still open */
    assert_int_equal(state_begin(fx->s, &e), 0);
    assert_int_equal(conflict_resolve(fx->s, cf.id, "{}", "manual", &e), 0);
    assert_int_equal(state_commit(fx->s, &e), 0);
    assert_int_equal(journal_decided_later(fx->s, "app", "customers", "[\"1\"]", 0,
                                           &later, &e), 0);
    assert_false(later);                        /* another key */
    assert_int_equal(journal_decided_later(fx->s, "crm", "customers", "[\"0\"]", 0,
                                           &later, &e), 0);
    assert_false(later);                        /* bound the other way */
    assert_int_equal(journal_decided_later(fx->s, "app", "customers", "[\"0\"]", seq - 1,
                                           &later, &e), 0);
    assert_true(later);
    assert_int_equal(journal_decided_later(fx->s, "app", "customers", "[\"0\"]", seq,
                                           &later, &e), 0);
    assert_false(later);                        /* nothing after it */
    assert_int_equal(state_begin(fx->s, &e), 0);
    assert_int_equal(journal_txn_open(fx->s, "crm", 11, 0, 0, &txn, &e), 0);
    assert_int_equal(journal_append(fx->s, txn, &c, &e), 0);
    assert_int_equal(journal_decided_later(fx->s, "app", "customers", "[\"0\"]", seq,
                                           &later, &e), 0);
    assert_false(later);                        /* not committed */
    assert_int_equal(state_commit(fx->s, &e), 0);
}

/* The daemon (exclusive) and a command (shared, e.g. a reconcile repair)
 * take turns writing the journal: neither reuses the other's change or
 * commit sequences, though the daemon caches both. */
static void test_two_writers(void **ctx)
{
    struct fx *fx = *ctx;
    struct err e = {0};
    struct state *cli = NULL;
    struct changes cs = {0};
    int64_t t1 = 0, t2 = 0, s1 = 0, s2 = 0;

    assert_int_equal(state_open(&cli, fx->path, STATE_SHARED, &e), 0);
    for (int round = 0; round < 3; round++) {
        assert_int_equal(journal_one(fx->s, "app", 10 + round, 3, &t1), 2 * round + 1);
        assert_int_equal(journal_one(cli, "crm", 20 + round, 3, &t2), 2 * round + 2);
    }
    assert_int_equal(journal_scan_changes(fx->s, t1, collect_change, &cs, &e), 0);
    assert_int_equal(journal_scan_changes(cli, t2, collect_change, &cs, &e), 0);
    assert_int_equal(cs.n, 6);
    s1 = cs.c[0].seq;
    s2 = cs.c[3].seq;
    assert_int_equal(s1, 13);
    assert_int_equal(s2, 16);
    state_close(cli);
}

/* A schema 4 file (AUTOINCREMENT change sequences, the newest pruned)
 * keeps its changes and shadow through the moves to schemas 5, 6 and 7 (the
 * shadow rekeyed by key length and key), and the next
 * change sequence continues after the highest ever given out. */
static void test_migrate_from_v4(void **ctx)
{
    struct fx *fx = *ctx;
    struct err e = {0};
    struct changes cs = {0};
    struct change c = { .mapping = "m", .op = CHANGE_INSERT, .key = "[\"9\"]" };
    struct shadow sh = { 0 };
    char hash[CANON_HASH_HEX + 1];
    json_t *want;
    int64_t txn = 0;
    sqlite3 *db;

    state_close(fx->s);
    fx->s = NULL;
    remove(fx->path);
    assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
        "CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema_version', '4');"
        "CREATE TABLE journal_txn (txn INTEGER PRIMARY KEY AUTOINCREMENT,"
        " endpoint TEXT NOT NULL, source_xid INTEGER NOT NULL DEFAULT 0,"
        " commit_lsn INTEGER NOT NULL DEFAULT 0, end_lsn INTEGER NOT NULL DEFAULT 0,"
        " commit_ts_us INTEGER NOT NULL DEFAULT 0, commit_seq INTEGER UNIQUE,"
        " opened_at_us INTEGER NOT NULL, committed_at_us INTEGER,"
        " nchanges INTEGER NOT NULL DEFAULT 0);"
        "CREATE TABLE journal_change (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        " txn INTEGER NOT NULL REFERENCES journal_txn (txn) ON DELETE CASCADE,"
        " mapping TEXT NOT NULL, op TEXT NOT NULL, key TEXT NOT NULL, old_key TEXT,"
        " fields TEXT, unchanged TEXT, version_us INTEGER NOT NULL DEFAULT 0,"
        " old_fields TEXT);"
        "CREATE INDEX journal_change_txn ON journal_change (txn, seq);"
        "CREATE TABLE shadow (mapping TEXT NOT NULL, key TEXT NOT NULL,"
        " hash TEXT NOT NULL, fields TEXT, version_a_us INTEGER NOT NULL DEFAULT 0,"
        " version_b_us INTEGER NOT NULL DEFAULT 0, tombstone INTEGER NOT NULL DEFAULT 0,"
        " updated_at_us INTEGER NOT NULL, PRIMARY KEY (mapping, key));"
        "INSERT INTO journal_txn (txn, endpoint, opened_at_us) VALUES (1, 'app', 1);"
        "INSERT INTO journal_change (seq, txn, mapping, op, key, fields)"
        " VALUES (7, 1, 'm', 'I', '[\"1\"]', '{\"v\":\"x\"}'),"
        "        (40, 1, 'm', 'I', '[\"2\"]', '{\"v\":\"y\"}');"
        "DELETE FROM journal_change WHERE seq = 40;"
        "INSERT INTO shadow VALUES ('m', '[\"1\"]', 'h', '{\"v\":\"x\"}', 1, 2, 0, 3);",
        NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    fx_open(fx);
    assert_int_equal(state_schema_version(fx->s), STATE_SCHEMA_VERSION);
    assert_int_equal(journal_scan_changes(fx->s, 1, collect_change, &cs, &e), 0);
    assert_int_equal(cs.n, 1);
    assert_int_equal(cs.c[0].seq, 7);
    assert_string_equal(cs.key[0], "[\"1\"]");
    assert_int_equal(shadow_get(fx->s, "m", "[\"1\"]", &sh, &e), 0);
    assert_string_equal(sh.fields, "{\"v\":\"x\"}");
    assert_int_equal(sh.version_b_us, 2);
    /* Schema 6 recomputed the stored hash with today's canon_hash. */
    want = json_loads(sh.fields, 0, NULL);
    assert_non_null(want);
    canon_hash(want, hash);
    json_decref(want);
    assert_string_equal(sh.hash, hash);
    shadow_clear(&sh);
    assert_int_equal(state_begin(fx->s, &e), 0);
    assert_int_equal(journal_txn_open(fx->s, "app", 2, 0, 0, &txn, &e), 0);
    assert_int_equal(journal_append(fx->s, txn, &c, &e), 0);
    assert_int_equal(c.seq, 41);
    assert_int_equal(state_commit(fx->s, &e), 0);
}

/* Child: journals batches, then dies without closing (like kill -9). With
 * partial, a last batch is left uncommitted. */
static int child_journal(const char *path, int partial)
{
    struct state *s = NULL;
    struct err e = {0};
    char key[32], pos[32];

    if (state_open(&s, path, STATE_EXCLUSIVE, &e) < 0)
        return 1;
    for (int b = 0; b < 10 + partial; b++) {
        int64_t txn = 0, seq = 0;

        if (state_begin(s, &e) < 0 ||
            journal_txn_open(s, "app", b + 1, 0, 0, &txn, &e) < 0)
            return 2;
        for (int i = 0; i < 100; i++) {
            struct change c = { .mapping = "m", .op = CHANGE_INSERT, .key = key,
                                .fields = "{\"x\":\"1\"}" };

            snprintf(key, sizeof(key), "[\"%d\"]", b * 100 + i);
            if (journal_append(s, txn, &c, &e) < 0)
                return 3;
        }
        snprintf(pos, sizeof(pos), "0/%X", (b + 1) * 16);
        if (journal_txn_commit(s, txn, (uint64_t)(b + 1) * 16, &seq, &e) < 0 ||
            state_position_set(s, "app", pos, &e) < 0)
            return 4;
        if (b == 10)
            _exit(0);   /* dies with the batch open */
        if (state_commit(s, &e) < 0)
            return 5;
    }
    _exit(0);           /* no state_close: the process just ends */
}

static void crash_case(struct fx *fx, int partial)
{
    struct err e = {0};
    int64_t t = 0, c = 0, last = 0;
    char pos[32];
    int status = 0;
    pid_t pid;

    state_close(fx->s);
    fx->s = NULL;
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(child_journal(fx->path, partial));
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    /* The lock died with the child. */
    fx_open(fx);
    assert_int_equal(journal_recover(fx->s, &e), 0);
    assert_int_equal(journal_depth(fx->s, 0, &t, &c, &e), 0);
    assert_int_equal(t, 10);
    assert_int_equal(c, 1000);
    assert_int_equal(journal_last_commit_seq(fx->s, &last, &e), 0);
    assert_int_equal(last, 10);
    assert_int_equal(state_position_get(fx->s, "app", pos, sizeof(pos), &e), 0);
    assert_string_equal(pos, "0/A0");
}

static void test_crash_durability(void **ctx)
{
    crash_case(*ctx, 0);
}

static void test_crash_mid_batch(void **ctx)
{
    crash_case(*ctx, 1);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_append_rate(void **ctx)
{
    struct fx *fx = *ctx;
    struct state *s = fx->s;
    struct err e = {0};
    enum { N = 200000, PER_TXN = 100 };
    char key[32], fields[160];
    int64_t txn = 0, seq = 0, t = 0, c = 0;
    double t0, t1, t2, t3;

    /* One big source transaction: the pure append path. */
    t0 = now_s();
    assert_int_equal(state_begin(s, &e), 0);
    assert_int_equal(journal_txn_open(s, "app", 1, 0, 0, &txn, &e), 0);
    for (int i = 0; i < N; i++) {
        struct change ch = { .mapping = "customers", .op = CHANGE_UPDATE,
                             .key = key, .fields = fields, .version_us = i };

        snprintf(key, sizeof(key), "[\"%d\"]", i);
        snprintf(fields, sizeof(fields),
                 "{\"id\":\"%d\",\"name\":\"Customer %d\",\"email\":"
                 "\"c%d@example.com\",\"balance\":\"%d.50\"}", i, i, i, i % 1000);
        assert_int_equal(journal_append(s, txn, &ch, &e), 0);
    }
    t1 = now_s();
    assert_int_equal(journal_txn_commit(s, txn, 1, &seq, &e), 0);
    assert_int_equal(state_commit(s, &e), 0);
    t2 = now_s();
    /* Many small source transactions in one group commit. */
    assert_int_equal(state_begin(s, &e), 0);
    for (int i = 0; i < N; i++) {
        struct change ch = { .mapping = "customers", .op = CHANGE_UPDATE,
                             .key = key, .fields = fields, .version_us = i };

        if (i % PER_TXN == 0)
            assert_int_equal(journal_txn_open(s, "app", i, 0, 0, &txn, &e), 0);
        snprintf(key, sizeof(key), "[\"%d\"]", i);
        snprintf(fields, sizeof(fields),
                 "{\"id\":\"%d\",\"name\":\"Customer %d\",\"email\":"
                 "\"c%d@example.com\",\"balance\":\"%d.50\"}", i, i, i, i % 1000);
        assert_int_equal(journal_append(s, txn, &ch, &e), 0);
        if (i % PER_TXN == PER_TXN - 1)
            assert_int_equal(journal_txn_commit(s, txn, (uint64_t)i, &seq, &e), 0);
    }
    assert_int_equal(state_commit(s, &e), 0);
    t3 = now_s();
    printf("journal_append: %d in %.3f s = %.0f appends/s (one txn); "
           "commit %.3f s\n", N, t1 - t0, N / (t1 - t0), t2 - t1);
    printf("journal_append: %d in %d-change txns, one state commit: %.3f s "
           "= %.0f appends/s\n", N, PER_TXN, t3 - t2, N / (t3 - t2));
    assert_int_equal(journal_depth(s, 0, &t, &c, &e), 0);
    assert_int_equal(t, 1 + N / PER_TXN);
    assert_int_equal(c, 2 * N);
}

static void test_disk_full(void **ctx)
{
    struct fx *fx = *ctx;
    struct state *s = fx->s;
    struct err e = {0};
    char big[4000], sql[64];
    int64_t txn = 0, t = -1, c = -1, seq = 0;
    int rc = 0, i;

    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    journal_one(s, "app", 1, 1, NULL);
    /* Cap the file a few pages above its size: appends run out of room. */
    snprintf(sql, sizeof(sql), "PRAGMA max_page_count = %d", 40);
    assert_int_equal(sqlite3_exec(state_db(s), sql, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(state_begin(s, &e), 0);
    assert_int_equal(journal_txn_open(s, "app", 2, 0, 0, &txn, &e), 0);
    for (i = 0; i < 1000 && rc == 0; i++) {
        struct change ch = { .mapping = "m", .op = CHANGE_INSERT, .key = "[\"1\"]",
                             .fields = big };

        rc = journal_append(s, txn, &ch, &e);
    }
    assert_int_equal(rc, -ENOSPC);
    assert_non_null(strstr(e.msg, "journal append"));
    /* Whether SQLite kept the transaction or not, the batch is abandoned
     * and the state stays usable. */
    rc = state_commit(s, &e);
    if (rc == 0) {
        /* SQLite kept it: the appends before the failure were saved. */
        assert_int_equal(journal_recover(s, &e), 1);
    } else {
        state_rollback(s);
    }
    assert_int_equal(sqlite3_exec(state_db(s), "PRAGMA max_page_count = 1000000",
                                  NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(journal_one(s, "app", 3, 2, NULL), 2);
    assert_int_equal(journal_depth(s, 0, &t, &c, &e), 0);
    assert_int_equal(t, 2);
    assert_int_equal(c, 3);
    assert_int_equal(journal_last_commit_seq(s, &seq, &e), 0);
    assert_int_equal(seq, 2);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_append_commit_scan),
        T(test_info_fields),
        T(test_misuse),
        T(test_commit_seq_order),
        T(test_scan_skip_and_stop),
        T(test_scan_reentrant),
        T(test_scan_changes_from),
        T(test_empty_txn_deleted),
        T(test_depth),
        T(test_recover),
        T(test_prune),
        T(test_migrate_from_v4),
        T(test_interleaved_txns),
        T(test_scan_seq_range),
        T(test_newest_open),
        T(test_prune_some),
        T(test_drop_open),
        T(test_decided_later),
        T(test_two_writers),
        T(test_crash_durability),
        T(test_crash_mid_batch),
        T(test_disk_full),
        T(test_append_rate),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
