/* shadow.h: per mapping and key, the last version both sides agreed on
 * (SPEC §1), and the key cross-reference between the sides. */
#ifndef TANDEM_SHADOW_H
#define TANDEM_SHADOW_H

#include <stdbool.h>
#include <stdint.h>

#include "state.h"

#define SHADOW_HASH_LEN 64   /* hex SHA-256 or similar, NUL not included */

struct shadow {
    char hash[SHADOW_HASH_LEN + 1]; /* canonical hash of mapped fields */
    char *fields;                   /* JSON object, side-a names; owned */
    int64_t version_a_us;           /* side a's version of this agreement */
    int64_t version_b_us;
    bool tombstone;                 /* the record was deleted at these versions */
};

/* Loads the shadow of (mapping, key). Returns 0 and fills *out (free its
 * fields with shadow_clear), or -ENOENT when there is none. */
int shadow_get(struct state *s, const char *mapping, const char *key,
               struct shadow *out, struct err *e);

/* Like shadow_put, but only side's version ('a' or 'b') is taken from sh;
 * an existing shadow keeps the other side's version (a new one gets 0).
 * One statement where a get and a put would be two (a writer's inserts). */
int shadow_put_side(struct state *s, const char *mapping, const char *key,
                    const struct shadow *sh, char side, struct err *e);

/* Inserts or replaces the shadow of (mapping, key). */
int shadow_put(struct state *s, const char *mapping, const char *key,
               const struct shadow *sh, struct err *e);

void shadow_clear(struct shadow *sh);

/* Side side's version ('a' or 'b'), and the record's: the later of the
 * two (a tombstone's is its delete's, whichever side deleted; G5). */
int64_t shadow_side_version(const struct shadow *sh, char side);
int64_t shadow_version(const struct shadow *sh);

/* Deletes the shadow of (mapping, key) (forgetting it, unlike a
 * tombstone). -ENOENT when there is none. */
int shadow_delete(struct state *s, const char *mapping, const char *key,
                  struct err *e);

/* Calls fn for the shadows of mapping in key order (shorter canonical key
 * texts first, then byte order: integer keys in value order), starting
 * after after_key (NULL = from the start),
 * at most limit (0 = all), so reconcile can walk a mapping in chunks. key
 * and sh (including sh->fields) are borrowed until fn returns: do not
 * shadow_clear them. Nonzero from fn stops the scan and is returned. */
typedef int (*shadow_fn)(const char *key, const struct shadow *sh, void *arg);
int shadow_scan(struct state *s, const char *mapping, const char *after_key,
                int limit, shadow_fn fn, void *arg, struct err *e);

/* Number of shadows of mapping (tombstones included when with_tombstones). */
int shadow_count(struct state *s, const char *mapping, bool with_tombstones,
                 int64_t *out, struct err *e);

/* Key cross-reference where the sides use different ids (REST
 * server-assigned ids). Keys are canonical key texts. Each key pairs with
 * at most one key of the other side: xref_put replaces any pairing either
 * key had. */
int xref_put(struct state *s, const char *mapping, const char *key_a,
             const char *key_b, struct err *e);
/* -ENOENT when unknown; buf receives the other side's key. */
int xref_get_b(struct state *s, const char *mapping, const char *key_a,
               char *buf, size_t cap, struct err *e);
int xref_get_a(struct state *s, const char *mapping, const char *key_b,
               char *buf, size_t cap, struct err *e);
/* Forgets the pairing of key_a. -ENOENT when unknown. */
int xref_delete(struct state *s, const char *mapping, const char *key_a,
                struct err *e);

#endif
