/* log.h: one structured event per line on stderr (JSON or text). */
#ifndef TANDEM_LOG_H
#define TANDEM_LOG_H

#include <stdio.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_FORMAT_JSON = 0, LOG_FORMAT_TEXT };

/* Configures the process logger: minimum level, format, output stream
 * (stderr when NULL) and the pipeline name added to every line (may be
 * NULL). Safe to call again, e.g. after the config is loaded. */
void log_setup(enum log_level min, enum log_format fmt, FILE *out,
               const char *pipeline);

/* Registers a secret value: any later log field or message containing it
 * prints "***" in its place. Values shorter than 3 bytes are ignored
 * (they would mask innocent text). The string is copied. */
void log_add_secret(const char *secret);

/* Replaces every registered secret in s (in place, NUL-terminated,
 * never grows) with "***". Used for text shown outside logs too. */
void log_redact(char *s, size_t cap);

/* Parses "debug|info|warn|error"; returns -1 for anything else. */
int log_level_parse(const char *s);

/* Emits one event. The variadic part is key/value string pairs ended by
 * NULL: log_event(LOG_ERROR, "pgsrc", "stream ended", "slot", s, NULL).
 * A NULL value prints as JSON null. */
void log_event(enum log_level lvl, const char *mod, const char *msg, ...)
    __attribute__((sentinel));

#define log_debug(mod, ...) log_event(LOG_DEBUG, mod, __VA_ARGS__, NULL)
#define log_info(mod, ...)  log_event(LOG_INFO, mod, __VA_ARGS__, NULL)
#define log_warn(mod, ...)  log_event(LOG_WARN, mod, __VA_ARGS__, NULL)
#define log_error(mod, ...) log_event(LOG_ERROR, mod, __VA_ARGS__, NULL)

/* True when events of lvl would be printed (to skip costly formatting). */
int log_enabled(enum log_level lvl);

#endif
