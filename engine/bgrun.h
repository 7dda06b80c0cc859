/* What the engine offers its native modules: structured errors, secrets,
 * the dry-run flag, interrupts, JSON <-> Lua conversion and the embedded
 * Lua sources. Each native module includes this and exports one luaopen_*. */
#ifndef BGRUN_H
#define BGRUN_H

#include <stddef.h>

#include <jansson.h>
#include <lua.h>
#include <lauxlib.h>

#define BGRUN_VERSION "0.1.0"

/* Exit codes: the contract in PRODUCT.md. */
enum {
	BGRUN_EXIT_OK = 0,
	BGRUN_EXIT_FAILED = 1,
	BGRUN_EXIT_USAGE = 2,
	BGRUN_EXIT_COMPENSATION_FAILED = 3,
	BGRUN_EXIT_INTERRUPTED = 130,
};

/* ---- structured errors (core.c) ----
 * bgrun_error_new pushes a table {module=, op=, reason=, message=} carrying
 * the "bgrun.error" metatable; the caller may add fields (code, details...)
 * and then calls bgrun_error_throw. The message is redacted. reason may be
 * NULL. Release every C resource before throwing. */
void bgrun_error_new(lua_State *L, const char *module, const char *op,
                     const char *reason, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
int bgrun_error_throw(lua_State *L) __attribute__((noreturn));
/* Sets t.code (integer) on the error table at the top of the stack. */
void bgrun_error_set_int(lua_State *L, const char *field, lua_Integer v);
void bgrun_error_set_str(lua_State *L, const char *field, const char *v);

/* Raises a playbook mistake for a key of the options table at idx that is
 * not in known (NULL-terminated): "bad argument #N to 'f' (unknown option
 * 'x')". Nothing to check when the argument is absent; not a table raises. */
void bgrun_check_options(lua_State *L, int idx, const char *const known[]);

/* ---- helpers (luahelp.c) ---- */

/* A temporary for one C call: pushes a zeroed block of size bytes as a
 * userdata marked to-be-closed (lua_toclose), so release(p) runs exactly
 * once when the calling C function returns, raises, or closes the slot
 * (bgrun_box_close, or bgrun_box_settop below it). Never lua_remove/
 * lua_replace the slot, nor lua_settop/lua_pop below it: Lua 5.4.4's
 * lua_settop can write to a moved stack while closing. Closing calls
 * __close, where a pending interrupt's hook raises before the release
 * runs (it then runs at collection): on the paths that do not raise,
 * release what must go at once (a transfer of a pool about to close)
 * yourself first, with a release that is harmless twice. The box is for
 * C resources a call holds (a PGresult, a json_t *, buffers); handles
 * that outlive the call are classes. */
typedef void (*bgrun_release_fn)(void *p);
void *bgrun_box(lua_State *L, size_t size, bgrun_release_fn release);
void bgrun_box_close(lua_State *L, int idx);
/* lua_settop(L, idx), closing the boxes above idx first. */
void bgrun_box_settop(lua_State *L, int idx);

/* Registers metatable name (as Lua's liolib.c createmeta): metamethods
 * (__gc, __close, __tostring...) set on it, methods in its __index.
 * Either array may be NULL. Leaves the stack as it was. */
void bgrun_newclass(lua_State *L, const char *name, const luaL_Reg *methods, const luaL_Reg *metamethods);

/* Option readers: opts is the table at idx (absent or nil: every option
 * takes its default); field absent or nil: dflt. A value of another type
 * raises the one message form
 *   bad argument #N to 'f' (option 'field' must be a string, got number)
 * Strings are anchored by the options table. bgrun_opt_table pushes the
 * table and returns 1, or pushes nothing and returns 0. Unknown keys:
 * bgrun_check_options. */
const char *bgrun_opt_string(lua_State *L, int idx, const char *field, const char *dflt);
lua_Number bgrun_opt_number(lua_State *L, int idx, const char *field, lua_Number dflt);
lua_Integer bgrun_opt_integer(lua_State *L, int idx, const char *field, lua_Integer dflt);
int bgrun_opt_boolean(lua_State *L, int idx, const char *field, int dflt);
int bgrun_opt_table(lua_State *L, int idx, const char *field);
/* opts[field], a positive number of seconds, in milliseconds (at least 1);
 * dflt when absent. Anything else raises "WHO: option 'F' must be a
 * positive number of seconds" (WHO names the call, e.g. "s3.bucket"). */
long bgrun_opt_ms(lua_State *L, int idx, const char *field, long dflt, const char *who);
/* Raises the message above for the value at the top of the stack
 * (expected: "a string", "a positive number", ...). */
int bgrun_opt_error(lua_State *L, int idx, const char *field, const char *expected) __attribute__((noreturn));

/* ---- interrupts (the flag is interrupt.c's, the signals core.c's) ----
 * SIGINT/SIGTERM set a flag. Blocking C calls poll bgrun_interrupted() and
 * raise bgrun_throw_interrupted() after releasing what they hold. */
int bgrun_interrupted(void);
int bgrun_throw_interrupted(lua_State *L, const char *module, const char *op)
	__attribute__((noreturn));

/* ---- dry run (core.c) ---- */
int bgrun_dry_run(lua_State *L);

/* ---- secrets (secrets.h: bgrun_secret, bgrun_push_redacted) and log
 * output (logcore.h: bgrun_log, bgrun_log_mode, bgrun_color_wanted) ---- */
#include "logcore.h"
#include "secrets.h"

/* ---- JSON <-> Lua: jsonconv.h (bgrun_json_push, bgrun_json_from_lua) ---- */
#include "jsonconv.h"

/* ---- embedded Lua sources (generated build/embedded.c) ---- */
struct bgrun_embedded {
	const char *name;    /* module name: file name without .lua */
	const char *path;    /* source path in the repository, for messages */
	const unsigned char *data;
	size_t len;
};
extern const struct bgrun_embedded bgrun_embedded[];

/* ---- byte sinks (streamed archives and uploads) ----
 * A userdata whose metatable has the field __bgrun_sink = true begins with
 * this struct, so one module streams into another's object from C without
 * a Lua call per chunk (mod_archive.c's writer into mod_s3.c's upload).
 * Every function returns 0, 1 when interrupted, or -1 with a message in
 * err (and reason, code describing the failure); none of them raises. A
 * progress hook per stream belongs in write: it sees every byte once. */
typedef struct bgrun_sink {
	/* appends n bytes */
	int (*write)(struct bgrun_sink *s, lua_State *L, const char *p, size_t n, char *err, size_t errlen);
	/* the n bytes from offset off on will be overwritten by patch: keep
	 * them until then (a tar header written before its size is known) */
	void (*hold)(struct bgrun_sink *s, long long off, size_t n);
	/* overwrites the held bytes at off and releases them */
	int (*patch)(struct bgrun_sink *s, lua_State *L, long long off, const char *p, size_t n, char *err,
	             size_t errlen);
	/* moves the sink's own bytes on while the caller waits up to
	 * timeout_ms for one of fds (nfds of them) to be readable */
	int (*wait)(struct bgrun_sink *s, lua_State *L, const int *fds, int nfds, int timeout_ms, char *err,
	            size_t errlen);
	const char *reason; /* of the last failure: "InternalError", "IOError", ... */
	long code;          /* HTTP status or curl code of the last failure, or 0 */
} bgrun_sink;
#define BGRUN_SINK_FIELD "__bgrun_sink"

/* A byte source the same way (mod_s3.c's download read by mod_archive.c's
 * scan): read gives up to n bytes, *got = 0 at the end. */
typedef struct bgrun_source {
	int (*read)(struct bgrun_source *s, lua_State *L, char *p, size_t n, size_t *got, char *err, size_t errlen);
	const char *reason;
	long code;
} bgrun_source;
#define BGRUN_SOURCE_FIELD "__bgrun_source"

/* ---- module openers ---- */
int luaopen_bgrun_core(lua_State *L);
int luaopen_log(lua_State *L);
int luaopen_json(lua_State *L);
int luaopen_proc(lua_State *L);
int luaopen_k8s(lua_State *L);
int luaopen_postgres(lua_State *L);
int luaopen_digest(lua_State *L);
int luaopen_http(lua_State *L);
int luaopen_yaml(lua_State *L);
int luaopen_fs(lua_State *L);

/* Installs every native module in package.preload and the searchers for
 * overrides (playbook dir, BGRUN_PATH) and embedded sources. */
void bgrun_open_all(lua_State *L, const char *override_path);
/* Installs the SIGINT/SIGTERM handlers for this state. */
void bgrun_install_signals(lua_State *L);

#endif
