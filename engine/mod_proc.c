/* proc: run a program without a shell. Output is captured or sent to a
 * file, a timeout kills the whole process group, and an interrupt stops the
 * program before raising, so compensations never race a child. */
#define _GNU_SOURCE
#include "bgrun.h"
#include "clock.h"
#include "buf.h"
#include "progress.h"
#include "spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ; /* build_env starts from it */

enum { OUT_CAPTURE, OUT_INHERIT, OUT_FILE, OUT_NULL };

typedef struct spec {
	char **argv;
	char **envp;          /* NULL: inherit */
	const char *cwd;
	const char *stdin_data;
	size_t stdin_len;
	const char *stdin_file;
	int out_mode[2];
	const char *out_file[2];
	int append[2];
	double timeout;       /* seconds, 0 = none */
	bgrun_progress *progress; /* the output's growth, reported while it runs */
	const char *watch;        /* progress counts this file's size, else stdout's bytes */
	char *reads;              /* ... or how far the program has read this file (real path) */
	pid_t pid;                /* the running program, for reads */
} spec;

static void free_strv(char **v)
{
	if (v == NULL)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

static void spec_free(spec *s)
{
	free_strv(s->argv);
	free_strv(s->envp);
	s->argv = s->envp = NULL;
	free(s->reads);
	s->reads = NULL;
}

/* Parses an output option (stdout/stderr): "capture", "inherit", "null",
 * {file=path, append=bool}. Raises on a playbook mistake (nothing owned yet). */
static void parse_out(lua_State *L, int opts, const char *field, spec *s, int which)
{
	static const char *const modes[] = {"capture", "inherit", "null", NULL};
	s->out_mode[which] = OUT_CAPTURE;
	int t = lua_getfield(L, opts, field);
	if (t == LUA_TSTRING) {
		int m = luaL_checkoption(L, -1, NULL, modes);
		s->out_mode[which] = m == 0 ? OUT_CAPTURE : m == 1 ? OUT_INHERIT : OUT_NULL;
	} else if (t == LUA_TTABLE) {
		if (lua_getfield(L, -1, "file") != LUA_TSTRING)
			luaL_error(L, "proc.run: option '%s' needs file=path", field);
		s->out_mode[which] = OUT_FILE;
		s->out_file[which] = lua_tostring(L, -1); /* anchored by the opts table */
		lua_getfield(L, -2, "append");
		s->append[which] = lua_toboolean(L, -1);
		lua_pop(L, 2);
	} else if (t != LUA_TNIL) {
		luaL_error(L, "proc.run: option '%s' must be \"capture\", \"inherit\", \"null\" or {file=}", field);
	}
	lua_pop(L, 1);
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

/* Builds the environment: the inherited one with opts.env applied (a value
 * of false removes a variable), or only opts.env with clear_env=true. */
static char **build_env(lua_State *L, int envt, int clear)
{
	size_t n = 0, cap = 16;
	char **v = calloc(cap, sizeof *v);
	if (v == NULL)
		return NULL;
	if (!clear) {
		for (char **e = environ; *e; e++) {
			const char *eq = strchr(*e, '=');
			if (eq == NULL)
				continue;
			lua_pushlstring(L, *e, (size_t)(eq - *e));
			int overridden = envt && lua_rawget(L, envt) != LUA_TNIL;
			lua_pop(L, envt ? 1 : 1);
			if (overridden)
				continue;
			if (n + 2 > cap) {
				char **g = realloc(v, (cap *= 2) * sizeof *v);
				if (g == NULL)
					goto oom;
				v = g;
			}
			if ((v[n++] = strdup(*e)) == NULL)
				goto oom;
			v[n] = NULL;
		}
	}
	if (envt) {
		lua_pushnil(L);
		while (lua_next(L, envt)) {
			if (lua_type(L, -1) == LUA_TSTRING || lua_type(L, -1) == LUA_TNUMBER) {
				if (n + 2 > cap) {
					char **g = realloc(v, (cap *= 2) * sizeof *v);
					if (g == NULL) {
						lua_pop(L, 2);
						goto oom;
					}
					v = g;
				}
				buf kv = BUF_INIT;
				buf_printf(&kv, "%s=%s", lua_tostring(L, -2), lua_tostring(L, -1));
				v[n++] = kv.data;
				v[n] = NULL;
				if (kv.data == NULL) {
					lua_pop(L, 2);
					goto oom;
				}
			}
			lua_pop(L, 1);
		}
	}
	v[n] = NULL;
	return v;
oom:
	free_strv(v);
	return NULL;
}

/* Checks every option; raises only here, before anything is acquired. */
static void check_args(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_Integer n = luaL_len(L, 1);
	luaL_argcheck(L, n >= 1, 1, "argv must have at least one element");
	for (lua_Integer i = 1; i <= n; i++) {
		int t = lua_rawgeti(L, 1, i);
		if (t != LUA_TSTRING && t != LUA_TNUMBER)
			luaL_error(L, "bad argument #1 to 'run' (argv[%d] must be a string, got %s)", (int)i, luaL_typename(L, -1));
		lua_pop(L, 1);
	}
	if (lua_isnoneornil(L, 2))
		return;
	static const char *const known[] = {"env", "clear_env", "cwd", "stdin", "stdout", "stderr", "timeout", "readonly",
	                                    "progress", NULL};
	bgrun_check_options(L, 2, known);
	if (lua_getfield(L, 2, "env") != LUA_TNIL)
		luaL_checktype(L, -1, LUA_TTABLE);
	if (lua_getfield(L, 2, "cwd") != LUA_TNIL)
		luaL_checkstring(L, -1);
	int t = lua_getfield(L, 2, "stdin");
	if (t != LUA_TNIL && t != LUA_TSTRING && !(t == LUA_TTABLE && lua_getfield(L, -1, "file") == LUA_TSTRING))
		luaL_error(L, "bad argument #2 to 'run' (stdin must be a string or {file=path})");
	lua_settop(L, 2);
	t = lua_getfield(L, 2, "progress");
	if (t == LUA_TTABLE) {
		if (lua_getfield(L, -1, "label") != LUA_TSTRING)
			luaL_error(L, "bad argument #2 to 'run' (progress needs label=)");
		if (lua_getfield(L, -2, "file") > LUA_TNIL && !lua_isstring(L, -1))
			luaL_error(L, "bad argument #2 to 'run' (progress.file must be a path)");
		if (lua_getfield(L, -3, "total") > LUA_TNIL && !lua_isinteger(L, -1))
			luaL_error(L, "bad argument #2 to 'run' (progress.total must be an integer)");
		if (lua_getfield(L, -4, "reads") > LUA_TNIL && !lua_isstring(L, -1))
			luaL_error(L, "bad argument #2 to 'run' (progress.reads must be a path)");
	} else if (t != LUA_TNIL && t != LUA_TSTRING) {
		luaL_error(L, "bad argument #2 to 'run' (progress must be a label or {label=, file=, total=})");
	}
	lua_settop(L, 2);
	if (lua_getfield(L, 2, "timeout") != LUA_TNIL) {
		lua_Number to = luaL_checknumber(L, -1);
		luaL_argcheck(L, to > 0, 2, "timeout must be positive");
	}
	lua_pop(L, 1);
}

static int open_out(const spec *s, int which)
{
	return open(s->out_file[which], O_WRONLY | O_CREAT | O_CLOEXEC | (s->append[which] ? O_APPEND : O_TRUNC), 0644);
}

typedef struct outcome {
	int status;         /* from waitpid */
	int timed_out;
	int interrupted;
	int spawn_errno;    /* exec or setup failed in the child */
	const char *spawn_what;
	buf out[2];
} outcome;

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* Stops the process group: TERM, then KILL after a grace period. */
static void stop_group(pid_t pid, int *status)
{
	bgrun_spawn_stop(pid, status, 2000);
}

/* The offset of the descriptor on which process pid has the file at
 * path open (Linux /proc), or -1. */
static long long read_position(pid_t pid, const char *path)
{
	char dir[64];
	snprintf(dir, sizeof dir, "/proc/%d/fd", (int)pid);
	DIR *d = opendir(dir);
	if (d == NULL)
		return -1;
	long long pos = -1;
	struct dirent *e;
	while (pos < 0 && (e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		char link[320], target[4096];
		snprintf(link, sizeof link, "%s/%s", dir, e->d_name);
		ssize_t n = readlink(link, target, sizeof target - 1);
		if (n <= 0)
			continue;
		target[n] = '\0';
		if (strcmp(target, path) != 0)
			continue;
		snprintf(link, sizeof link, "/proc/%d/fdinfo/%s", (int)pid, e->d_name);
		FILE *f = fopen(link, "re");
		if (f == NULL)
			continue;
		char line[128];
		while (fgets(line, sizeof line, f))
			if (sscanf(line, "pos: %lld", &pos) == 1)
				break;
		fclose(f);
	}
	closedir(d);
	return pos;
}

/* How much output the program has produced (or input read) so far. */
static void report_progress(const spec *s, const outcome *o)
{
	struct stat st;
	if (s->reads) {
		long long pos = s->pid > 0 ? read_position(s->pid, s->reads) : -1;
		if (pos >= 0)
			bgrun_progress_update(s->progress, pos);
		return;
	}
	const char *f = s->watch ? s->watch : s->out_mode[0] == OUT_FILE ? s->out_file[0] : NULL;
	if (f)
		bgrun_progress_update(s->progress, stat(f, &st) == 0 ? (long long)st.st_size : 0);
	else
		bgrun_progress_update(s->progress, (long long)o->out[0].len);
}

/* Writes what stdin still has to give; closes the pipe at the end or when
 * the program stopped reading (EPIPE). */
static void feed_stdin(const spec *s, int *fd, size_t *off)
{
	ssize_t w = write(*fd, s->stdin_data + *off, s->stdin_len - *off);
	if (w > 0)
		*off += (size_t)w;
	if ((w < 0 && errno != EAGAIN && errno != EINTR) || *off >= s->stdin_len)
		close_fd(fd);
}

/* Moves bytes between the running program and us until it exits (and its
 * pipes drain), times out, or an interrupt arrives. 0, or -1 with errno
 * when capturing ran out of memory (the program is stopped). */
static int pump(spec *s, bgrun_spawn *sp, outcome *o)
{
	size_t in_off = 0;
	if (sp->pipe[0] >= 0 && s->stdin_len == 0)
		close_fd(&sp->pipe[0]);
	double deadline = s->timeout > 0 ? bgrun_clock() + s->timeout : 0;
	int exited = 0;
	double drain_until = 0;
	for (;;) {
		struct pollfd pfd[3];
		int n = 0, at[3] = {-1, -1, -1};
		for (int i = 0; i < 3; i++)
			if (sp->pipe[i] >= 0) {
				pfd[n] = (struct pollfd){sp->pipe[i], i == 0 ? POLLOUT : POLLIN, 0};
				at[i] = n++;
			}
		if (n == 0 && exited)
			break;
		if (n > 0)
			poll(pfd, (nfds_t)n, 50);
		else {
			bgrun_nap_uninterruptible(0.02);
		}
		if (at[0] >= 0 && (pfd[at[0]].revents & (POLLOUT | POLLERR | POLLHUP)))
			feed_stdin(s, &sp->pipe[0], &in_off);
		for (int w = 0; w < 2; w++) {
			if (at[w + 1] < 0 || !(pfd[at[w + 1]].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			char chunk[65536];
			ssize_t r = read(sp->pipe[w + 1], chunk, sizeof chunk);
			if (r > 0 && buf_append(&o->out[w], chunk, (size_t)r) != 0) {
				o->spawn_what = "capture output";
				stop_group(sp->pid, &o->status);
				errno = ENOMEM;
				return -1;
			}
			if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
				close_fd(&sp->pipe[w + 1]);
		}
		if (!exited && waitpid(sp->pid, &o->status, WNOHANG) == sp->pid) {
			exited = 1;
			/* A daemonised grandchild may hold the pipes; don't wait forever. */
			drain_until = bgrun_clock() + 1.0;
			close_fd(&sp->pipe[0]);
		}
		if (s->progress)
			report_progress(s, o);
		if (exited && bgrun_clock() > drain_until)
			break;
		if (!exited && bgrun_interrupted()) {
			o->interrupted = 1;
			stop_group(sp->pid, &o->status);
			break;
		}
		if (!exited && deadline > 0 && bgrun_clock() > deadline) {
			o->timed_out = 1;
			stop_group(sp->pid, &o->status);
			break;
		}
	}
	return 0;
}

/* Runs the program; never raises. Returns 0, or -1 with errno for a setup
 * failure in the parent. */
static int execute(spec *s, outcome *o)
{
	int own[3] = {-1, -1, -1}; /* files we open for the child */
	bgrun_spawn sp;
	memset(&sp, 0, sizeof sp);
	sp.argv = s->argv;
	sp.envp = s->envp;
	sp.cwd = s->cwd;
	sp.fd[0] = s->stdin_data ? BGRUN_FD_PIPE : BGRUN_FD_NULL;
	if (s->stdin_file) {
		if ((own[0] = open(s->stdin_file, O_RDONLY | O_CLOEXEC)) < 0) {
			o->spawn_what = "open stdin file";
			return -1;
		}
		sp.fd[0] = own[0];
	}
	for (int w = 0; w < 2; w++) {
		int mode = s->out_mode[w];
		sp.fd[w + 1] = mode == OUT_CAPTURE ? BGRUN_FD_PIPE : mode == OUT_NULL ? BGRUN_FD_NULL : BGRUN_FD_INHERIT;
		if (mode == OUT_FILE && (sp.fd[w + 1] = own[w + 1] = open_out(s, w)) < 0) {
			o->spawn_what = w == 0 ? "open stdout file" : "open stderr file";
			break;
		}
	}
	int rc = (sp.fd[1] == -1 || sp.fd[2] == -1) ? -1 : bgrun_spawn_start(&sp);
	int saved = errno;
	for (int i = 0; i < 3; i++)
		close_fd(&own[i]);
	errno = saved;
	if (rc != 0)
		return -1;
	if (sp.child_errno) {
		o->spawn_errno = sp.child_errno;
		o->spawn_what = sp.child_what;
		return 0;
	}
	s->pid = sp.pid;
	rc = pump(s, &sp, o);
	saved = errno;
	bgrun_spawn_close(&sp);
	errno = saved;
	return rc;
}

static void push_output(lua_State *L, outcome *o, int w, const char *field)
{
	lua_pushlstring(L, o->out[w].data ? o->out[w].data : "", o->out[w].len);
	lua_setfield(L, -2, field);
}

/* The answer of a dry run for a program that changes things. */
static int dry_run_result(lua_State *L)
{
	lua_newtable(L);
	lua_pushvalue(L, 1);
	lua_setfield(L, -2, "argv");
	bgrun_log(L, "info", "dry-run: would run a program", lua_gettop(L));
	lua_pop(L, 1);
	lua_createtable(L, 0, 4);
	lua_pushinteger(L, 0);
	lua_setfield(L, -2, "code");
	lua_pushliteral(L, "");
	lua_setfield(L, -2, "stdout");
	lua_pushliteral(L, "");
	lua_setfield(L, -2, "stderr");
	lua_pushboolean(L, 1);
	lua_setfield(L, -2, "dry_run");
	return 1;
}

/* Reads the checked options (table at 2) into s and the progress settings;
 * returns the stack index of opts.env (left pushed) or 0. Strings stay
 * anchored by the options table. */
static int read_spec(lua_State *L, spec *s, const char **plabel, const char **preads, long long *ptotal, int *clear)
{
	parse_out(L, 2, "stdout", s, 0);
	parse_out(L, 2, "stderr", s, 1);
	if (lua_getfield(L, 2, "cwd") == LUA_TSTRING)
		s->cwd = lua_tostring(L, -1);
	lua_pop(L, 1);
	int t = lua_getfield(L, 2, "stdin");
	if (t == LUA_TSTRING)
		s->stdin_data = lua_tolstring(L, -1, &s->stdin_len);
	else if (t == LUA_TTABLE) {
		lua_getfield(L, -1, "file");
		s->stdin_file = lua_tostring(L, -1);
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
	if (lua_getfield(L, 2, "timeout") == LUA_TNUMBER)
		s->timeout = (double)lua_tonumber(L, -1);
	lua_pop(L, 1);
	t = lua_getfield(L, 2, "progress"); /* anchored by the opts table */
	if (t == LUA_TSTRING) {
		*plabel = lua_tostring(L, -1);
	} else if (t == LUA_TTABLE) {
		lua_getfield(L, -1, "label");
		*plabel = lua_tostring(L, -1);
		lua_getfield(L, -2, "file");
		s->watch = lua_tostring(L, -1);
		lua_getfield(L, -3, "total");
		*ptotal = lua_isinteger(L, -1) ? (long long)lua_tointeger(L, -1) : -1;
		lua_getfield(L, -4, "reads");
		*preads = lua_tostring(L, -1);
		lua_pop(L, 4);
	}
	lua_pop(L, 1);
	lua_getfield(L, 2, "clear_env");
	*clear = lua_toboolean(L, -1);
	lua_pop(L, 1);
	int envt = lua_getfield(L, 2, "env") == LUA_TTABLE ? lua_gettop(L) : 0;
	if (!envt)
		lua_pop(L, 1);
	return envt;
}

/* {code=, signal=, stdout=, stderr=}; frees the captured output. */
static void push_result(lua_State *L, outcome *o)
{
	lua_createtable(L, 0, 4);
	if (WIFEXITED(o->status)) {
		lua_pushinteger(L, WEXITSTATUS(o->status));
	} else {
		lua_pushinteger(L, WTERMSIG(o->status));
		lua_setfield(L, -2, "signal");
		lua_pushinteger(L, 128 + WTERMSIG(o->status));
	}
	lua_setfield(L, -2, "code");
	push_output(L, o, 0, "stdout");
	push_output(L, o, 1, "stderr");
	buf_free(&o->out[0]);
	buf_free(&o->out[1]);
}

/* proc.run(argv [, {env=, clear_env=, cwd=, stdin=, stdout=, stderr=,
 *   timeout=, readonly=}]) -> {code=, signal=, stdout=, stderr=} */
static int proc_run(lua_State *L)
{
	check_args(L);
	lua_settop(L, 2);
	if (lua_isnil(L, 2)) {
		lua_newtable(L);
		lua_replace(L, 2);
	}
	lua_rawgeti(L, 1, 1);
	const char *prog = lua_tostring(L, -1);
	lua_pop(L, 1);
	char op[256];
	snprintf(op, sizeof op, "run %s", prog);

	lua_getfield(L, 2, "readonly");
	int readonly = lua_toboolean(L, -1);
	lua_pop(L, 1);
	if (bgrun_dry_run(L) && !readonly)
		return dry_run_result(L);

	spec s;
	memset(&s, 0, sizeof s);
	long long ptotal = -1;
	const char *plabel = NULL, *preads = NULL;
	int clear = 0;
	int envt = read_spec(L, &s, &plabel, &preads, &ptotal, &clear);

	/* Started before memory is owned (starting may raise); from here on
	 * it is finished, which never raises, before any error. */
	struct stat rst;
	if (plabel && preads && ptotal < 0 && stat(preads, &rst) == 0)
		ptotal = (long long)rst.st_size;
	if (plabel)
		s.progress = bgrun_progress_start(L, plabel, ptotal);

	/* From here on we own memory: no raising until it is released. */
	lua_Integer argc = luaL_len(L, 1);
	s.argv = calloc((size_t)argc + 1, sizeof *s.argv);
	int oom = s.argv == NULL;
	for (lua_Integer i = 1; !oom && i <= argc; i++) {
		lua_rawgeti(L, 1, i);
		oom = (s.argv[i - 1] = dup_or_null(lua_tostring(L, -1))) == NULL;
		lua_pop(L, 1);
	}
	if (!oom && (envt || clear))
		oom = (s.envp = build_env(L, envt, clear)) == NULL;
	/* the name /proc shows for the file (a missing one is just not reported) */
	if (!oom && s.progress && preads)
		s.reads = realpath(preads, NULL);
	if (oom) {
		spec_free(&s);
		bgrun_progress_finish(s.progress, 0);
		return luaL_error(L, "proc.run: out of memory");
	}

	outcome o;
	memset(&o, 0, sizeof o);
	int rc = execute(&s, &o);
	int err = errno;
	spec_free(&s);
	if (s.progress) {
		int pok = rc == 0 && !o.spawn_errno && !o.interrupted && !o.timed_out && WIFEXITED(o.status) &&
		          WEXITSTATUS(o.status) == 0;
		if (preads)
			bgrun_progress_update(s.progress, pok && ptotal >= 0 ? ptotal : 0);
		else
			report_progress(&s, &o);
		bgrun_progress_finish(s.progress, pok);
		s.progress = NULL;
	}
	if (rc != 0) {
		buf_free(&o.out[0]);
		buf_free(&o.out[1]);
		bgrun_error_new(L, "proc", op, "SpawnFailed", "cannot %s: %s", o.spawn_what ? o.spawn_what : "start the program", strerror(err));
		bgrun_error_set_str(L, "code", "spawn");
		bgrun_error_throw(L);
	}
	if (o.spawn_errno) {
		bgrun_error_new(L, "proc", op, o.spawn_errno == ENOENT ? "NotFound" : "SpawnFailed",
		                "cannot %s: %s", o.spawn_what, strerror(o.spawn_errno));
		bgrun_error_set_str(L, "code", o.spawn_errno == ENOENT ? "ENOENT" : "spawn");
		bgrun_error_throw(L);
	}
	if (o.interrupted) {
		buf_free(&o.out[0]);
		buf_free(&o.out[1]);
		bgrun_throw_interrupted(L, "proc", op);
	}
	if (o.timed_out) {
		bgrun_error_new(L, "proc", op, "Timeout", "did not finish within %gs; its process group was killed", (double)s.timeout);
		bgrun_error_set_str(L, "code", "timeout");
		push_output(L, &o, 0, "stdout");
		push_output(L, &o, 1, "stderr");
		buf_free(&o.out[0]);
		buf_free(&o.out[1]);
		bgrun_error_throw(L);
	}
	push_result(L, &o);
	return 1;
}

static const luaL_Reg proc_funcs[] = {
	{"run", proc_run},
	{NULL, NULL},
};

int luaopen_proc(lua_State *L)
{
	luaL_newlib(L, proc_funcs);
	return 1;
}
