/* Shared by the libFuzzer harnesses in tests/fuzz: an engine Lua state
 * (every native module linked in, the stdlib embedded) for the parsers
 * written in Lua, and small helpers for the C ones. */
#ifndef BGRUN_FUZZ_H
#define BGRUN_FUZZ_H
#include <stddef.h>
#include <stdint.h>

#include <lua.h>

/* The engine's Lua state, made on the first call and kept for the whole
 * run: bgrun_open_all, the lazy modules linked in directly, logging quiet. */
lua_State *fuzz_lua(void);

/* Loads chunk (Lua source returning a function) once and keeps it; later
 * calls return the same registry reference. */
int fuzz_lua_harness(lua_State *L, const char *name, const char *chunk);

/* Calls the harness function with the input as one string argument. A
 * Lua error is a finding: it is printed with its traceback and the run
 * aborts (libFuzzer records the input as a crash). */
void fuzz_lua_run(lua_State *L, int ref, const uint8_t *data, size_t size);

/* A private scratch directory for the run, made once:
 * ${TMPDIR:-/tmp}/bgrun-fuzz-NAME-XXXXXX (mkdtemp), removed with all it
 * holds when the process exits normally (a crash leaves it to look at). */
const char *fuzz_scratch(const char *name);

/* A NUL-terminated copy of the input (free it). */
char *fuzz_strdup(const uint8_t *data, size_t size);

/* Aborts with a message: an invariant the harness checks failed. */
void fuzz_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

#endif
