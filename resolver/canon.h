/* canon.h: the canonical form of a record's mapped fields and its hash,
 * shared by echo detection, the shadow and reconciliation: field names in
 * byte order, values as text (null distinct from ""), so both sides of a
 * mapping hash identically. */
#ifndef TANDEM_CANON_H
#define TANDEM_CANON_H

#include <jansson.h>

#define CANON_HASH_HEX 32

/* Hashes the JSON object fields (values strings or null; other JSON types
 * use their compact JSON text) into out (CANON_HASH_HEX hex digits + NUL). */
void canon_hash(const json_t *fields, char out[CANON_HASH_HEX + 1]);

struct flatobj;

/* The same hash as canon_hash() of the jansson parse of the text o was
 * scanned from; o must hold a successful flatobj_scan(). Allocates nothing. */
void canon_hash_flat(const struct flatobj *o, char out[CANON_HASH_HEX + 1]);

#endif
