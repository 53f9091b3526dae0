/* change.h: the change record every connector produces and consumes. */
#ifndef TANDEM_CHANGE_H
#define TANDEM_CHANGE_H

#include <stdint.h>

/* TRUNCATE removes every row of the collection: key "[]", fields "{}". */
enum change_op {
    CHANGE_INSERT = 'I', CHANGE_UPDATE = 'U', CHANGE_DELETE = 'D',
    CHANGE_TRUNCATE = 'T'
};

/* One captured change as journaled. Field and key values are JSON text so
 * the journal stays connector-neutral:
 *   key:    canonical key, a JSON array of strings in the mapping's key
 *           order, e.g. ["5"] (numbers compare as text: bigint 5 == "5").
 *   fields: JSON object {side-a field name: text value or null}; only mapped
 *           fields; values keep the source's exact text form.
 *   unchanged: JSON array of field names whose value the source did not
 *           send (PostgreSQL unchanged TOAST); never treat them as NULL.
 *   old_key: the previous key when an update changed it, else NULL.
 * Strings are borrowed; the journal copies what it keeps. */
struct change {
    int64_t seq;            /* journal sequence, set by the journal */
    int64_t txn;            /* journal transaction id, set by the journal */
    const char *endpoint;   /* source endpoint name */
    const char *mapping;
    enum change_op op;
    const char *key;
    const char *old_key;
    const char *fields;
    const char *unchanged;
    /* The source row before an update or delete when the source sent it
     * whole (PostgreSQL REPLICA IDENTITY FULL), as fields; else NULL. */
    const char *old_fields;
    int64_t version_us;     /* source version: commit time or timestamp_field, µs since epoch */
};

#endif
