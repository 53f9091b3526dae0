/* fuzz_pgoutput.c: libFuzzer target for the pgoutput decoder and the
 * replication frame parser.
 *
 * The input is a sequence of records, each a 2-byte big-endian length and
 * that many bytes (the last one may be cut short), decoded in order by one
 * decoder so Relation state carries over between records:
 *   'w' / 'k'  a CopyData payload for pgo_parse_frame; a 'w' payload then
 *              goes to pgo_decode;
 *   '#'        the rest is LSN text for pgo_lsn_parse (round-trip check);
 *   empty      pgo_decoder_reset (a reconnect);
 *   otherwise  a pgoutput message for pgo_decode.
 * Each record is copied into an exact-size buffer so ASan sees over-reads;
 * every pointer in a decoded message is read back. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "connectors/pg/pgoutput.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

static volatile unsigned sink;

static void touch_bytes(const void *p, size_t n, const uint8_t *buf,
                        size_t len)
{
    const uint8_t *b = p;

    if (n == 0)
        return;
    CHECK(b >= buf && b + n <= buf + len);
    for (size_t i = 0; i < n; i++)
        sink += b[i];
}

static void touch_str(const char *s, const uint8_t *buf, size_t len)
{
    touch_bytes(s, strlen(s) + 1, buf, len);
}

static void check_tuple(const struct pgo_tuple *t,
                        const struct pgo_relation *rel, const uint8_t *buf,
                        size_t len)
{
    if (t->ncols == 0)
        return;
    CHECK(t->ncols == rel->ncols);
    for (int i = 0; i < t->ncols; i++) {
        const struct pgo_value *v = &t->vals[i];

        CHECK(v->kind == 'n' || v->kind == 'u' || v->kind == 't' ||
              v->kind == 'b');
        if (v->kind == 'n' || v->kind == 'u')
            CHECK(v->data == NULL && v->len == 0);
        else
            touch_bytes(v->data, v->len, buf, len);
    }
}

static void check_msg(struct pgo_decoder *d, const struct pgo_msg *m,
                      const uint8_t *buf, size_t len)
{
    const struct pgo_relation *r;

    CHECK(m->type == (char)buf[0]);
    switch (m->type) {
    case 'O':
        touch_str(m->u.origin.name, buf, len);
        break;
    case 'Y':
        touch_str(m->u.type.nspname, buf, len);
        touch_str(m->u.type.typname, buf, len);
        break;
    case 'R':
        r = m->u.relation;
        CHECK(r == pgo_relation_get(d, r->oid));
        CHECK(r->ncols >= 0 && r->ncols <= PGO_MAX_COLS);
        sink += (unsigned)strlen(r->nspname) + (unsigned)strlen(r->relname);
        for (int i = 0; i < r->ncols; i++)
            sink += (unsigned)strlen(r->cols[i].name) + r->cols[i].flags;
        break;
    case 'I':
    case 'U':
    case 'D':
        r = m->u.change.rel;
        CHECK(r != NULL && r == pgo_relation_get(d, m->u.change.relid));
        CHECK(m->type != 'I' || m->u.change.old_kind == 0);
        CHECK(m->type != 'D' || m->u.change.old_kind != 0);
        CHECK((m->u.change.old_kind == 0) == (m->u.change.old.ncols == 0) ||
              r->ncols == 0);
        check_tuple(&m->u.change.old, r, buf, len);
        check_tuple(&m->u.change.new, r, buf, len);
        break;
    case 'T':
        for (int i = 0; i < m->u.truncate.nrels; i++)
            CHECK(pgo_relation_get(d, m->u.truncate.relids[i]) != NULL);
        break;
    case 'M':
        touch_str(m->u.message.prefix, buf, len);
        touch_bytes(m->u.message.content, m->u.message.len, buf, len);
        break;
    }
}

static void decode(struct pgo_decoder *d, const uint8_t *buf, size_t len,
                   uint64_t lsn)
{
    struct pgo_msg m;
    struct err e = { 0 };
    int rc = pgo_decode(d, buf, len, lsn, &m, &e);

    if (rc == 0) {
        check_msg(d, &m, buf, len);
    } else {
        CHECK(rc == -EPROTO || rc == -ENOMEM);
        CHECK(e.code == rc && strncmp(e.msg, "pgoutput: ", 10) == 0);
        CHECK(m.type == 0);
    }
}

static void lsn_text(const uint8_t *buf, size_t len)
{
    char *s = malloc(len + 1), out[PGO_LSN_STRLEN];
    uint64_t v, again;

    if (s == NULL)
        return;
    memcpy(s, buf, len);
    s[len] = '\0';
    if (pgo_lsn_parse(s, &v) == 0) {
        pgo_lsn_format(v, out);
        CHECK(pgo_lsn_parse(out, &again) == 0 && again == v);
    }
    free(s);
}

static void record(struct pgo_decoder *d, const uint8_t *buf, size_t len)
{
    struct pgo_frame fr;
    struct err e = { 0 };
    uint8_t status[PGO_STATUS_LEN];

    if (len == 0) {
        pgo_decoder_reset(d);
        return;
    }
    switch (buf[0]) {
    case '#':
        lsn_text(buf + 1, len - 1);
        break;
    case 'w':
    case 'k':
        if (pgo_parse_frame(buf, len, &fr, &e) != 0) {
            CHECK(e.code == -EPROTO && fr.kind == 0);
            break;
        }
        CHECK(fr.kind == (char)buf[0]);
        if (fr.kind == 'k') {
            CHECK(len == 18 && fr.payload == NULL);
            CHECK(pgo_build_status(status, fr.end_lsn, fr.end_lsn,
                                   fr.end_lsn, fr.send_time,
                                   fr.reply_requested) == PGO_STATUS_LEN);
            break;
        }
        CHECK(fr.payload == buf + 25 && fr.payload_len == len - 25);
        decode(d, fr.payload, fr.payload_len, fr.start_lsn);
        break;
    default:
        decode(d, buf, len, 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pgo_decoder *d;

    if (pgo_decoder_new(&d) != 0)
        return 0;
    while (size > 0) {
        size_t len = size >= 2 ? (size_t)data[0] << 8 | data[1] : 0;
        size_t skip = size >= 2 ? 2 : 1;
        uint8_t *copy;

        if (len > size - skip)
            len = size - skip;
        copy = malloc(len ? len : 1);
        if (copy == NULL)
            break;
        memcpy(copy, data + skip, len);
        record(d, copy, len);
        free(copy);
        data += skip + len;
        size -= skip + len;
    }
    pgo_decoder_free(d);
    return 0;
}
