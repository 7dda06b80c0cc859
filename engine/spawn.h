/* The one process spawner (fork + exec, never a shell): proc.run, the
 * archive writer's commands and kubeconfig's exec credential plugins all
 * start programs through it. The child runs in its own process group, so
 * a timeout or an interrupt stops it with everything it started
 * (bgrun_spawn_stop). Pure C: no Lua, never raises. */
#ifndef BGRUN_SPAWN_H
#define BGRUN_SPAWN_H

#include <sys/types.h>

/* What the child gets as descriptor 0, 1 or 2, besides a descriptor of
 * ours (dup'ed onto it; we keep ours). */
enum {
	BGRUN_FD_NULL = -2,    /* /dev/null */
	BGRUN_FD_PIPE = -3,    /* a pipe; our end in pipe[i], non-blocking */
	BGRUN_FD_INHERIT = -4, /* ours */
};

typedef struct bgrun_spawn {
	/* in */
	char *const *argv;   /* argv[0] is looked up on PATH */
	char *const *envp;   /* NULL: this process's environment */
	const char *cwd;     /* NULL: ours */
	int fd[3];           /* the child's stdin, stdout, stderr */
	int exec_error_to_stderr; /* a failed exec prints "cannot execute
	                       * ARGV0: REASON" on the child's stderr and
	                       * exits 127, instead of child_errno */
	/* out */
	pid_t pid;
	int pipe[3];         /* our ends of the BGRUN_FD_PIPE ones, else -1:
	                      * [0] we write, [1] and [2] we read */
	int child_errno;     /* the child could not change directory or exec;
	                      * it has been reaped (pid is 0) */
	const char *child_what; /* then "change directory" or "execute" */
} bgrun_spawn;

/* Starts s->argv. 0: started, or failed in the child (child_errno set);
 * -1 with errno: failed here (fork, pipe, /dev/null), nothing left open. */
int bgrun_spawn_start(bgrun_spawn *s);
/* Closes our pipe ends that are still open. */
void bgrun_spawn_close(bgrun_spawn *s);
/* Stops pid's process group: SIGTERM, SIGKILL after grace_ms, and reaps
 * pid (status in *status). */
void bgrun_spawn_stop(pid_t pid, int *status, int grace_ms);

#endif
