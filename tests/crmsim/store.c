/* store.c: see store.h. One SQLite connection guarded by one mutex; every
 * write is one transaction, so a --state file never holds half a write. */
#include "store.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    ST_GET,
    ST_UPSERT,
    ST_FEED,
    ST_BEFORE,
    ST_CHANGES,
    ST_CHANGES_BEFORE,
    ST_DUMP,
    ST_NEXT_ID_GET,
    ST_NEXT_ID_SET,
    ST_META_SET,
    ST_COUNT
};

static const char *const sql_text[ST_COUNT] = {
    [ST_GET] = "SELECT seq, rev, deleted, doc FROM records WHERE res = ?1 AND key = ?2",
    [ST_UPSERT] =
        "INSERT INTO records(res, key, sk, ms, seq, rev, deleted, doc) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) "
        "ON CONFLICT(res, key) DO UPDATE SET sk = excluded.sk, ms = excluded.ms, "
        "seq = excluded.seq, rev = excluded.rev, deleted = excluded.deleted, "
        "doc = excluded.doc",
    [ST_FEED] = "SELECT ms, sk, doc FROM records WHERE res = ?1 AND ms >= ?2 "
                "ORDER BY ms, sk LIMIT ?3 OFFSET ?4",
    [ST_BEFORE] = "SELECT doc FROM records WHERE res = ?1 AND "
                  "(ms < ?2 OR (ms = ?2 AND sk < ?3)) "
                  "ORDER BY ms DESC, sk DESC LIMIT ?4",
    [ST_CHANGES] = "SELECT seq, res, key, deleted, doc FROM records "
                   "WHERE seq > ?1 AND (?2 IS NULL OR res = ?2) "
                   "ORDER BY seq LIMIT ?3",
    [ST_CHANGES_BEFORE] = "SELECT seq, res, key, deleted, doc FROM records "
                          "WHERE seq <= ?1 AND (?2 IS NULL OR res = ?2) "
                          "ORDER BY seq DESC LIMIT ?3",
    [ST_DUMP] = "SELECT doc FROM records WHERE res = ?1 ORDER BY sk",
    [ST_NEXT_ID_GET] = "SELECT next_id FROM ids WHERE res = ?1",
    [ST_NEXT_ID_SET] = "INSERT INTO ids(res, next_id) VALUES (?1, ?2) "
                       "ON CONFLICT(res) DO UPDATE SET next_id = excluded.next_id",
    [ST_META_SET] = "INSERT INTO meta(k, v) VALUES (?1, ?2) "
                    "ON CONFLICT(k) DO UPDATE SET v = excluded.v",
};

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS records ("
    "  res TEXT NOT NULL, key TEXT NOT NULL, sk TEXT NOT NULL,"
    "  ms INTEGER NOT NULL, seq INTEGER NOT NULL, rev INTEGER NOT NULL,"
    "  deleted INTEGER NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (res, key));"
    "CREATE INDEX IF NOT EXISTS records_feed ON records(res, ms, sk);"
    "CREATE INDEX IF NOT EXISTS records_seq ON records(seq);"
    "CREATE TABLE IF NOT EXISTS ids (res TEXT PRIMARY KEY, next_id INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);";

struct store {
    pthread_mutex_t mu;
    sqlite3 *db;
    sqlite3_stmt *st[ST_COUNT];
    char res[STORE_MAX_RESOURCES][64];
    int n_res;
    uint64_t seq;           /* last sequence handed out */
    int64_t last_ms;        /* last updated_at handed out */
    int64_t offset_ms, resolution_ms;
};

/* Fields the server owns; a client's values for them are ignored. */
static bool server_field(const char *k)
{
    return !strcmp(k, "id") || !strcmp(k, "updated_at") || !strcmp(k, "_rev") ||
           !strcmp(k, "deleted");
}

static int db_fail(struct store *s, struct simerr *e, const char *what)
{
    return simerr_set(e, -EIO, 500, "%s: %s", what, sqlite3_errmsg(s->db));
}

static sqlite3_stmt *stmt(struct store *s, int which)
{
    sqlite3_stmt *st = s->st[which];

    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
}

/* Ends every statement so no read stays open between requests. */
static void reset_all(struct store *s)
{
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_reset(s->st[i]);
}

static int meta_load(struct store *s, const char *k, int64_t *v)
{
    sqlite3_stmt *st;
    int rc;

    if (sqlite3_prepare_v2(s->db, "SELECT v FROM meta WHERE k = ?1", -1, &st,
                           NULL) != SQLITE_OK)
        return -EIO;
    sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -EIO;
}

int store_open(struct store **out, const char *path,
               const char *const *resources, int n_resources,
               struct simerr *e)
{
    struct store *s;
    int64_t v;
    bool file = path && strcmp(path, ":memory:");

    *out = NULL;
    if (n_resources < 1 || n_resources > STORE_MAX_RESOURCES)
        return simerr_set(e, -EINVAL, 500, "need 1..%d resources, got %d",
                          STORE_MAX_RESOURCES, n_resources);
    s = calloc(1, sizeof(*s));
    if (!s)
        return simerr_set(e, -ENOMEM, 500, "out of memory");
    pthread_mutex_init(&s->mu, NULL);
    s->resolution_ms = 1;
    for (int i = 0; i < n_resources; i++)
        snprintf(s->res[i], sizeof(s->res[i]), "%s", resources[i]);
    s->n_res = n_resources;
    if (sqlite3_open(file ? path : ":memory:", &s->db) != SQLITE_OK) {
        simerr_set(e, -EIO, 500, "open %s: %s", file ? path : ":memory:",
                   s->db ? sqlite3_errmsg(s->db) : "out of memory");
        store_free(s);
        return -EIO;
    }
    sqlite3_busy_timeout(s->db, 5000);
    if (sqlite3_exec(s->db, file ? "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                                 : "PRAGMA journal_mode=MEMORY;",
                     NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(s->db, schema, NULL, NULL, NULL) != SQLITE_OK) {
        db_fail(s, e, "schema");
        store_free(s);
        return -EIO;
    }
    for (int i = 0; i < ST_COUNT; i++) {
        if (sqlite3_prepare_v2(s->db, sql_text[i], -1, &s->st[i], NULL) != SQLITE_OK) {
            db_fail(s, e, "prepare");
            store_free(s);
            return -EIO;
        }
    }
    v = 0;
    if (meta_load(s, "seq", &v) < 0) {
        db_fail(s, e, "load seq");
        store_free(s);
        return -EIO;
    }
    s->seq = (uint64_t)v;
    v = 0;
    if (meta_load(s, "last_ms", &v) < 0) {
        db_fail(s, e, "load clock");
        store_free(s);
        return -EIO;
    }
    s->last_ms = v;
    *out = s;
    return 0;
}

void store_free(struct store *s)
{
    if (!s)
        return;
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(s->st[i]);
    sqlite3_close(s->db);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

bool store_has_resource(struct store *s, const char *res)
{
    for (int i = 0; i < s->n_res; i++)
        if (!strcmp(s->res[i], res))
            return true;
    return false;
}

json_t *store_resources(struct store *s)
{
    json_t *a = json_array();

    for (int i = 0; a && i < s->n_res; i++)
        json_array_append_new(a, json_string(s->res[i]));
    return a;
}

void store_seq_format(uint64_t seq, char out[SEQ_LEN])
{
    /* The suffix only proves the value is opaque: clients must echo it. */
    snprintf(out, SEQ_LEN, "%" PRIu64 "-g%06" PRIx64, seq,
             mix64(seq) & 0xffffff);
}

int store_seq_parse(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    const char *p = s;

    if (*p < '0' || *p > '9')
        return -EINVAL;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
            return -EINVAL;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (*p != '\0' && *p != '-')
        return -EINVAL;
    *out = v;
    return 0;
}

/* Sort key: integer ids numerically first, then other ids bytewise. */
static void sort_key(const char *key, char *out, size_t n)
{
    int64_t v;

    if (id_is_integer(key, &v))
        snprintf(out, n, "0%020" PRId64, v);
    else
        snprintf(out, n, "1%s", key);
}

static int64_t clock_next(struct store *s)
{
    int64_t t = now_ms() + s->offset_ms;

    if (s->resolution_ms > 1) {
        t -= t % s->resolution_ms;
        if (t < s->last_ms)
            t = s->last_ms;
    } else if (t <= s->last_ms) {
        t = s->last_ms + 1;
    }
    s->last_ms = t;
    return t;
}

void store_set_clock(struct store *s, int64_t offset_ms, int64_t resolution_ms)
{
    pthread_mutex_lock(&s->mu);
    s->offset_ms = offset_ms;
    s->resolution_ms = resolution_ms < 1 ? 1 : resolution_ms;
    pthread_mutex_unlock(&s->mu);
}

json_t *store_clock(struct store *s)
{
    char ts[TS_LEN];
    json_t *o;

    pthread_mutex_lock(&s->mu);
    ts_format(s->last_ms, ts);
    o = json_pack("{s:I,s:I,s:s}", "offset_ms", (json_int_t)s->offset_ms,
                  "resolution_ms", (json_int_t)s->resolution_ms, "last_updated_at",
                  ts);
    pthread_mutex_unlock(&s->mu);
    return o;
}

/* True when the If-Match style list in hdr names rev ("*" matches any). */
static bool etag_match(const char *hdr, const char *rev)
{
    const char *p = hdr;

    while (*p) {
        const char *start, *end;

        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (!*p)
            break;
        start = p;
        while (*p && *p != ',')
            p++;
        end = p;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if (end - start >= 2 && start[0] == 'W' && start[1] == '/')
            start += 2;
        if (end - start >= 2 && *start == '"' && end[-1] == '"') {
            start++;
            end--;
        }
        if ((end - start == 1 && *start == '*') ||
            ((size_t)(end - start) == strlen(rev) &&
             !memcmp(start, rev, (size_t)(end - start))))
            return true;
    }
    return false;
}

struct current {
    bool exists, deleted;
    int64_t rev;
    json_t *doc;            /* owned */
};

static int load_current(struct store *s, const char *res, const char *key,
                        struct current *c, struct simerr *e)
{
    sqlite3_stmt *st = stmt(s, ST_GET);
    int rc;

    memset(c, 0, sizeof(*c));
    if (sqlite3_bind_text(st, 1, res, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC) != SQLITE_OK)
        return db_fail(s, e, "bind");
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE)
        return 0;
    if (rc != SQLITE_ROW)
        return db_fail(s, e, "get");
    c->exists = true;
    c->rev = sqlite3_column_int64(st, 1);
    c->deleted = sqlite3_column_int(st, 2) != 0;
    c->doc = json_loads((const char *)sqlite3_column_text(st, 3), 0, NULL);
    sqlite3_reset(st);
    if (!json_is_object(c->doc)) {
        json_decref(c->doc);
        c->doc = NULL;
        return simerr_set(e, -EIO, 500, "stored record %s/%s is not an object",
                          res, key);
    }
    return 0;
}

static int next_id_get(struct store *s, const char *res, int64_t *out,
                       struct simerr *e)
{
    sqlite3_stmt *st = stmt(s, ST_NEXT_ID_GET);
    int rc;

    sqlite3_bind_text(st, 1, res, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    *out = 1;
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    else if (rc != SQLITE_DONE)
        return db_fail(s, e, "next id");
    sqlite3_reset(st);
    return 0;
}

static int next_id_set(struct store *s, const char *res, int64_t v,
                       struct simerr *e)
{
    sqlite3_stmt *st = stmt(s, ST_NEXT_ID_SET);

    sqlite3_bind_text(st, 1, res, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, v);
    if (sqlite3_step(st) != SQLITE_DONE)
        return db_fail(s, e, "set next id");
    return 0;
}

static int meta_set(struct store *s, const char *k, int64_t v, struct simerr *e)
{
    sqlite3_stmt *st = stmt(s, ST_META_SET);

    sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, v);
    if (sqlite3_step(st) != SQLITE_DONE)
        return db_fail(s, e, "set meta");
    return 0;
}

static uint64_t fnv1a(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* The id value a new record carries: the body's if it has one, else the old
 * record's, else an integer when the key reads as one. */
static json_t *id_value(const char *key, const json_t *body, const json_t *old)
{
    json_t *v = body ? json_object_get(body, "id") : NULL;
    int64_t n;

    if (v)
        return json_incref(v);
    v = old ? json_object_get(old, "id") : NULL;
    if (v)
        return json_incref(v);
    if (id_is_integer(key, &n))
        return json_integer(n);
    return json_string(key);
}

static int check_body_id(const json_t *body, const char *key, struct simerr *e)
{
    char canon[STORE_ID_MAX];
    json_t *id = body ? json_object_get(body, "id") : NULL;

    if (!id)
        return 0;
    if (id_canonical(id, canon, sizeof(canon)) < 0)
        return simerr_set(e, -EINVAL, 400,
                          "id must be a non-empty string or an integer");
    if (strcmp(canon, key))
        return simerr_set(e, -EINVAL, 400, "body id %s does not match path id %s",
                          canon, key);
    return 0;
}

static const char *body_rev(const json_t *body)
{
    json_t *r = body ? json_object_get(body, "_rev") : NULL;

    if (!r || json_is_null(r))
        return NULL;
    return json_is_string(r) ? json_string_value(r) : "";
}

static const char *doc_rev(const json_t *doc)
{
    const char *r = doc ? json_string_value(json_object_get(doc, "_rev")) : NULL;

    return r ? r : "";
}

/* Builds the record to store: id, kept fields, body fields, server fields. */
static json_t *build_doc(json_t *idv, const json_t *base, const json_t *body,
                         int64_t ms, int64_t rev, bool deleted)
{
    json_t *doc = json_object(), *v;
    const char *k;
    char ts[TS_LEN], revtxt[64];
    char *text;
    size_t len;

    if (!doc)
        return NULL;
    json_object_set(doc, "id", idv);
    if (base)
        json_object_foreach((json_t *)base, k, v)
            if (!server_field(k))
                json_object_set(doc, k, v);
    if (body)
        json_object_foreach((json_t *)body, k, v)
            if (!server_field(k))
                json_object_set(doc, k, v);
    ts_format(ms, ts);
    json_object_set_new(doc, "updated_at", json_string(ts));
    text = jsonw_dump(doc, &len);
    if (!text) {
        json_decref(doc);
        return NULL;
    }
    snprintf(revtxt, sizeof(revtxt), "%" PRId64 "-%016" PRIx64, rev,
             fnv1a(text, len) ^ (deleted ? 1 : 0));
    free(text);
    json_object_set_new(doc, "_rev", json_string(revtxt));
    json_object_set_new(doc, "deleted", json_boolean(deleted));
    return doc;
}

static int upsert(struct store *s, const char *res, const char *key,
                  int64_t ms, uint64_t seq, int64_t rev, bool deleted,
                  const json_t *doc, struct simerr *e)
{
    sqlite3_stmt *st = stmt(s, ST_UPSERT);
    char sk[STORE_ID_MAX + 32];
    char *text = jsonw_dump(doc, NULL);
    int rc;

    if (!text)
        return simerr_set(e, -ENOMEM, 500, "out of memory");
    sort_key(key, sk, sizeof(sk));
    sqlite3_bind_text(st, 1, res, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, sk, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, ms);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)seq);
    sqlite3_bind_int64(st, 6, rev);
    sqlite3_bind_int(st, 7, deleted);
    sqlite3_bind_text(st, 8, text, -1, free);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return db_fail(s, e, "upsert");
    return 0;
}

/* Decides the new record for w against c; fills *key_out for POST. */
static int plan_write(struct store *s, const struct store_write *w,
                      struct current *c, char *key, json_t **base,
                      const json_t **body, bool *deleted, bool *created,
                      struct simerr *e)
{
    const char *brev = body_rev(w->body);
    int rc;

    *base = NULL;
    *body = w->body;
    *deleted = false;
    *created = false;
    switch (w->op) {
    case STORE_POST: {
        json_t *idv = json_object_get(w->body, "id");
        int64_t next, n;

        if (idv) {
            if (id_canonical(idv, key, STORE_ID_MAX) < 0)
                return simerr_set(e, -EINVAL, 400,
                                  "id must be a non-empty string or an integer");
            if ((rc = load_current(s, w->res, key, c, e)) < 0)
                return rc;
            if (c->exists)
                return simerr_set(e, -EEXIST, 409, "id %s is already taken", key);
            if (id_is_integer(key, &n)) {
                if ((rc = next_id_get(s, w->res, &next, e)) < 0)
                    return rc;
                if (n >= next && n < INT64_MAX &&
                    (rc = next_id_set(s, w->res, n + 1, e)) < 0)
                    return rc;
            }
        } else {
            if ((rc = next_id_get(s, w->res, &next, e)) < 0)
                return rc;
            for (;;) {
                if (next == INT64_MAX)
                    return simerr_set(e, -ENOSPC, 500, "%s: no integer ids left",
                                      w->res);
                snprintf(key, STORE_ID_MAX, "%" PRId64, next++);
                json_decref(c->doc);
                if ((rc = load_current(s, w->res, key, c, e)) < 0)
                    return rc;
                if (!c->exists)
                    break;
            }
            if ((rc = next_id_set(s, w->res, next, e)) < 0)
                return rc;
        }
        *created = true;
        return 0;
    }
    case STORE_PUT:
        if ((rc = check_body_id(w->body, key, e)) < 0)
            return rc;
        if ((rc = load_current(s, w->res, key, c, e)) < 0)
            return rc;
        if (c->exists && !c->deleted) {
            if (w->if_match && !etag_match(w->if_match, doc_rev(c->doc)))
                return simerr_set(e, -ESTALE, 412, "If-Match does not match %s",
                                  doc_rev(c->doc));
            if (w->rev_param && strcmp(w->rev_param, doc_rev(c->doc)))
                return simerr_set(e, -ESTALE, 412, "rev %s does not match %s",
                                  w->rev_param, doc_rev(c->doc));
            if (brev && strcmp(brev, doc_rev(c->doc)))
                return simerr_set(e, -EEXIST, 409,
                                  "document update conflict: _rev %s is not %s",
                                  brev, doc_rev(c->doc));
            return 0;
        }
        if (w->if_match || w->rev_param)
            return simerr_set(e, -ESTALE, 412, "precondition on missing record %s",
                              key);
        if (brev && (!c->exists || strcmp(brev, doc_rev(c->doc))))
            return simerr_set(e, -EEXIST, 409,
                              "document update conflict: _rev %s on a missing record",
                              brev);
        *created = true;
        return 0;
    case STORE_PATCH:
    case STORE_DELETE:
        if (w->op == STORE_PATCH && (rc = check_body_id(w->body, key, e)) < 0)
            return rc;
        if ((rc = load_current(s, w->res, key, c, e)) < 0)
            return rc;
        if (!c->exists || c->deleted)
            return simerr_set(e, -ENOENT, 404, "%s/%s not found", w->res, key);
        if (w->if_match && !etag_match(w->if_match, doc_rev(c->doc)))
            return simerr_set(e, -ESTALE, 412, "If-Match does not match %s",
                              doc_rev(c->doc));
        if (w->rev_param && strcmp(w->rev_param, doc_rev(c->doc)))
            return simerr_set(e, -ESTALE, 412, "rev %s does not match %s",
                              w->rev_param, doc_rev(c->doc));
        if (w->op == STORE_PATCH && brev && strcmp(brev, doc_rev(c->doc)))
            return simerr_set(e, -EEXIST, 409,
                              "document update conflict: _rev %s is not %s", brev,
                              doc_rev(c->doc));
        *base = c->doc;
        if (w->op == STORE_DELETE) {
            *body = NULL;
            *deleted = true;
        }
        return 0;
    }
    return simerr_set(e, -EINVAL, 400, "unknown operation");
}

int store_write(struct store *s, const struct store_write *w, json_t **out,
                bool *created, struct simerr *e)
{
    struct current c;
    char key[STORE_ID_MAX];
    json_t *base, *idv = NULL, *doc = NULL;
    const json_t *body;
    bool deleted;
    uint64_t seq0;
    int64_t ms0, ms;
    int rc;

    *out = NULL;
    memset(&c, 0, sizeof(c));
    key[0] = '\0';
    if (w->key)
        snprintf(key, sizeof(key), "%s", w->key);
    pthread_mutex_lock(&s->mu);
    seq0 = s->seq;
    ms0 = s->last_ms;
    if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        rc = db_fail(s, e, "begin");
        goto out;
    }
    rc = plan_write(s, w, &c, key, &base, &body, &deleted, created, e);
    if (rc < 0)
        goto rollback;
    ms = clock_next(s);
    s->seq++;
    idv = id_value(key, body, c.doc);
    doc = idv ? build_doc(idv, base, body, ms, c.rev + 1, deleted) : NULL;
    if (!doc) {
        rc = simerr_set(e, -ENOMEM, 500, "out of memory");
        goto rollback;
    }
    if ((rc = upsert(s, w->res, key, ms, s->seq, c.rev + 1, deleted, doc, e)) < 0 ||
        (rc = meta_set(s, "seq", (int64_t)s->seq, e)) < 0 ||
        (rc = meta_set(s, "last_ms", s->last_ms, e)) < 0)
        goto rollback;
    if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        rc = db_fail(s, e, "commit");
        goto rollback;
    }
    *out = doc;
    doc = NULL;
    rc = 0;
    goto out;
rollback:
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    s->seq = seq0;
    s->last_ms = ms0;
out:
    reset_all(s);
    pthread_mutex_unlock(&s->mu);
    json_decref(c.doc);
    json_decref(idv);
    json_decref(doc);
    return rc;
}

int store_get(struct store *s, const char *res, const char *key, json_t **out,
              struct simerr *e)
{
    struct current c;
    int rc;

    *out = NULL;
    pthread_mutex_lock(&s->mu);
    rc = load_current(s, res, key, &c, e);
    reset_all(s);
    pthread_mutex_unlock(&s->mu);
    if (rc < 0)
        return rc;
    if (!c.exists || c.deleted) {
        json_decref(c.doc);
        return simerr_set(e, -ENOENT, 404, "%s/%s not found", res, key);
    }
    *out = c.doc;
    return 0;
}

static int append_doc(json_t *arr, const unsigned char *text, struct simerr *e)
{
    json_t *doc = json_loads((const char *)text, 0, NULL);

    if (!doc)
        return simerr_set(e, -EIO, 500, "stored record is not json");
    json_array_append_new(arr, doc);
    return 0;
}

static int feed_locked(struct store *s, const struct store_feed_q *q,
                       json_t *page, struct simerr *e)
{
    sqlite3_stmt *st = stmt(s, ST_FEED);
    json_t *window = json_array(), *before = json_array();
    int64_t first_ms = INT64_MAX;
    char first_sk[STORE_ID_MAX + 32] = "";
    long cut;
    int rc, dup = q->dup;
    size_t i;

    if (!window || !before) {
        rc = simerr_set(e, -ENOMEM, 500, "out of memory");
        goto out;
    }
    sqlite3_bind_text(st, 1, q->res, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, q->has_since ? q->since_ms : INT64_MIN);
    sqlite3_bind_int64(st, 3, q->limit);
    sqlite3_bind_int64(st, 4, q->offset);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (json_array_size(window) == 0) {
            first_ms = sqlite3_column_int64(st, 0);
            snprintf(first_sk, sizeof(first_sk), "%s",
                     (const char *)sqlite3_column_text(st, 1));
        }
        if ((rc = append_doc(window, sqlite3_column_text(st, 2), e)) < 0)
            goto out;
    }
    if (rc != SQLITE_DONE) {
        rc = db_fail(s, e, "feed");
        goto out;
    }
    if (dup > q->limit - 1)
        dup = (int)(q->limit - 1);
    if (dup > 0) {
        /* The records just before this page: the client saw them already. */
        st = stmt(s, ST_BEFORE);
        sqlite3_bind_text(st, 1, q->res, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, first_ms);
        sqlite3_bind_text(st, 3, first_ms == INT64_MAX ? "\x7f" : first_sk, -1,
                          SQLITE_STATIC);
        sqlite3_bind_int(st, 4, dup);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
            if ((rc = append_doc(before, sqlite3_column_text(st, 0), e)) < 0)
                goto out;
        if (rc != SQLITE_DONE) {
            rc = db_fail(s, e, "feed before");
            goto out;
        }
    }
    for (i = json_array_size(before); i > 0; i--)
        json_array_append(page, json_array_get(before, i - 1));
    cut = q->limit - (long)json_array_size(before);
    for (i = 0; i < json_array_size(window) && (long)i < cut; i++)
        json_array_append(page, json_array_get(window, i));
    rc = 0;
out:
    json_decref(window);
    json_decref(before);
    return rc;
}

int store_feed(struct store *s, const struct store_feed_q *q, json_t **out,
               struct simerr *e)
{
    json_t *page = json_array();
    int rc;

    *out = NULL;
    if (!page)
        return simerr_set(e, -ENOMEM, 500, "out of memory");
    pthread_mutex_lock(&s->mu);
    rc = feed_locked(s, q, page, e);
    reset_all(s);
    pthread_mutex_unlock(&s->mu);
    if (rc < 0) {
        json_decref(page);
        return rc;
    }
    *out = page;
    return 0;
}

static json_t *change_entry(sqlite3_stmt *st, bool docs, struct simerr *e)
{
    char seqtxt[SEQ_LEN];
    json_t *doc = json_loads((const char *)sqlite3_column_text(st, 4), 0, NULL);
    json_t *entry;

    if (!doc) {
        simerr_set(e, -EIO, 500, "stored record is not json");
        return NULL;
    }
    store_seq_format((uint64_t)sqlite3_column_int64(st, 0), seqtxt);
    entry = json_pack("{s:s,s:s,s:s,s:b,s:[{s:s}]}", "seq", seqtxt, "id",
                      (const char *)sqlite3_column_text(st, 2), "resource",
                      (const char *)sqlite3_column_text(st, 1), "deleted",
                      sqlite3_column_int(st, 3) != 0, "changes", "rev",
                      doc_rev(doc));
    if (entry && docs)
        json_object_set(entry, "doc", doc);
    json_decref(doc);
    if (!entry)
        simerr_set(e, -ENOMEM, 500, "out of memory");
    return entry;
}

static int changes_locked(struct store *s, const struct store_changes_q *q,
                          json_t *results, char *last_seq, struct simerr *e)
{
    uint64_t since = q->since_now ? s->seq : q->since;
    json_t *window = json_array(), *before = json_array(), *entry;
    sqlite3_stmt *st;
    int rc, dup = q->dup;
    long cut;
    size_t i;

    if (!window || !before) {
        rc = simerr_set(e, -ENOMEM, 500, "out of memory");
        goto out;
    }
    st = stmt(s, ST_CHANGES);
    sqlite3_bind_int64(st, 1, (sqlite3_int64)since);
    if (q->res)
        sqlite3_bind_text(st, 2, q->res, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, q->limit);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (!(entry = change_entry(st, q->docs, e))) {
            rc = -EIO;
            goto out;
        }
        json_array_append_new(window, entry);
    }
    if (rc != SQLITE_DONE) {
        rc = db_fail(s, e, "changes");
        goto out;
    }
    if (dup > q->limit - 1)
        dup = (int)(q->limit - 1);
    if (dup > 0) {
        st = stmt(s, ST_CHANGES_BEFORE);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)since);
        if (q->res)
            sqlite3_bind_text(st, 2, q->res, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, dup);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            if (!(entry = change_entry(st, q->docs, e))) {
                rc = -EIO;
                goto out;
            }
            json_array_append_new(before, entry);
        }
        if (rc != SQLITE_DONE) {
            rc = db_fail(s, e, "changes before");
            goto out;
        }
    }
    for (i = json_array_size(before); i > 0; i--)
        json_array_append(results, json_array_get(before, i - 1));
    cut = q->limit - (long)json_array_size(before);
    for (i = 0; i < json_array_size(window) && (long)i < cut; i++)
        json_array_append(results, json_array_get(window, i));
    /* A short page means caught up: the next page starts at the newest seq. */
    if ((long)json_array_size(window) < q->limit && (long)json_array_size(window) <= cut)
        store_seq_format(s->seq > since ? s->seq : since, last_seq);
    else if (json_array_size(results) > 0)
        snprintf(last_seq, SEQ_LEN, "%s",
                 json_string_value(json_object_get(
                     json_array_get(results, json_array_size(results) - 1), "seq")));
    else
        store_seq_format(since, last_seq);
    rc = 0;
out:
    json_decref(window);
    json_decref(before);
    return rc;
}

int store_changes(struct store *s, const struct store_changes_q *q,
                  json_t **out, struct simerr *e)
{
    json_t *results = json_array();
    char last_seq[SEQ_LEN];
    int rc;

    *out = NULL;
    if (!results)
        return simerr_set(e, -ENOMEM, 500, "out of memory");
    pthread_mutex_lock(&s->mu);
    rc = changes_locked(s, q, results, last_seq, e);
    reset_all(s);
    pthread_mutex_unlock(&s->mu);
    if (rc < 0) {
        json_decref(results);
        return rc;
    }
    *out = json_pack("{s:o,s:s}", "results", results, "last_seq", last_seq);
    if (!*out)
        return simerr_set(e, -ENOMEM, 500, "out of memory");
    return 0;
}

int store_dump(struct store *s, const char *res, json_t **out, struct simerr *e)
{
    json_t *arr = json_array();
    sqlite3_stmt *st;
    int rc;

    *out = NULL;
    if (!arr)
        return simerr_set(e, -ENOMEM, 500, "out of memory");
    pthread_mutex_lock(&s->mu);
    st = stmt(s, ST_DUMP);
    sqlite3_bind_text(st, 1, res, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if ((rc = append_doc(arr, sqlite3_column_text(st, 0), e)) < 0)
            break;
    if (rc == SQLITE_DONE)
        rc = 0;
    else if (rc > 0)
        rc = db_fail(s, e, "dump");
    sqlite3_reset(st);
    pthread_mutex_unlock(&s->mu);
    if (rc < 0) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

int store_reset(struct store *s, struct simerr *e)
{
    int rc = 0;

    pthread_mutex_lock(&s->mu);
    if (sqlite3_exec(s->db,
                     "BEGIN IMMEDIATE; DELETE FROM records; DELETE FROM ids;"
                     "DELETE FROM meta WHERE k = 'seq'; COMMIT;",
                     NULL, NULL, NULL) != SQLITE_OK) {
        rc = db_fail(s, e, "reset");
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    } else {
        s->seq = 0;
        s->offset_ms = 0;
        s->resolution_ms = 1;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}
