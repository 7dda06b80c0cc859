/* The secrets registry: an engine service under every module and under
 * logging. Each Lua state keeps one redactor (redact.h) in its registry;
 * modules register what they learn is secret (passwords, tokens, keys) and
 * redact every text they raise or print. */
#ifndef BGRUN_SECRETS_H
#define BGRUN_SECRETS_H

#include <stddef.h>

#include <lua.h>

struct redactor;

/* Never print value anywhere from now on. Raises only for memory. */
void bgrun_secret(lua_State *L, const char *value, size_t len);
/* Pushes s with every registered secret masked. Raises only for memory. */
void bgrun_push_redacted(lua_State *L, const char *s, size_t len);
/* The state's redactor (created empty on first use), for C code that
 * redacts into its own buffer with redactor_apply. */
const struct redactor *bgrun_secrets(lua_State *L);

#endif
