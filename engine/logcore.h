/* Logging's C side: an engine service under every native module. The log
 * module (mod_log.c) is its Lua binding; modules and the engine log through
 * bgrun_log. Lines go to stderr as text (coloured on a terminal) or one JSON
 * object a line, with every registered secret (redact.h) masked on every
 * path. The settings live in the Lua state's registry. */
#ifndef BGRUN_LOGCORE_H
#define BGRUN_LOGCORE_H

#include <stddef.h>
#include <stdio.h>

#include <lua.h>

enum { BGRUN_LOG_DEBUG, BGRUN_LOG_INFO, BGRUN_LOG_WARN, BGRUN_LOG_ERROR };
/* "debug", "info", "warn", "error", NULL: indexed by the enum above */
extern const char *const bgrun_log_level_names[];

/* Logs through the log module (level "debug"|"info"|"warn"|"error").
 * fields_idx is a table index or 0. Never raises for output errors. */
void bgrun_log(lua_State *L, const char *level, const char *message, int fields_idx);
/* The same with a BGRUN_LOG_* level and a message of len bytes. */
void bgrun_log_emit(lua_State *L, int level, const char *msg, size_t len, int fields_idx);

/* How log lines are printed now: 0 info is not printed (-q), 1 text,
 * 2 JSON; *color: text is coloured. Never raises but for memory. */
int bgrun_log_mode(lua_State *L, int *color);
/* Colour on fd: a terminal, NO_COLOR unset or empty, TERM not "dumb". */
int bgrun_color_wanted(int fd);

/* Settings (log.configure): JSON lines or text, the lowest level printed,
 * colour (refused under NO_COLOR or TERM=dumb whatever on says). */
void bgrun_log_set_json(lua_State *L, int on);
void bgrun_log_set_level(lua_State *L, int level);
void bgrun_log_set_color(lua_State *L, int on);
int bgrun_log_json(lua_State *L);
int bgrun_log_level(lua_State *L);

/* The step named on every line: the value at idx (a string, or nil for
 * none); bgrun_log_step returns it (kept alive by the registry) or NULL. */
void bgrun_log_set_step(lua_State *L, int idx);
const char *bgrun_log_step(lua_State *L);

/* fn runs before every log line is written (progress.c erases its terminal
 * line): a callback, so logging depends on nothing above it. */
void bgrun_log_before_line(void (*fn)(void));

/* Where lines go (stderr unless a unit test says otherwise). */
void bgrun_log_set_output(lua_State *L, FILE *out);

#endif
