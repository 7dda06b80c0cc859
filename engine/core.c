/* The engine's own services: structured errors, signals and raising
 * interrupts (the flag itself is interrupt.c's), the dry-run flag, and the
 * hidden "bgrun.core" module the prelude builds on. Module lookup is
 * modules.c's. */
#define _GNU_SOURCE /* mkdtemp */
#include "bgrun.h"
#include "clock.h"
#include "interrupt.h"


#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <fcntl.h>

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lualib.h> /* LUA_RELEASE */

#define ERROR_MT "bgrun.error"
#define DRY_RUN_KEY "bgrun.dry_run"

/* The state the signal handler arms its hook in (the flag is interrupt.c's). */
static lua_State *signal_state;

/* ---------------------------------------------------------------- errors */

/* error:__tostring() -> "module: op: code reason: message" */
static int error_tostring(lua_State *L)
{
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	static const char *const parts[] = {"module", "op"};
	for (int i = 0; i < 2; i++) {
		if (lua_getfield(L, 1, parts[i]) == LUA_TSTRING) {
			luaL_addvalue(&b);
			luaL_addstring(&b, ": ");
		} else {
			lua_pop(L, 1);
		}
	}
	int code = lua_getfield(L, 1, "code");
	int reason = lua_getfield(L, 1, "reason");
	/* "409 Conflict: " but not "interrupted interrupted: " */
	if (code == LUA_TNUMBER || (code == LUA_TSTRING && !(reason == LUA_TSTRING && lua_rawequal(L, -1, -2)))) {
		lua_pushvalue(L, -2);
		luaL_addvalue(&b);
		luaL_addchar(&b, reason == LUA_TSTRING ? ' ' : ':');
		if (reason != LUA_TSTRING)
			luaL_addchar(&b, ' ');
	}
	if (reason == LUA_TSTRING) {
		lua_pushvalue(L, -1);
		luaL_addvalue(&b);
		luaL_addstring(&b, ": ");
	}
	lua_pop(L, 2);
	if (lua_getfield(L, 1, "message") == LUA_TSTRING)
		luaL_addvalue(&b);
	else {
		lua_pop(L, 1);
		luaL_addstring(&b, "(no message)");
	}
	luaL_pushresult(&b);
	return 1;
}

static void push_error_mt(lua_State *L)
{
	if (luaL_newmetatable(L, ERROR_MT)) {
		lua_pushcfunction(L, error_tostring);
		lua_setfield(L, -2, "__tostring");
		lua_pushliteral(L, "bgrun.error");
		lua_setfield(L, -2, "__name");
	}
}

void bgrun_error_new(lua_State *L, const char *module, const char *op,
                     const char *reason, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	lua_createtable(L, 0, 6);
	lua_pushstring(L, module);
	lua_setfield(L, -2, "module");
	bgrun_push_redacted(L, op, strlen(op));
	lua_setfield(L, -2, "op");
	if (reason) {
		lua_pushstring(L, reason);
		lua_setfield(L, -2, "reason");
	}
	bgrun_push_redacted(L, msg, strlen(msg));
	lua_setfield(L, -2, "message");
	push_error_mt(L);
	lua_setmetatable(L, -2);
}

void bgrun_error_set_int(lua_State *L, const char *field, lua_Integer v)
{
	lua_pushinteger(L, v);
	lua_setfield(L, -2, field);
}

void bgrun_error_set_str(lua_State *L, const char *field, const char *v)
{
	if (v == NULL)
		return;
	bgrun_push_redacted(L, v, strlen(v));
	lua_setfield(L, -2, field);
}

int bgrun_error_throw(lua_State *L)
{
	lua_error(L);
	abort(); /* lua_error does not return */
}

void bgrun_check_options(lua_State *L, int idx, const char *const known[])
{
	if (lua_isnoneornil(L, idx))
		return;
	luaL_checktype(L, idx, LUA_TTABLE);
	idx = lua_absindex(L, idx);
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		lua_pop(L, 1);
		int ok = 0;
		if (lua_type(L, -1) == LUA_TSTRING)
			for (int i = 0; known[i] && !ok; i++)
				ok = strcmp(lua_tostring(L, -1), known[i]) == 0;
		if (!ok)
			luaL_argerror(L, idx, lua_pushfstring(L, "unknown option '%s'", luaL_tolstring(L, -1, NULL)));
	}
}

/* core.error(t) -> t with the error metatable (for errors raised in Lua) */
static int core_error(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 1);
	push_error_mt(L);
	lua_setmetatable(L, 1);
	return 1;
}

/* core.is_error(v) -> boolean */
static int core_is_error(lua_State *L)
{
	int is = 0;
	if (lua_getmetatable(L, 1)) {
		luaL_getmetatable(L, ERROR_MT);
		is = lua_rawequal(L, -1, -2);
		lua_pop(L, 2);
	}
	lua_pushboolean(L, is);
	return 1;
}

/* ------------------------------------------------------------ interrupts */

static void push_interrupted(lua_State *L, const char *module, const char *op)
{
	if (bgrun_interrupt_lock_lost()) {
		bgrun_error_new(L, module, op, "LockLost",
		                "the deploy lock was taken by another run: stopping this one");
		bgrun_error_set_str(L, "code", "lock_lost");
		return;
	}
	bgrun_error_new(L, module, op, "interrupted", "interrupted by signal");
	bgrun_error_set_str(L, "code", "interrupted");
}

/* The interrupt is raised once, by whichever sees it first (this or the
 * hook), and then travels as that error: the hook is disarmed so that
 * <close> handlers running during the unwinding are not interrupted in
 * turn, which would replace the error. It stays pending (bgrun_interrupted)
 * until compensations start, so further blocking calls raise too and the
 * playbooks' guarded pcall lets it pass. */
int bgrun_throw_interrupted(lua_State *L, const char *module, const char *op)
{
	lua_sethook(L, NULL, 0, 0);
	push_interrupted(L, module, op);
	bgrun_error_throw(L);
}

/* Raises the interrupt at the next Lua instruction after the signal. */
static void interrupt_hook(lua_State *L, lua_Debug *ar)
{
	(void)ar;
	if (!bgrun_interrupted()) {
		lua_sethook(L, NULL, 0, 0);
		return;
	}
	lua_sethook(L, NULL, 0, 0);
	push_interrupted(L, "bgrun", "run");
	lua_error(L);
}

static void on_signal(int sig)
{
	if (!bgrun_interrupt_raise(sig == SIGUSR1)) {
		static const char msg[] = "bgrun: interrupt ignored while compensations run\n";
		ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
		(void)w;
		return;
	}
	if (signal_state)
		lua_sethook(signal_state, interrupt_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

void bgrun_install_signals(lua_State *L)
{
	signal_state = L;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
}

/* core.lock_lost() -> boolean: the pending interrupt is a lost lock */
static int core_lock_lost(lua_State *L)
{
	lua_pushboolean(L, bgrun_interrupt_lock_lost() && bgrun_interrupt_pending());
	return 1;
}

/* core.interrupted() -> boolean: an interrupt is pending (compensations
 * acknowledge it) */
static int core_interrupted(lua_State *L)
{
	lua_pushboolean(L, bgrun_interrupted());
	return 1;
}

/* core.begin_compensation(): stop raising interrupts; ignore new ones */
static int core_begin_compensation(lua_State *L)
{
	bgrun_set_compensating(1);
	lua_sethook(L, NULL, 0, 0);
	return 0;
}

/* core.end_compensation() */
static int core_end_compensation(lua_State *L)
{
	(void)L;
	bgrun_set_compensating(0);
	return 0;
}

/* --------------------------------------------------------------- dry run */

int bgrun_dry_run(lua_State *L)
{
	lua_getfield(L, LUA_REGISTRYINDEX, DRY_RUN_KEY);
	int on = lua_toboolean(L, -1);
	lua_pop(L, 1);
	return on;
}

/* core.dry_run() -> boolean */
static int core_dry_run(lua_State *L)
{
	lua_pushboolean(L, bgrun_dry_run(L));
	return 1;
}

/* core.set_dry_run(on) */
static int core_set_dry_run(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TBOOLEAN);
	lua_pushboolean(L, lua_toboolean(L, 1));
	lua_setfield(L, LUA_REGISTRYINDEX, DRY_RUN_KEY);
	return 0;
}

/* ------------------------------------------------------------ utilities */

/* core.isatty(fd) -> boolean */
static int core_isatty(lua_State *L)
{
	lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
	return 1;
}

/* core.now() -> seconds on a monotonic clock, as a float */
static int core_now(lua_State *L)
{
	lua_pushnumber(L, (lua_Number)bgrun_clock());
	return 1;
}

/* core.time() -> seconds since the epoch, as a float (wall clock: for
 * ordering events across processes, not for measuring durations) */
static int core_time(lua_State *L)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
	return 1;
}

/* core.sleep(seconds): interruptible */
static int core_sleep(lua_State *L)
{
	lua_Number s = luaL_checknumber(L, 1);
	luaL_argcheck(L, s >= 0, 1, "must not be negative");
	if (bgrun_nap((double)s))
		bgrun_throw_interrupted(L, "bgrun", "sleep");
	return 0;
}

/* core.hostname() -> string */
static int core_hostname(lua_State *L)
{
	char host[256];
	if (gethostname(host, sizeof host) != 0)
		snprintf(host, sizeof host, "unknown");
	host[sizeof host - 1] = '\0';
	lua_pushstring(L, host);
	return 1;
}

/* core.pid() -> integer */
static int core_pid(lua_State *L)
{
	lua_pushinteger(L, (lua_Integer)getpid());
	return 1;
}

/* core.embedded(name) -> source, path | nil */
static int core_embedded(lua_State *L)
{
	const char *name = luaL_checkstring(L, 1);
	for (const struct bgrun_embedded *e = bgrun_embedded; e->name; e++) {
		if (strcmp(e->name, name) == 0) {
			lua_pushlstring(L, (const char *)e->data, e->len);
			lua_pushstring(L, e->path);
			return 2;
		}
	}
	return 0;
}

/* ------------------------------------------------------- files, processes */

static int push_errno(lua_State *L, const char *what, const char *path)
{
	int e = errno;
	lua_pushnil(L);
	lua_pushfstring(L, "%s %s: %s", what, path, strerror(e));
	return 2;
}

/* core.mkdtemp(prefix) -> path | nil, message: a fresh 0700 directory
 * named prefix followed by six random characters */
static int core_mkdtemp(lua_State *L)
{
	size_t n;
	const char *prefix = luaL_checklstring(L, 1, &n);
	luaL_Buffer b;
	char *tmpl = luaL_buffinitsize(L, &b, n + 7);
	memcpy(tmpl, prefix, n);
	memcpy(tmpl + n, "XXXXXX", 7);
	if (mkdtemp(tmpl) == NULL) {
		int e = errno;
		luaL_pushresultsize(&b, n + 6);
		errno = e;
		return push_errno(L, "mkdtemp", lua_tostring(L, -1));
	}
	luaL_pushresultsize(&b, n + 6);
	return 1;
}

/* core.chmod(path, mode) -> true | nil, message */
static int core_chmod(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	mode_t mode = (mode_t)luaL_checkinteger(L, 2);
	if (chmod(path, mode) != 0)
		return push_errno(L, "chmod", path);
	lua_pushboolean(L, 1);
	return 1;
}

/* core.proc_start(pid) -> string | nil: the boot id and the start time of
 * process pid in clock ticks since boot; together with the pid they name
 * one process, even after its pid is reused */
static int core_proc_start(lua_State *L)
{
	lua_Integer pid = luaL_checkinteger(L, 1);
	char path[64], buf[1024], boot[64] = "";
	snprintf(path, sizeof path, "/proc/%lld/stat", (long long)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* fields after the command name, which may hold spaces and parens */
	char *p = strrchr(buf, ')');
	if (!p)
		return 0;
	p++;
	/* field 3 (state) is the first after ')'; start time is field 22 */
	unsigned long long start = 0;
	int field = 2;
	char *save = NULL;
	for (char *tok = strtok_r(p, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
		if (++field == 22) {
			start = strtoull(tok, NULL, 10);
			break;
		}
	}
	if (field != 22)
		return 0;
	FILE *b = fopen("/proc/sys/kernel/random/boot_id", "r");
	if (b) {
		if (!fgets(boot, sizeof boot, b))
			boot[0] = '\0';
		fclose(b);
		boot[strcspn(boot, "\n")] = '\0';
	}
	lua_pushfstring(L, "%s:%s", boot, lua_pushfstring(L, "%I", (lua_Integer)start));
	return 1;
}

/* core.spawn_self(args) -> pid: this program again with args, its stdin
 * on /dev/null, ended by SIGTERM when we die */
static int core_spawn_self(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_Integer n = luaL_len(L, 1);
	luaL_argcheck(L, n >= 0 && n < 64, 1, "too many arguments");
	const char *argv[66];
	argv[0] = "bgrun";
	for (lua_Integer i = 1; i <= n; i++) {
		lua_geti(L, 1, i);
		argv[i] = lua_tostring(L, -1);
		luaL_argcheck(L, argv[i] != NULL, 1, "arguments must be strings");
		lua_pop(L, 1); /* the table keeps the string alive */
	}
	argv[n + 1] = NULL;
	char exe[4096];
	ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
	if (len <= 0)
		return push_errno(L, "readlink", "/proc/self/exe");
	exe[len] = '\0';
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0)
		return push_errno(L, "fork", exe);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			_exit(127);
		int fd = open("/dev/null", O_RDONLY);
		if (fd >= 0) {
			dup2(fd, 0);
			if (fd > 0)
				close(fd);
		}
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execv(exe, (char *const *)argv);
		_exit(127);
	}
	lua_pushinteger(L, (lua_Integer)pid);
	return 1;
}

/* core.kill(pid, signal) -> boolean: signal is "TERM", "KILL", "USR1" or 0 */
static int core_kill(lua_State *L)
{
	pid_t pid = (pid_t)luaL_checkinteger(L, 1);
	luaL_argcheck(L, pid > 0, 1, "must be a process id");
	int sig = 0;
	if (lua_type(L, 2) == LUA_TSTRING) {
		const char *s = lua_tostring(L, 2);
		if (strcmp(s, "TERM") == 0)
			sig = SIGTERM;
		else if (strcmp(s, "KILL") == 0)
			sig = SIGKILL;
		else if (strcmp(s, "USR1") == 0)
			sig = SIGUSR1;
		else
			return luaL_argerror(L, 2, "unknown signal");
	} else {
		sig = (int)luaL_optinteger(L, 2, 0);
	}
	lua_pushboolean(L, kill(pid, sig) == 0);
	return 1;
}

/* core.wait(pid [, timeout]) -> exit code | nil: waits up to timeout
 * seconds (0: just look) for our child pid; 128+n when a signal ended it */
static int core_wait(lua_State *L)
{
	pid_t pid = (pid_t)luaL_checkinteger(L, 1);
	lua_Number timeout = luaL_optnumber(L, 2, 0);
	double t0 = bgrun_clock();
	for (;;) {
		int status;
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid) {
			lua_pushinteger(L, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
			return 1;
		}
		if (r < 0)
			return 0;
		if (bgrun_clock() - t0 >= timeout)
			return 0;
		bgrun_nap_uninterruptible(0.02);
	}
}

static const luaL_Reg core_funcs[] = {
	{"error", core_error},
	{"is_error", core_is_error},
	{"interrupted", core_interrupted},
	{"begin_compensation", core_begin_compensation},
	{"end_compensation", core_end_compensation},
	{"dry_run", core_dry_run},
	{"set_dry_run", core_set_dry_run},
	{"isatty", core_isatty},
	{"now", core_now},
	{"time", core_time},
	{"sleep", core_sleep},
	{"hostname", core_hostname},
	{"pid", core_pid},
	{"embedded", core_embedded},
	{"lock_lost", core_lock_lost},
	{"mkdtemp", core_mkdtemp},
	{"chmod", core_chmod},
	{"proc_start", core_proc_start},
	{"spawn_self", core_spawn_self},
	{"kill", core_kill},
	{"wait", core_wait},
	{NULL, NULL},
};

int luaopen_bgrun_core(lua_State *L)
{
	luaL_newlib(L, core_funcs);
	lua_pushliteral(L, BGRUN_VERSION);
	lua_setfield(L, -2, "version");
	lua_pushliteral(L, LUA_RELEASE);
	lua_setfield(L, -2, "lua_version");
	return 1;
}
