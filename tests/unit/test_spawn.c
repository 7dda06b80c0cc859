/* Unit tests for the one process spawner (spawn.c). */
#define _DEFAULT_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

#include "spawn.h"

/* Reads fd (non-blocking) until EOF into out. */
static size_t read_all(int fd, char *out, size_t cap)
{
	size_t n = 0;
	for (;;) {
		struct pollfd p = {fd, POLLIN, 0};
		poll(&p, 1, 5000);
		ssize_t r = read(fd, out + n, cap - 1 - n);
		if (r < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	out[n] = '\0';
	return n;
}

static int reap(pid_t pid)
{
	int st;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void pipes_carry_stdin_and_output(void **state)
{
	(void)state;
	char *argv[] = {"sh", "-c", "read x; echo \"out:$x:$PWD:$ONLY\"; echo err >&2; exit 3", NULL};
	char *envp[] = {"ONLY=yes", "PATH=/usr/bin:/bin", NULL};
	bgrun_spawn s;
	memset(&s, 0, sizeof s);
	s.argv = argv;
	s.envp = envp;
	s.cwd = "/";
	s.fd[0] = s.fd[1] = s.fd[2] = BGRUN_FD_PIPE;
	assert_int_equal(bgrun_spawn_start(&s), 0);
	assert_true(s.pid > 0);
	assert_int_equal(s.child_errno, 0);
	assert_int_equal(write(s.pipe[0], "hi\n", 3), 3);
	close(s.pipe[0]);
	s.pipe[0] = -1;
	char out[256], err[256];
	read_all(s.pipe[1], out, sizeof out);
	read_all(s.pipe[2], err, sizeof err);
	assert_string_equal(out, "out:hi:/:yes\n");
	assert_string_equal(err, "err\n");
	assert_int_equal(reap(s.pid), 3);
	bgrun_spawn_close(&s);
	assert_int_equal(s.pipe[1], -1);
}

static void child_failures_are_reported(void **state)
{
	(void)state;
	char *argv[] = {"/nonexistent/program", NULL};
	bgrun_spawn s;
	memset(&s, 0, sizeof s);
	s.argv = argv;
	s.fd[0] = BGRUN_FD_NULL;
	s.fd[1] = BGRUN_FD_PIPE;
	s.fd[2] = BGRUN_FD_INHERIT;
	assert_int_equal(bgrun_spawn_start(&s), 0);
	assert_int_equal(s.child_errno, ENOENT);
	assert_string_equal(s.child_what, "execute");
	assert_int_equal(s.pid, 0);
	assert_int_equal(s.pipe[1], -1); /* nothing left open */

	char *ls[] = {"ls", NULL};
	s.argv = ls;
	s.cwd = "/nonexistent/dir";
	assert_int_equal(bgrun_spawn_start(&s), 0);
	assert_int_equal(s.child_errno, ENOENT);
	assert_string_equal(s.child_what, "change directory");

	/* or on the child's stderr, for callers that read it anyway */
	s.argv = argv;
	s.cwd = NULL;
	s.fd[2] = BGRUN_FD_PIPE;
	s.exec_error_to_stderr = 1;
	assert_int_equal(bgrun_spawn_start(&s), 0);
	assert_true(s.pid > 0);
	char err[256];
	read_all(s.pipe[2], err, sizeof err);
	assert_string_equal(err, "cannot execute /nonexistent/program: No such file or directory\n");
	assert_int_equal(reap(s.pid), 127);
	bgrun_spawn_close(&s);
}

static void stop_ends_the_whole_group(void **state)
{
	(void)state;
	/* a grandchild that ignores nothing, and a child that ignores TERM */
	char *argv[] = {"sh", "-c", "trap '' TERM; sleep 30 & echo $!; wait", NULL};
	bgrun_spawn s;
	memset(&s, 0, sizeof s);
	s.argv = argv;
	s.fd[0] = BGRUN_FD_NULL;
	s.fd[1] = BGRUN_FD_PIPE;
	s.fd[2] = BGRUN_FD_INHERIT;
	assert_int_equal(bgrun_spawn_start(&s), 0);
	char line[64] = "";
	size_t n = 0;
	while (n == 0 || line[n - 1] != '\n') {
		struct pollfd p = {s.pipe[1], POLLIN, 0};
		poll(&p, 1, 5000);
		ssize_t r = read(s.pipe[1], line + n, sizeof line - 1 - n);
		if (r > 0)
			n += (size_t)r;
		else if (r == 0)
			break;
	}
	line[n] = '\0';
	pid_t grandchild = (pid_t)atoi(line);
	assert_true(grandchild > 0);
	int status = 0;
	bgrun_spawn_stop(s.pid, &status, 200); /* TERM is ignored: KILL after 200 ms */
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGKILL);
	usleep(200000);
	/* gone with its group (or a zombie its new parent has yet to reap) */
	if (kill(grandchild, 0) == 0) {
		char path[64], st[512] = "";
		snprintf(path, sizeof path, "/proc/%d/stat", (int)grandchild);
		FILE *f = fopen(path, "r");
		if (f) {
			size_t got = fread(st, 1, sizeof st - 1, f);
			st[got] = '\0';
			fclose(f);
		}
		const char *close_paren = strrchr(st, ')');
		assert_non_null(close_paren);
		assert_int_equal(close_paren[2], 'Z');
	}
	bgrun_spawn_close(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(pipes_carry_stdin_and_output),
		cmocka_unit_test(child_failures_are_reported),
		cmocka_unit_test(stop_ends_the_whole_group),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
