/* bgrun: parse the command line, then run everything else inside one
 * protected call, as lua.c does. */
#define _POSIX_C_SOURCE 200809L
#include "bgrun.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lualib.h>

static const char usage[] =
	"usage: bgrun [options] PLAYBOOK [name=value ...] [options]\n"
	"       bgrun PLAYBOOK --help    the playbook's description and parameters\n"
	"       bgrun --describe [--json] PLAYBOOK   (--json: machine-readable, see bgrun(1))\n"
	"       bgrun [--yes] [--force] resume [JOURNAL]   undo what a killed run had done\n"
	"       bgrun test [busted arguments]\n"
	"       bgrun --version | --help\n"
	"\n"
	"options:\n"
	"  --dry-run              log every change instead of making it\n"
	"  --yes                  answer confirmations (prod deploys, rollbacks)\n"
	"  --log-format text|json log lines as text or one JSON object a line\n"
	"  -v, --verbose          debug logging and tracebacks on failure\n"
	"  -q, --quiet            only warnings and errors\n"
	"  --report FILE          write the run report (JSON) to FILE, on success and failure\n"
	"  --force                resume: undo a run resume refused (each undo still checks the world)\n"
	"  --json                 with --describe: the description as JSON\n"
	"\n"
	"exit codes: 0 success; 1 failed and cleaned up; 2 bad usage or input;\n"
	"            3 failed and a compensation failed too; 130 interrupted\n";

/* Builds "DIR/?.lua;P1/?.lua;..." from the playbook's directory and
 * BGRUN_PATH (colon-separated directories). */
static void push_override_path(lua_State *L, const char *playbook)
{
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	if (playbook) {
		const char *slash = strrchr(playbook, '/');
		if (slash)
			luaL_addlstring(&b, playbook, (size_t)(slash - playbook));
		else
			luaL_addchar(&b, '.');
		luaL_addstring(&b, "/?.lua");
	}
	const char *env = getenv("BGRUN_PATH");
	while (env && *env) {
		const char *end = strchr(env, ':');
		size_t n = end ? (size_t)(end - env) : strlen(env);
		if (n > 0) {
			if (luaL_bufflen(&b) > 0)
				luaL_addchar(&b, ';');
			luaL_addlstring(&b, env, n);
			luaL_addstring(&b, "/?.lua");
		}
		env = end ? end + 1 : NULL;
	}
	luaL_pushresult(&b);
}

static int msghandler(lua_State *L)
{
	const char *msg = lua_tostring(L, 1);
	if (msg == NULL) {
		if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
			return 1;
		msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
	}
	luaL_traceback(L, L, msg, 1);
	return 1;
}

static int usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, "bgrun: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n%s", usage);
	return BGRUN_EXIT_USAGE;
}

struct cli {
	const char *playbook, *log_format, *report;
	int dry_run, yes, verbose, quiet, describe, json, help, test, resume, force, keep_lock;
};

enum { OPT_TAKEN, OPT_POSITIONAL, OPT_END, OPT_EXIT };

/* Reads the option at argv[*i] (and its value); OPT_EXIT has pushed the
 * exit code. */
static int take_option(lua_State *L, struct cli *o, int argc, char **argv, int *i)
{
	const char *a = argv[*i];
	if (strcmp(a, "--") == 0)
		return OPT_END;
	if (a[0] != '-' || a[1] == '\0')
		return OPT_POSITIONAL;
	if (strcmp(a, "--dry-run") == 0)
		o->dry_run = 1;
	else if (strcmp(a, "--yes") == 0 || strcmp(a, "-y") == 0)
		o->yes = 1;
	else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0)
		o->verbose = 1;
	else if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0)
		o->quiet = 1;
	else if (strcmp(a, "--describe") == 0)
		o->describe = 1;
	else if (strcmp(a, "--json") == 0)
		o->json = 1;
	else if (strcmp(a, "--force") == 0)
		o->force = 1;
	else if (strcmp(a, "--log-format") == 0 || strncmp(a, "--log-format=", 13) == 0) {
		const char *v = a[12] == '=' ? a + 13 : (*i + 1 < argc ? argv[++*i] : NULL);
		if (v == NULL || (strcmp(v, "text") != 0 && strcmp(v, "json") != 0)) {
			lua_pushinteger(L, usage_error("--log-format needs text or json, got '%s'", v ? v : ""));
			return OPT_EXIT;
		}
		o->log_format = v;
	} else if (strcmp(a, "--report") == 0 || strncmp(a, "--report=", 9) == 0) {
		const char *v = a[8] == '=' ? a + 9 : (*i + 1 < argc ? argv[++*i] : NULL);
		if (v == NULL || *v == '\0') {
			lua_pushinteger(L, usage_error("--report needs a file name%s", ""));
			return OPT_EXIT;
		}
		o->report = v;
	} else if (strcmp(a, "--version") == 0) {
		printf("bgrun %s (%s, jansson %s)\n", BGRUN_VERSION, LUA_RELEASE, JANSSON_VERSION);
		lua_pushinteger(L, 0);
		return OPT_EXIT;
	} else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
		o->help = 1;
	} else {
		lua_pushinteger(L, usage_error("unknown option '%s'", a));
		return OPT_EXIT;
	}
	return OPT_TAKEN;
}

/* Pushes the table prelude.main takes: the options, the program name and
 * the arguments left for the playbook (or the test runner). */
static void push_cli(lua_State *L, const struct cli *o, const char *program,
                     const char **rest, int nrest)
{
	lua_createtable(L, 0, 12);
	if (o->playbook) {
		lua_pushstring(L, o->playbook);
		lua_setfield(L, -2, "playbook");
	}
	lua_pushboolean(L, o->dry_run);
	lua_setfield(L, -2, "dry_run");
	lua_pushboolean(L, o->yes);
	lua_setfield(L, -2, "yes");
	lua_pushboolean(L, o->verbose);
	lua_setfield(L, -2, "verbose");
	lua_pushboolean(L, o->quiet);
	lua_setfield(L, -2, "quiet");
	lua_pushboolean(L, o->describe);
	lua_setfield(L, -2, "describe");
	lua_pushboolean(L, o->json);
	lua_setfield(L, -2, "json");
	lua_pushboolean(L, o->test);
	lua_setfield(L, -2, "test");
	lua_pushboolean(L, o->resume);
	lua_setfield(L, -2, "resume");
	lua_pushboolean(L, o->force);
	lua_setfield(L, -2, "force");
	lua_pushboolean(L, o->keep_lock);
	lua_setfield(L, -2, "keep_lock");
	lua_pushstring(L, o->log_format);
	lua_setfield(L, -2, "log_format");
	if (o->report) {
		lua_pushstring(L, o->report);
		lua_setfield(L, -2, "report");
	}
	lua_pushstring(L, program);
	lua_setfield(L, -2, "program");
	lua_createtable(L, nrest, 0);
	for (int k = 0; k < nrest; k++) {
		lua_pushstring(L, rest[k]);
		lua_rawseti(L, -2, k + 1);
	}
	lua_setfield(L, -2, "args");
}

/* Runs with argc/argv as upvalue-free arguments; returns the exit code.
 * Options may stand anywhere (GNU-style permutation) up to "--"; after
 * `test` and `keep-lock` everything is theirs. */
static int pmain(lua_State *L)
{
	int argc = (int)lua_tointeger(L, 1);
	char **argv = lua_touserdata(L, 2);

	struct cli o = {.log_format = "text"};
	int i = 1, ended = 0, r = OPT_TAKEN;
	for (; i < argc; i++) {
		r = take_option(L, &o, argc, argv, &i);
		if (r == OPT_EXIT)
			return 1;
		if (r == OPT_END) {
			ended = 1;
			i++;
			break;
		}
		if (r == OPT_POSITIONAL)
			break;
	}
	if (o.help && i >= argc) {
		fputs(usage, stdout);
		lua_pushinteger(L, 0);
		return 1;
	}
	const char **rest = lua_newuserdatauv(L, sizeof *rest * (size_t)(argc + 1), 0);
	int nrest = 0;
	if (i < argc && !ended && strcmp(argv[i], "test") == 0 && !o.describe) {
		o.test = 1;
		for (i++; i < argc; i++)
			rest[nrest++] = argv[i];
	} else if (i < argc && !ended && strcmp(argv[i], "keep-lock") == 0 && !o.describe) {
		/* internal: the process that renews a run's deploy lock */
		o.keep_lock = 1;
		for (i++; i < argc; i++)
			rest[nrest++] = argv[i];
	} else if (i < argc) {
		if (!ended && strcmp(argv[i], "resume") == 0 && !o.describe)
			o.resume = 1;
		else
			o.playbook = argv[i];
		for (i++; i < argc; i++) {
			if (!ended) {
				r = take_option(L, &o, argc, argv, &i);
				if (r == OPT_EXIT)
					return 1;
				if (r == OPT_END) {
					ended = 1;
					continue;
				}
				if (r == OPT_TAKEN)
					continue;
			}
			rest[nrest++] = argv[i];
		}
	} else {
		lua_pushinteger(L, usage_error("%s", "no playbook given"));
		return 1;
	}
	if (o.json && !o.describe && !o.help) {
		lua_pushinteger(L, usage_error("%s", "--json goes with --describe (or PLAYBOOK --help)"));
		return 1;
	}
	if (o.help) {
		if (!o.playbook) {
			fputs(usage, stdout);
			lua_pushinteger(L, 0);
			return 1;
		}
		o.describe = 1; /* bgrun PLAYBOOK --help: that playbook's parameters */
	}
	const char *playbook = o.playbook;

	push_override_path(L, playbook);
	bgrun_open_all(L, lua_tostring(L, -1));
	lua_pop(L, 1);
	bgrun_install_signals(L);

	lua_getglobal(L, "require");
	lua_pushliteral(L, "prelude");
	lua_call(L, 1, 1);
	lua_getfield(L, -1, "main");

	push_cli(L, &o, argv[0], rest, nrest);
	lua_call(L, 1, 1);
	return 1;
}

int main(int argc, char **argv)
{
	lua_State *L = luaL_newstate();
	if (L == NULL) {
		fprintf(stderr, "bgrun: cannot create the Lua state: not enough memory\n");
		return BGRUN_EXIT_FAILED;
	}
	lua_pushcfunction(L, msghandler);
	lua_pushcfunction(L, pmain);
	lua_pushinteger(L, argc);
	lua_pushlightuserdata(L, argv);
	int status = lua_pcall(L, 2, 1, 1);
	int code;
	if (status != LUA_OK) {
		/* The prelude handles playbook errors; this is an engine fault. */
		fprintf(stderr, "bgrun: internal error: %s\n", lua_tostring(L, -1));
		code = BGRUN_EXIT_FAILED;
	} else {
		code = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : BGRUN_EXIT_FAILED;
	}
	lua_close(L);
	return code;
}
