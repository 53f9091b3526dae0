/* test_shadow.c: shadow records, key cross-reference, conflict log. */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "state/conflicts.h"
#include "state/shadow.h"
#include "state/state.h"

struct fx {
    char dir[256];
    char path[300];
    int64_t now;
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

static int setup(void **ctx)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    const char *t = getenv("TMPDIR");
    struct err e = {0};

    assert_non_null(fx);
    snprintf(fx->dir, sizeof(fx->dir), "%s/tandem-shadow-XXXXXX",
             t != NULL && t[0] != '\0' ? t : "/tmp");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->path, sizeof(fx->path), "%s/state.db", fx->dir);
    assert_int_equal(state_open(&fx->s, fx->path, STATE_EXCLUSIVE, &e), 0);
    fx->now = 1000;
    state_set_clock(fx->s, fake_clock, fx);
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

static void reopen(struct fx *fx)
{
    struct err e = {0};

    state_close(fx->s);
    assert_int_equal(state_open(&fx->s, fx->path, STATE_EXCLUSIVE, &e), 0);
    state_set_clock(fx->s, fake_clock, fx);
}

static void test_shadow_put_get(void **ctx)
{
    struct fx *fx = *ctx;
    struct err e = {0};
    struct shadow sh = {0}, got = {0};
    char hash[SHADOW_HASH_LEN + 1];

    assert_int_equal(shadow_get(fx->s, "customers", "[\"1\"]", &got, &e), -ENOENT);
    assert_null(got.fields);
    memset(hash, 'a', SHADOW_HASH_LEN);
    hash[SHADOW_HASH_LEN] = '\0';
    memcpy(sh.hash, hash, sizeof(hash));
    sh.fields = "{\"id\":\"1\",\"name\":\"A\"}";
    sh.version_a_us = 10;
    sh.version_b_us = 20;
    assert_int_equal(shadow_put(fx->s, "customers", "[\"1\"]", &sh, &e), 0);
    reopen(fx);
    assert_int_equal(shadow_get(fx->s, "customers", "[\"1\"]", &got, &e), 0);
    assert_string_equal(got.hash, hash);
    assert_string_equal(got.fields, "{\"id\":\"1\",\"name\":\"A\"}");
    assert_int_equal(got.version_a_us, 10);
    assert_int_equal(got.version_b_us, 20);
    assert_false(got.tombstone);
    shadow_clear(&got);
    assert_null(got.fields);
    shadow_clear(NULL);
    /* Same key, other mapping: separate. */
    assert_int_equal(shadow_get(fx->s, "orders", "[\"1\"]", &got, &e), -ENOENT);
}

/* shadow_put_side takes one side's version and keeps the other's. */
static void test_shadow_put_side(void **ctx)
{
    struct fx *fx = *ctx;
    struct err e = {0};
    struct shadow sh = {0}, got = {0};

    memset(sh.hash, 'b', SHADOW_HASH_LEN);
    sh.fields = "{\"id\":\"7\"}";
    sh.version_a_us = sh.version_b_us = 50;
    assert_int_equal(shadow_put_side(fx->s, "m", "[\"7\"]", &sh, 'a', &e), 0);
    assert_int_equal(shadow_get(fx->s, "m", "[\"7\"]", &got, &e), 0);
    assert_int_equal(got.version_a_us, 50);
    assert_int_equal(got.version_b_us, 0);      /* new: the other side unknown */
    shadow_clear(&got);
    sh.fields = "{\"id\":\"7\",\"v\":\"x\"}";
    sh.version_a_us = sh.version_b_us = 70;
    sh.tombstone = true;
    assert_int_equal(shadow_put_side(fx->s, "m", "[\"7\"]", &sh, 'b', &e), 0);
    assert_int_equal(shadow_get(fx->s, "m", "[\"7\"]", &got, &e), 0);
    assert_int_equal(got.version_a_us, 50);     /* kept */
    assert_int_equal(got.version_b_us, 70);
    assert_true(got.tombstone);
    assert_string_equal(got.fields, "{\"id\":\"7\",\"v\":\"x\"}");
    shadow_clear(&got);
    assert_int_equal(shadow_put_side(fx->s, "m", "[\"7\"]", &sh, 'c', &e), -EINVAL);
}

/* Inside a transaction puts are gathered into multi-row writes: reads see
 * them, a side change or a commit writes them, a rollback drops them. */
static void test_shadow_put_side_batched(void **ctx)
{
    struct fx *fx = *ctx;
    struct err e = {0};
    struct shadow sh = {0}, got = {0};
    char key[16];
    int64_t n = 0;

    memset(sh.hash, 'c', SHADOW_HASH_LEN);
    sh.fields = "{\"v\":\"1\"}";
    assert_int_equal(state_begin(fx->s, &e), 0);
    for (int i = 0; i < 40; i++) {      /* one full batch and 8 left over */
        snprintf(key, sizeof(key), "[\"%d\"]", i);
        sh.version_a_us = sh.version_b_us = 100 + i;
        assert_int_equal(shadow_put_side(fx->s, "m", key, &sh, 'a', &e), 0);
    }
    sh.version_a_us = sh.version_b_us = 900;
    sh.fields = "{\"v\":\"2\"}";
    for (int i = 36; i < 38; i++) {     /* pending keys, now from side b */
        snprintf(key, sizeof(key), "[\"%d\"]", i);
        assert_int_equal(shadow_put_side(fx->s, "m", key, &sh, 'b', &e), 0);
    }
    sh.version_a_us = sh.version_b_us = 901;
    assert_int_equal(shadow_put_side(fx->s, "m", "[\"37\"]", &sh, 'b', &e), 0);
    assert_int_equal(shadow_get(fx->s, "m", "[\"37\"]", &got, &e), 0);
    assert_int_equal(got.version_a_us, 137);    /* side a's, kept */
    assert_int_equal(got.version_b_us, 901);    /* the last put wins */
    assert_string_equal(got.fields, "{\"v\":\"2\"}");
    shadow_clear(&got);
    assert_int_equal(shadow_put_side(fx->s, "m", "[\"99\"]", &sh, 'a', &e), 0);
    assert_int_equal(state_commit(fx->s, &e), 0);
    assert_int_equal(shadow_count(fx->s, "m", true, &n, &e), 0);
    assert_int_equal(n, 41);
    assert_int_equal(state_begin(fx->s, &e), 0);
    assert_int_equal(shadow_put_side(fx->s, "m", "[\"500\"]", &sh, 'a', &e), 0);
    state_rollback(fx->s);
    assert_int_equal(shadow_get(fx->s, "m", "[\"500\"]", &got, &e), -ENOENT);
    assert_int_equal(shadow_count(fx->s, "m", true, &n, &e), 0);
    assert_int_equal(n, 41);
}

static void test_shadow_replace_tombstone(void **ctx)
{
    struct fx *fx = *ctx;
    struct err e = {0};
    struct shadow sh = {0}, got = {0};
    int64_t n = 0;

    strcpy(sh.hash, "h1");
    sh.fields = "{\"name\":\"A\"}";
    sh.version_a_us = 1;
    assert_int_equal(shadow_put(fx->s, "m", "k", &sh, &e), 0);
    strcpy(sh.hash, "h2");
    sh.fields = "{\"name\":\"B\"}";
    sh.version_b_us = 5;
    assert_int_equal(shadow_put(fx->s, "m", "k", &sh, &e), 0);
    assert_int_equal(shadow_get(fx->s, "m", "k", &got, &e), 0);
    assert_string_equal(got.hash, "h2");
    assert_string_equal(got.fields, "{\"name\":\"B\"}");
    assert_int_equal(got.version_b_us, 5);
    shadow_clear(&got);
    /* Deleted at version 9: a tombstone, fields may be NULL. */
    strcpy(sh.hash, "");
    sh.fields = NULL;
    sh.version_a_us = 9;
    sh.tombstone = true;
    assert_int_equal(shadow_put(fx->s, "m", "k", &sh, &e), 0);
    assert_int_equal(shadow_get(fx->s, "m", "k", &got, &e), 0);
    assert_true(got.tombstone);
    assert_null(got.fields);
    assert_int_equal(got.version_a_us, 9);
    shadow_clear(&got);
    assert_int_equal(shadow_count(fx->s, "m", true, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_int_equal(shadow_count(fx->s, "m", false, &n, &e), 0);
    assert_int_equal(n, 0);
    assert_int_equal(shadow_delete(fx->s, "m", "k", &e), 0);
    assert_int_equal(shadow_delete(fx->s, "m", "k", &e), -ENOENT);
    assert_int_equal(shadow_get(fx->s, "m", "k", &got, &e), -ENOENT);
    assert_int_equal(shadow_put(fx->s, "m", NULL, &sh, &e), -EINVAL);
}

struct keys {
    int n;
    char key[8][16];
};

static int collect_key(const char *key, const struct shadow *sh, void *arg)
{
    struct keys *k = arg;

    assert_non_null(sh->fields);
    snprintf(k->key[k->n++], 16, "%s", key);
    return k->n == 8 ? 1 : 0;
}

static void test_shadow_scan(void **ctx)
{
    struct fx *fx = *ctx;
    struct err e = {0};
    struct shadow sh = { .hash = "h", .fields = "{}" };
    struct keys k = {0};
    const char *keys[] = { "[\"3\"]", "[\"1\"]", "[\"2\"]", "[\"5\"]", "[\"4\"]" };

    for (size_t i = 0; i < 5; i++)
        assert_int_equal(shadow_put(fx->s, "m", keys[i], &sh, &e), 0);
    assert_int_equal(shadow_put(fx->s, "other", "[\"0\"]", &sh, &e), 0);
    assert_int_equal(shadow_scan(fx->s, "m", NULL, 2, collect_key, &k, &e), 0);
    assert_int_equal(k.n, 2);
    assert_string_equal(k.key[0], "[\"1\"]");
    assert_string_equal(k.key[1], "[\"2\"]");
    assert_int_equal(shadow_scan(fx->s, "m", k.key[1], 0, collect_key, &k, &e), 0);
    assert_int_equal(k.n, 5);
    assert_string_equal(k.key[2], "[\"3\"]");
    assert_string_equal(k.key[4], "[\"5\"]");
}

/* Shorter keys first: integer keys come in value order, and a scan that
 * resumes after a key goes on across lengths. get, put and delete find a
 * key whatever its length. */
static void test_shadow_scan_by_length(void **ctx)
{
    struct fx *fx = *ctx;
    struct err e = {0};
    struct shadow sh = { .hash = "h", .fields = "{}" }, got = {0};
    struct keys k = {0};
    const char *keys[] = { "[\"100\"]", "[\"9\"]", "[\"10\"]", "[\"11\"]", "[\"99\"]" };

    for (size_t i = 0; i < 5; i++)
        assert_int_equal(shadow_put(fx->s, "m", keys[i], &sh, &e), 0);
    assert_int_equal(shadow_scan(fx->s, "m", NULL, 2, collect_key, &k, &e), 0);
    assert_string_equal(k.key[0], "[\"9\"]");
    assert_string_equal(k.key[1], "[\"10\"]");
    assert_int_equal(shadow_scan(fx->s, "m", k.key[1], 0, collect_key, &k, &e), 0);
    assert_int_equal(k.n, 5);
    assert_string_equal(k.key[2], "[\"11\"]");
    assert_string_equal(k.key[3], "[\"99\"]");
    assert_string_equal(k.key[4], "[\"100\"]");
    assert_int_equal(shadow_get(fx->s, "m", "[\"100\"]", &got, &e), 0);
    shadow_clear(&got);
    assert_int_equal(shadow_delete(fx->s, "m", "[\"100\"]", &e), 0);
    assert_int_equal(shadow_get(fx->s, "m", "[\"100\"]", &got, &e), -ENOENT);
    assert_int_equal(shadow_get(fx->s, "m", "[\"10\"]", &got, &e), 0);
    shadow_clear(&got);
}

static void test_xref(void **ctx)
{
    struct fx *fx = *ctx;
    struct err e = {0};
    char buf[32], tiny[3];

    assert_int_equal(xref_get_b(fx->s, "m", "[\"1\"]", buf, sizeof(buf), &e), -ENOENT);
    assert_int_equal(xref_put(fx->s, "m", "[\"1\"]", "[\"abc\"]", &e), 0);
    assert_int_equal(xref_put(fx->s, "m", "[\"2\"]", "[\"def\"]", &e), 0);
    assert_int_equal(xref_get_b(fx->s, "m", "[\"1\"]", buf, sizeof(buf), &e), 0);
    assert_string_equal(buf, "[\"abc\"]");
    assert_int_equal(xref_get_a(fx->s, "m", "[\"def\"]", buf, sizeof(buf), &e), 0);
    assert_string_equal(buf, "[\"2\"]");
    assert_int_equal(xref_get_a(fx->s, "other", "[\"def\"]", buf, sizeof(buf), &e),
                     -ENOENT);
    assert_int_equal(xref_get_b(fx->s, "m", "[\"1\"]", tiny, sizeof(tiny), &e), -ERANGE);
    /* Re-pairing replaces the old pairing both ways. */
    assert_int_equal(xref_put(fx->s, "m", "[\"1\"]", "[\"def\"]", &e), 0);
    assert_int_equal(xref_get_a(fx->s, "m", "[\"def\"]", buf, sizeof(buf), &e), 0);
    assert_string_equal(buf, "[\"1\"]");
    assert_int_equal(xref_get_a(fx->s, "m", "[\"abc\"]", buf, sizeof(buf), &e), -ENOENT);
    assert_int_equal(xref_get_b(fx->s, "m", "[\"2\"]", buf, sizeof(buf), &e), -ENOENT);
    assert_int_equal(xref_delete(fx->s, "m", "[\"1\"]", &e), 0);
    assert_int_equal(xref_delete(fx->s, "m", "[\"1\"]", &e), -ENOENT);
    assert_int_equal(xref_get_a(fx->s, "m", "[\"def\"]", buf, sizeof(buf), &e), -ENOENT);
}

struct clist {
    int n;
    int64_t id[16];
    bool open[16];
    char key[16][16];
    char result[16][32];
    char rule[16][32];
    int64_t resolved[16];
};

static int collect_conflict(const struct conflict *c, void *arg)
{
    struct clist *l = arg;

    l->id[l->n] = c->id;
    l->open[l->n] = c->open;
    l->resolved[l->n] = c->resolved_ts_us;
    snprintf(l->key[l->n], 16, "%s", c->key);
    snprintf(l->result[l->n], 32, "%s", c->result ? c->result : "(null)");
    snprintf(l->rule[l->n], 32, "%s", c->rule ? c->rule : "(null)");
    l->n++;
    return 0;
}

static int check_full(const struct conflict *c, void *arg)
{
    (void)arg;
    assert_string_equal(c->mapping, "customers");
    assert_string_equal(c->strategy, "last_write_wins");
    assert_string_equal(c->base, "{\"name\":\"A\"}");
    assert_string_equal(c->side_a, "{\"name\":\"B\"}");
    assert_null(c->side_b);
    assert_string_equal(c->result, "{\"name\":\"B\"}");
    assert_string_equal(c->rule, "a newer (t_a > t_b)");
    assert_int_equal(c->version_a_us, 30);
    assert_int_equal(c->version_b_us, 20);
    assert_int_equal(c->ts_us, 1000);
    assert_false(c->open);
    return 0;
}

static void test_conflicts(void **ctx)
{
    struct fx *fx = *ctx;
    struct err e = {0};
    struct clist l = {0};
    int64_t n = -1, id = 0;
    struct conflict c1 = {
        .mapping = "customers", .key = "[\"1\"]", .strategy = "last_write_wins",
        .base = "{\"name\":\"A\"}", .side_a = "{\"name\":\"B\"}", .side_b = NULL,
        .result = "{\"name\":\"B\"}", .rule = "a newer (t_a > t_b)",
        .version_a_us = 30, .version_b_us = 20
    };
    struct conflict c2 = {
        .mapping = "customers", .key = "[\"2\"]", .strategy = "manual",
        .side_a = "{}", .side_b = "{}", .open = true
    };
    struct conflict c3 = {
        .mapping = "customers", .key = "[\"3\"]", .strategy = "manual", .open = true
    };
    struct conflict bad = { .mapping = "customers", .key = "[\"3\"]" };

    assert_int_equal(conflict_count(fx->s, false, &n, &e), 0);
    assert_int_equal(n, 0);
    assert_int_equal(conflict_record(fx->s, &c1, &e), 0);
    fx->now = 2000;
    assert_int_equal(conflict_record(fx->s, &c2, &e), 0);
    fx->now = 3000;
    assert_int_equal(conflict_record(fx->s, &c3, &e), 0);
    assert_int_equal(conflict_record(fx->s, &bad, &e), -EINVAL);
    assert_true(c1.id > 0 && c2.id > c1.id && c3.id > c2.id);
    assert_int_equal(c2.ts_us, 2000);

    assert_int_equal(conflict_get(fx->s, c1.id, check_full, NULL, &e), 0);
    assert_int_equal(conflict_get(fx->s, 999, check_full, NULL, &e), -ENOENT);

    assert_int_equal(conflict_list(fx->s, false, 0, collect_conflict, &l, &e), 0);
    assert_int_equal(l.n, 3);
    assert_int_equal(l.id[0], c3.id);   /* newest first */
    assert_int_equal(l.id[2], c1.id);
    assert_int_equal(l.resolved[2], 1000);
    assert_int_equal(l.resolved[0], 0);
    memset(&l, 0, sizeof(l));
    assert_int_equal(conflict_list(fx->s, true, 0, collect_conflict, &l, &e), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.id[0], c3.id);
    assert_int_equal(l.id[1], c2.id);
    assert_true(l.open[0] && l.open[1]);
    assert_string_equal(l.result[0], "(null)");
    memset(&l, 0, sizeof(l));
    assert_int_equal(conflict_list(fx->s, false, 2, collect_conflict, &l, &e), 0);
    assert_int_equal(l.n, 2);

    assert_int_equal(conflict_count(fx->s, false, &n, &e), 0);
    assert_int_equal(n, 3);
    assert_int_equal(conflict_count(fx->s, true, &n, &e), 0);
    assert_int_equal(n, 2);
    assert_int_equal(conflict_find_open(fx->s, "customers", "[\"2\"]", &id, &e), 0);
    assert_int_equal(id, c2.id);
    assert_int_equal(conflict_find_open(fx->s, "customers", "[\"1\"]", &id, &e), -ENOENT);

    fx->now = 4000;
    assert_int_equal(conflict_resolve(fx->s, c2.id, "{\"name\":\"Z\"}",
                                      "operator took a", &e), 0);
    assert_int_equal(conflict_resolve(fx->s, c2.id, "{}", NULL, &e), -EALREADY);
    assert_int_equal(conflict_resolve(fx->s, 999, "{}", NULL, &e), -ENOENT);
    assert_int_equal(conflict_resolve(fx->s, c3.id, NULL, NULL, &e), -EINVAL);
    assert_int_equal(conflict_count(fx->s, true, &n, &e), 0);
    assert_int_equal(n, 1);
    memset(&l, 0, sizeof(l));
    assert_int_equal(conflict_get(fx->s, c2.id, collect_conflict, &l, &e), 0);
    assert_false(l.open[0]);
    assert_string_equal(l.result[0], "{\"name\":\"Z\"}");
    assert_string_equal(l.rule[0], "operator took a");
    assert_int_equal(l.resolved[0], 4000);
    assert_int_equal(conflict_find_open(fx->s, "customers", "[\"2\"]", &id, &e), -ENOENT);

    /* The other direction met the same disagreement on key 3 (c4): one
     * decision closes both, not another key's. */
    struct conflict c4 = { .mapping = "customers", .key = "[\"3\"]", .strategy = "manual",
                           .open = true };
    struct conflict c5 = { .mapping = "customers", .key = "[\"5\"]", .strategy = "manual",
                           .open = true };
    int closed = -1;

    assert_int_equal(conflict_record(fx->s, &c4, &e), 0);
    assert_int_equal(conflict_record(fx->s, &c5, &e), 0);
    fx->now = 5000;
    assert_int_equal(conflict_resolve_key(fx->s, "customers", "[\"3\"]", "{}",
                                          "operator took b", &closed, &e), 0);
    assert_int_equal(closed, 2);
    assert_int_equal(conflict_find_open(fx->s, "customers", "[\"3\"]", &id, &e), -ENOENT);
    assert_int_equal(conflict_find_open(fx->s, "customers", "[\"5\"]", &id, &e), 0);
    assert_int_equal(id, c5.id);
    memset(&l, 0, sizeof(l));
    assert_int_equal(conflict_get(fx->s, c4.id, collect_conflict, &l, &e), 0);
    assert_string_equal(l.rule[0], "operator took b");
    assert_int_equal(l.resolved[0], 5000);
    assert_int_equal(conflict_resolve_key(fx->s, "customers", "[\"3\"]", "{}",
                                          "again", &closed, &e), 0);
    assert_int_equal(closed, 0);
}

struct tally {
    char pairs[4][64];
    int64_t n[4];
    int count;
};

static void collect_tally(const char *mapping, const char *strategy, int64_t n, void *arg)
{
    struct tally *t = arg;

    assert_true(t->count < 4);
    snprintf(t->pairs[t->count], sizeof(t->pairs[0]), "%s/%s", mapping, strategy);
    t->n[t->count++] = n;
}

static void test_conflict_tally(void **ctx)
{
    struct fx *fx = *ctx;
    struct err e = {0};
    struct tally t = {0};
    int64_t last = 0;
    struct conflict lww = { .mapping = "customers", .key = "[\"1\"]", .strategy = "last_write_wins" };
    struct conflict man = { .mapping = "orders", .key = "[\"1\"]", .strategy = "manual", .open = true };

    assert_int_equal(conflict_tally_since(fx->s, &last, collect_tally, &t, &e), 0);
    assert_int_equal(t.count, 0);
    assert_int_equal(last, 0);
    assert_int_equal(conflict_record(fx->s, &lww, &e), 0);
    assert_int_equal(conflict_record(fx->s, &man, &e), 0);
    lww.key = "[\"2\"]";
    assert_int_equal(conflict_record(fx->s, &lww, &e), 0);
    assert_int_equal(conflict_tally_since(fx->s, &last, collect_tally, &t, &e), 0);
    assert_int_equal(t.count, 2);               /* grouped by mapping, strategy */
    assert_string_equal(t.pairs[0], "customers/last_write_wins");
    assert_int_equal(t.n[0], 2);
    assert_string_equal(t.pairs[1], "orders/manual");
    assert_int_equal(t.n[1], 1);
    assert_int_equal(last, lww.id);             /* the newest seen */
    /* Only what came after: nothing, then the one new conflict. */
    memset(&t, 0, sizeof(t));
    assert_int_equal(conflict_tally_since(fx->s, &last, collect_tally, &t, &e), 0);
    assert_int_equal(t.count, 0);
    man.key = "[\"9\"]";
    assert_int_equal(conflict_record(fx->s, &man, &e), 0);
    assert_int_equal(conflict_tally_since(fx->s, &last, collect_tally, &t, &e), 0);
    assert_int_equal(t.count, 1);
    assert_string_equal(t.pairs[0], "orders/manual");
    assert_int_equal(t.n[0], 1);
    assert_int_equal(last, man.id);
    assert_int_equal(conflict_tally_since(fx->s, NULL, collect_tally, &t, &e), -EINVAL);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_shadow_put_get),
        T(test_shadow_put_side),
        T(test_shadow_put_side_batched),
        T(test_shadow_replace_tombstone),
        T(test_shadow_scan),
        T(test_shadow_scan_by_length),
        T(test_xref),
        T(test_conflicts),
        T(test_conflict_tally),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
