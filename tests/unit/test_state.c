/* test_state.c: opening, locking, schema, positions, applied progress. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "state/state.h"

struct fx {
    char dir[256];
    char path[300];
};

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)sb; (void)flag; (void)f;
    return remove(p);
}

static int setup(void **ctx)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    const char *t = getenv("TMPDIR");

    assert_non_null(fx);
    snprintf(fx->dir, sizeof(fx->dir), "%s/tandem-state-XXXXXX",
             t != NULL && t[0] != '\0' ? t : "/tmp");
    assert_non_null(mkdtemp(fx->dir));
    snprintf(fx->path, sizeof(fx->path), "%s/state.db", fx->dir);
    *ctx = fx;
    return 0;
}

static int teardown(void **ctx)
{
    struct fx *fx = *ctx;

    nftw(fx->dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
    free(fx);
    return 0;
}

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");

    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static int64_t pragma_int(struct state *s, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v;

    assert_int_equal(sqlite3_prepare_v2(state_db(s), sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void test_open_create(void **ctx)
{
    struct fx *fx = *ctx;
    struct state *s = NULL;
    struct err e = {0};
    char lock[320], buf[16];
    sqlite3_stmt *st = NULL;

    assert_int_equal(state_open(&s, fx->path, STATE_EXCLUSIVE, &e), 0);
    assert_non_null(s);
    assert_int_equal(state_schema_version(s), STATE_SCHEMA_VERSION);
    assert_string_equal(state_path(s), fx->path);
    assert_int_equal(state_mode_of(s), STATE_EXCLUSIVE);
    assert_int_equal(pragma_int(s, "PRAGMA synchronous"), 2);   /* FULL */
    assert_int_equal(pragma_int(s, "PRAGMA foreign_keys"), 1);
    assert_true(pragma_int(s, "PRAGMA busy_timeout") >= 1000);
    assert_int_equal(sqlite3_prepare_v2(state_db(s), "PRAGMA journal_mode", -1,
                                        &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    assert_int_equal(state_meta_get(s, "schema_version", buf, sizeof(buf), &e), 0);
    assert_int_equal(atoi(buf), STATE_SCHEMA_VERSION);
    /* Every table exists. */
    assert_int_equal(pragma_int(s, "SELECT count(*) FROM sqlite_master WHERE "
                                   "type = 'table' AND name IN ('meta', "
                                   "'positions', 'applied', 'journal_txn', "
                                   "'journal_change', 'shadow', 'xref', "
                                   "'conflicts', 'dlq', 'parked', 'canary')"),
                     11);
    state_close(s);
    snprintf(lock, sizeof(lock), "%s.lock", fx->path);
    assert_int_equal(access(lock, F_OK), 0);
    state_close(NULL);
}

static void test_reopen_idempotent(void **ctx)
{
    struct fx *fx = *ctx;
    struct state *s = NULL;
    struct err e = {0};
    char buf[64];

    assert_int_equal(state_open(&s, fx->path, STATE_EXCLUSIVE, &e), 0);
    assert_int_equal(state_meta_set(s, "pipeline", "crm-sync", &e), 0);
    assert_int_equal(state_position_set(s, "app", "0/16B3748", &e), 0);
    state_close(s);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(state_open(&s, fx->path,
                                    i == 1 ? STATE_SHARED : STATE_EXCLUSIVE, &e), 0);
        assert_int_equal(state_schema_version(s), STATE_SCHEMA_VERSION);
        assert_int_equal(state_meta_get(s, "pipeline", buf, sizeof(buf), &e), 0);
        assert_string_equal(buf, "crm-sync");
        assert_int_equal(state_position_get(s, "app", buf, sizeof(buf), &e), 0);
        assert_string_equal(buf, "0/16B3748");
        state_close(s);
    }
    assert_int_equal(state_open(&s, fx->path, STATE_READONLY, &e), 0);
    assert_int_equal(state_position_get(s, "app", buf, sizeof(buf), &e), 0);
    assert_string_equal(buf, "0/16B3748");
    state_close(s);
}

static void test_empty_file_migrates(void **ctx)
{
    struct fx *fx = *ctx;
    struct state *s = NULL;
    struct err e = {0};

    write_file(fx->path, "", 0);
    assert_int_equal(state_open(&s, fx->path, STATE_READONLY, &e), -EIO);
    assert_non_null(strstr(e.msg, "schema version 0"));
    assert_null(s);
    assert_int_equal(state_open(&s, fx->path, STATE_SHARED, &e), 0);
    assert_int_equal(state_schema_version(s), STATE_SCHEMA_VERSION);
    state_close(s);
}

static void test_newer_schema_refused(void **ctx)
{
    struct fx *fx = *ctx;
    struct state *s = NULL;
    struct err e = {0};

    assert_int_equal(state_open(&s, fx->path, STATE_EXCLUSIVE, &e), 0);
    assert_int_equal(state_meta_set(s, "schema_version", "999", &e), 0);
    state_close(s);
    s = NULL;
    for (int m = STATE_READONLY; m <= STATE_EXCLUSIVE; m++) {
        err_clear(&e);
        assert_int_equal(state_open(&s, fx->path, (enum state_mode)m, &e), -ENOTSUP);
        assert_null(s);
        assert_int_equal(e.code, -ENOTSUP);
        assert_non_null(strstr(e.msg, "999"));
        assert_non_null(strstr(e.msg, fx->path));
    }
}

static void test_not_sqlite(void **ctx)
{
    struct fx *fx = *ctx;
    struct state *s = NULL;
    struct err e = {0};
    char junk[4096];

    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (char)("this is not a database\n"[i % 23]);
    write_file(fx->path, junk, sizeof(junk));
    for (int m = STATE_READONLY; m <= STATE_EXCLUSIVE; m++) {
        err_clear(&e);
        assert_int_equal(state_open(&s, fx->path, (enum state_mode)m, &e), -EPROTO);
        assert_null(s);
        assert_non_null(strstr(e.msg, fx->path));
        assert_non_null(strstr(e.msg, "not a"));
    }
}

static void test_corrupt_header(void **ctx)
{
    struct fx *fx = *ctx;
    struct state *s = NULL;
    struct err e = {0};
    int fd;

    assert_int_equal(state_open(&s, fx->path, STATE_EXCLUSIVE, &e), 0);
    state_close(s);
    s = NULL;
    fd = open(fx->path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "garbage garbage!", 16, 0), 16);
    close(fd);
    assert_int_equal(state_open(&s, fx->path, STATE_SHARED, &e), -EPROTO);
    assert_null(s);
    assert_non_null(strstr(e.msg, fx->path));
}

static void test_foreign_sqlite(void **ctx)
{
    struct fx *fx = *ctx;
    struct state *s = NULL;
    struct err e = {0};
    sqlite3 *db = NULL;

    assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE t (x)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(state_open(&s, fx->path, STATE_EXCLUSIVE, &e), -EPROTO);
    assert_non_null(strstr(e.msg, "not a tandem state"));
}

static void test_missing_dir(void **ctx)
{
    struct fx *fx = *ctx;
    struct state *s = NULL;
    struct err e = {0};
    char p[400];

    snprintf(p, sizeof(p), "%s/nope/state.db", fx->dir);
    for (int m = STATE_READONLY; m <= STATE_EXCLUSIVE; m++) {
        err_clear(&e);
        assert_int_equal(state_open(&s, p, (enum state_mode)m, &e), -ENOENT);
        assert_null(s);
        assert_non_null(strstr(e.msg, "nope"));
    }
    /* Read-only never creates: a missing file is -ENOENT too. */
    assert_int_equal(state_open(&s, fx->path, STATE_READONLY, &e), -ENOENT);
    assert_non_null(strstr(e.msg, fx->path));
    assert_int_equal(access(fx->path, F_OK), -1);
    /* Bad arguments. */
    assert_int_equal(state_open(&s, "", STATE_SHARED, &e), -EINVAL);
    assert_int_equal(state_open(&s, fx->path, (enum state_mode)7, &e), -EINVAL);
}

/* Runs fn in a child process (no cmocka there) and returns its exit code. */
static int in_child(int (*fn)(const char *path, int arg), const char *path,
                    int arg)
{
    int status = 0;
    pid_t pid;

    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(fn(path, arg));
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static int child_open(const char *path, int expect)
{
    struct state *s = NULL;
    struct err e = {0};
    char want[700];
    int rc = state_open(&s, path, STATE_EXCLUSIVE, &e);

    if (rc != expect) {
        fprintf(stderr, "child: state_open = %d, want %d (%s)\n", rc, expect, e.msg);
        return 1;
    }
    if (rc == -EBUSY) {
        snprintf(want, sizeof(want),
                 "state %s is in use by another tandem process (lock %s.lock)",
                 path, path);
        if (strcmp(e.msg, want) != 0) {
            fprintf(stderr, "child: message \"%s\", want \"%s\"\n", e.msg, want);
            return 2;
        }
    }
    state_close(s);
    return 0;
}

static void test_exclusive_lock(void **ctx)
{
    struct fx *fx = *ctx;
    struct state *s = NULL, *s2 = NULL;
    struct err e = {0};
    char buf[32];

    assert_int_equal(state_open(&s, fx->path, STATE_EXCLUSIVE, &e), 0);
    assert_int_equal(in_child(child_open, fx->path, -EBUSY), 0);
    /* The same process opening it twice is refused as well. */
    assert_int_equal(state_open(&s2, fx->path, STATE_EXCLUSIVE, &e), -EBUSY);
    /* Shared (CLI writes) and read-only opens take no lock. */
    assert_int_equal(state_open(&s2, fx->path, STATE_SHARED, &e), 0);
    assert_int_equal(state_position_set(s2, "crm", "c1", &e), 0);
    state_close(s2);
    assert_int_equal(state_position_get(s, "crm", buf, sizeof(buf), &e), 0);
    assert_string_equal(buf, "c1");
    state_close(s);
    assert_int_equal(in_child(child_open, fx->path, 0), 0);
    assert_int_equal(state_open(&s, fx->path, STATE_EXCLUSIVE, &e), 0);
    state_close(s);
}

/* Child: the daemon. Writes, then holds an open write transaction, then
 * commits, stepping when the parent says so over the pipes. */
static int child_writer(const char *path, int fds)
{
    int rd = fds >> 16, wr = fds & 0xffff;
    struct state *s = NULL;
    struct err e = {0};
    char c;

    if (state_open(&s, path, STATE_EXCLUSIVE, &e) < 0 ||
        state_position_set(s, "app", "0/1", &e) < 0)
        return 1;
    if (write(wr, "1", 1) != 1 || read(rd, &c, 1) != 1)
        return 2;
    if (state_begin(s, &e) < 0 || state_position_set(s, "app", "0/2", &e) < 0)
        return 3;
    if (write(wr, "2", 1) != 1 || read(rd, &c, 1) != 1)
        return 4;
    if (state_commit(s, &e) < 0)
        return 5;
    if (write(wr, "3", 1) != 1 || read(rd, &c, 1) != 1)
        return 6;
    state_close(s);
    return 0;
}

static void test_readonly_while_exclusive(void **ctx)
{
    struct fx *fx = *ctx;
    struct state *r = NULL;
    struct err e = {0};
    int to_child[2], to_parent[2], status = 0;
    char buf[32], c;
    pid_t pid;

    assert_int_equal(pipe(to_child), 0);
    assert_int_equal(pipe(to_parent), 0);
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(to_child[1]);
        close(to_parent[0]);
        _exit(child_writer(fx->path, to_child[0] << 16 | to_parent[1]));
    }
    close(to_child[0]);
    close(to_parent[1]);
    assert_int_equal(read(to_parent[0], &c, 1), 1);
    assert_int_equal(state_open(&r, fx->path, STATE_READONLY, &e), 0);
    assert_int_equal(state_position_get(r, "app", buf, sizeof(buf), &e), 0);
    assert_string_equal(buf, "0/1");
    assert_int_equal(state_position_set(r, "app", "9/9", &e), -EROFS);
    assert_int_equal(write(to_child[1], "g", 1), 1);
    /* The writer holds an open transaction: readers see the last commit. */
    assert_int_equal(read(to_parent[0], &c, 1), 1);
    assert_int_equal(state_position_get(r, "app", buf, sizeof(buf), &e), 0);
    assert_string_equal(buf, "0/1");
    assert_int_equal(write(to_child[1], "g", 1), 1);
    assert_int_equal(read(to_parent[0], &c, 1), 1);
    assert_int_equal(state_position_get(r, "app", buf, sizeof(buf), &e), 0);
    assert_string_equal(buf, "0/2");
    assert_int_equal(write(to_child[1], "g", 1), 1);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    state_close(r);
    close(to_child[1]);
    close(to_parent[0]);
}

static void test_positions_applied_meta(void **ctx)
{
    struct fx *fx = *ctx;
    struct state *s = NULL;
    struct err e = {0};
    char buf[16], tiny[4];
    int64_t seq = -1;

    assert_int_equal(state_open(&s, fx->path, STATE_EXCLUSIVE, &e), 0);
    assert_int_equal(state_position_get(s, "app", buf, sizeof(buf), &e), -ENOENT);
    assert_int_equal(state_position_set(s, "app", "0/10", &e), 0);
    assert_int_equal(state_position_set(s, "crm", "2024-01-01T00:00:00Z", &e), 0);
    assert_int_equal(state_position_set(s, "app", "0/20", &e), 0);
    assert_int_equal(state_position_get(s, "app", buf, sizeof(buf), &e), 0);
    assert_string_equal(buf, "0/20");
    assert_int_equal(state_position_get(s, "app", tiny, sizeof(tiny), &e), -ERANGE);
    assert_int_equal(state_position_get(s, "crm", buf, sizeof(buf), &e), -ERANGE);
    assert_int_equal(state_position_set(s, "app", NULL, &e), -EINVAL);

    assert_int_equal(state_applied_get(s, "crm", &seq, &e), 0);
    assert_int_equal(seq, 0);
    assert_int_equal(state_applied_set(s, "crm", 5, &e), 0);
    assert_int_equal(state_applied_set(s, "app", 7, &e), 0);
    assert_int_equal(state_applied_set(s, "crm", 9, &e), 0);
    assert_int_equal(state_applied_get(s, "crm", &seq, &e), 0);
    assert_int_equal(seq, 9);
    assert_int_equal(state_applied_get(s, "app", &seq, &e), 0);
    assert_int_equal(seq, 7);
    assert_int_equal(state_applied_set(s, "app", -1, &e), -EINVAL);

    assert_int_equal(state_meta_get(s, "pipeline", buf, sizeof(buf), &e), -ENOENT);
    assert_int_equal(state_meta_set(s, "pipeline", "p1", &e), 0);
    assert_int_equal(state_meta_get(s, "pipeline", buf, sizeof(buf), &e), 0);
    assert_string_equal(buf, "p1");
    state_close(s);
}

static void test_begin_commit_rollback(void **ctx)
{
    struct fx *fx = *ctx;
    struct state *s = NULL;
    struct err e = {0};
    char buf[16];

    assert_int_equal(state_open(&s, fx->path, STATE_EXCLUSIVE, &e), 0);
    assert_false(state_in_txn(s));
    assert_int_equal(state_commit(s, &e), 0);      /* nothing open: no-op */
    assert_int_equal(state_begin(s, &e), 0);
    assert_true(state_in_txn(s));
    assert_int_equal(state_begin(s, &e), 0);      /* already open: no-op */
    assert_int_equal(state_position_set(s, "app", "0/1", &e), 0);
    state_rollback(s);
    assert_false(state_in_txn(s));
    assert_int_equal(state_position_get(s, "app", buf, sizeof(buf), &e), -ENOENT);
    assert_int_equal(state_begin(s, &e), 0);
    assert_int_equal(state_position_set(s, "app", "0/2", &e), 0);
    assert_int_equal(state_commit(s, &e), 0);
    assert_false(state_in_txn(s));
    state_rollback(s);                            /* nothing open: no-op */
    state_close(s);
    assert_int_equal(state_open(&s, fx->path, STATE_EXCLUSIVE, &e), 0);
    assert_int_equal(state_position_get(s, "app", buf, sizeof(buf), &e), 0);
    assert_string_equal(buf, "0/2");
    /* Close with an open transaction rolls it back. */
    assert_int_equal(state_begin(s, &e), 0);
    assert_int_equal(state_position_set(s, "app", "0/3", &e), 0);
    state_close(s);
    assert_int_equal(state_open(&s, fx->path, STATE_READONLY, &e), 0);
    assert_int_equal(state_position_get(s, "app", buf, sizeof(buf), &e), 0);
    assert_string_equal(buf, "0/2");
    state_close(s);
}

static void test_memory(void **ctx)
{
    struct state *s = NULL;
    struct err e = {0};
    char buf[16];

    (void)ctx;
    assert_int_equal(state_open(&s, ":memory:", STATE_EXCLUSIVE, &e), 0);
    assert_int_equal(state_position_set(s, "app", "0/1", &e), 0);
    assert_int_equal(state_position_get(s, "app", buf, sizeof(buf), &e), 0);
    assert_string_equal(buf, "0/1");
    state_close(s);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_open_create),
        T(test_reopen_idempotent),
        T(test_empty_file_migrates),
        T(test_newer_schema_refused),
        T(test_not_sqlite),
        T(test_corrupt_header),
        T(test_foreign_sqlite),
        T(test_missing_dir),
        T(test_exclusive_lock),
        T(test_readonly_while_exclusive),
        T(test_positions_applied_meta),
        T(test_begin_commit_rollback),
        T(test_memory),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
