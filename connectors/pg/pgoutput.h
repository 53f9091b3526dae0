/* pgoutput.h: decoder for pgoutput protocol version 1 and the streaming
 * replication frames around it (see shared/pgoutput/README.md).
 *
 * Every read goes through a bounds-checked cursor: malformed or truncated
 * input returns -EPROTO with a message naming the message type and the LSN
 * given by the caller, never a crash or an over-read. */
#ifndef TANDEM_PGOUTPUT_H
#define TANDEM_PGOUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../daemon/err.h"

/* Microseconds between the Unix epoch and PostgreSQL's (2000-01-01 UTC). */
#define PGO_EPOCH_OFFSET_US INT64_C(946684800000000)

/* "X/Y" text form of an LSN; buf needs PGO_LSN_STRLEN bytes. */
#define PGO_LSN_STRLEN 20
void pgo_lsn_format(uint64_t lsn, char *buf);
/* Parses "X/Y" (hex halves); -EINVAL on anything else. */
int pgo_lsn_parse(const char *s, uint64_t *out);

/* ---- replication frames (CopyData payloads) ---- */

struct pgo_frame {
    char kind;                  /* 'w' XLogData or 'k' keepalive */
    uint64_t start_lsn;         /* w */
    uint64_t end_lsn;           /* w: end; k: server WAL end */
    int64_t send_time;          /* µs since the PostgreSQL epoch */
    bool reply_requested;       /* k */
    const uint8_t *payload;     /* w: the pgoutput message (points into buf) */
    size_t payload_len;
};

/* Parses one CopyData payload from the server. Other kinds: -EPROTO.
 * A 'w' must carry a non-empty payload; a 'k' must be exactly 18 bytes. */
int pgo_parse_frame(const uint8_t *buf, size_t len, struct pgo_frame *out,
                    struct err *e);

/* Writes a 34-byte standby status update ('r') into out; returns 34.
 * now is µs since the PostgreSQL epoch. */
#define PGO_STATUS_LEN 34
size_t pgo_build_status(uint8_t out[34], uint64_t written, uint64_t flushed,
                        uint64_t applied, int64_t now, bool reply);

/* ---- pgoutput messages ---- */

struct pgo_column {
    uint8_t flags;              /* 1 = part of the replica identity */
    char *name;
    uint32_t type_oid;
    int32_t typmod;
};

struct pgo_relation {
    uint32_t oid;
    char *nspname;              /* as sent: "" for pg_catalog */
    char *relname;
    char replident;             /* 'd', 'f', 'i', 'n' */
    int ncols;
    struct pgo_column *cols;
};

/* A column value inside a tuple; data points into the decoded buffer. */
struct pgo_value {
    char kind;                  /* 'n' NULL, 'u' unchanged TOAST, 't' text, 'b' binary */
    const char *data;           /* not NUL-terminated */
    uint32_t len;
};

struct pgo_tuple {
    int ncols;
    struct pgo_value *vals;     /* owned by the decoder, valid until next decode */
};

struct pgo_msg {
    char type;                  /* 'B','C','O','R','Y','I','U','D','T','M' */
    union {
        struct { uint64_t final_lsn; int64_t commit_ts; uint32_t xid; } begin;
        struct { uint8_t flags; uint64_t commit_lsn, end_lsn; int64_t commit_ts; } commit;
        struct { uint64_t lsn; const char *name; } origin;
        /* 'R': the relation as now stored in the decoder's map */
        const struct pgo_relation *relation;
        struct { uint32_t oid; const char *nspname, *typname; } type;
        /* 'I','U','D'. old_kind is 'K', 'O' or 0 (no old tuple). For 'D'
         * only old is set; for 'I' only new. rel is NULL when no Relation
         * message for relid was seen: that is an error (-EPROTO). */
        struct {
            uint32_t relid;
            const struct pgo_relation *rel;
            char old_kind;
            struct pgo_tuple old, new;
        } change;
        /* flags: 1 CASCADE, 2 RESTART IDENTITY. Every relid has a stored
         * Relation (else -EPROTO); relids is decoder-owned. */
        struct { int nrels; uint8_t flags; const uint32_t *relids; } truncate;
        struct { uint8_t flags; uint64_t lsn; const char *prefix;
                 const char *content; uint32_t len; } message;
    } u;
};

/* Largest column count accepted (PostgreSQL's MaxTupleAttributeNumber). */
#define PGO_MAX_COLS 1664

/* "Insert", "Begin", ... for a message type byte, or NULL if unknown. */
const char *pgo_msg_name(char type);

struct pgo_decoder;

/* -ENOMEM if out of memory. */
int pgo_decoder_new(struct pgo_decoder **out);
void pgo_decoder_free(struct pgo_decoder *d);     /* accepts NULL */

/* Forgets every Relation (a new connection re-sends them). */
void pgo_decoder_reset(struct pgo_decoder *d);

/* Decodes one pgoutput message of len bytes. lsn is only used in error
 * messages. Relation messages replace the stored layout of their OID.
 * Pointers in *out refer to buf or to decoder-owned memory and stay valid
 * until the next pgo_decode or pgo_decoder_reset call. A change whose
 * tuple column count differs from its Relation's is -EPROTO. */
int pgo_decode(struct pgo_decoder *d, const uint8_t *buf, size_t len,
               uint64_t lsn, struct pgo_msg *out, struct err *e);

/* The stored layout of relation oid, or NULL. */
const struct pgo_relation *pgo_relation_get(const struct pgo_decoder *d,
                                            uint32_t oid);

#endif
