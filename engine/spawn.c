/* The one process spawner (spawn.h). */
#define _GNU_SOURCE /* pipe2, execvpe */
#include "spawn.h"
#include "clock.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* In the child: the descriptors, the directory, then the program. */
static void child(const bgrun_spawn *s, const int theirs[3], int status_fd)
{
	setpgid(0, 0);
	signal(SIGPIPE, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	for (int i = 0; i < 3; i++) {
		int fd = theirs[i];
		if (s->fd[i] == BGRUN_FD_NULL)
			fd = open("/dev/null", i == 0 ? O_RDONLY : O_WRONLY);
		if (fd >= 0 && fd != i)
			dup2(fd, i);
		else if (fd == i)
			fcntl(fd, F_SETFD, 0); /* keep it across exec */
	}
	int what = 0;
	if (s->cwd && chdir(s->cwd) != 0) {
		what = 1;
	} else {
		if (s->envp)
			execvpe(s->argv[0], s->argv, s->envp);
		else
			execvp(s->argv[0], s->argv);
	}
	int report[2] = {errno, what};
	if (s->exec_error_to_stderr) {
		char msg[512];
		int n = snprintf(msg, sizeof msg, "cannot %s %s: %s\n", what ? "change directory to" : "execute",
		                 what ? s->cwd : s->argv[0], strerror(report[0]));
		ssize_t r = write(2, msg, n > 0 ? (size_t)n : 0);
		(void)r;
	} else {
		ssize_t r = write(status_fd, report, sizeof report);
		(void)r;
	}
	_exit(127);
}

int bgrun_spawn_start(bgrun_spawn *s)
{
	int p[3][2] = {{-1, -1}, {-1, -1}, {-1, -1}}, status[2] = {-1, -1};
	int theirs[3];
	s->pid = 0;
	s->child_errno = 0;
	s->child_what = NULL;
	for (int i = 0; i < 3; i++) {
		s->pipe[i] = -1;
		theirs[i] = s->fd[i] >= 0 ? s->fd[i] : s->fd[i] == BGRUN_FD_INHERIT ? i : -1;
		if (s->fd[i] == BGRUN_FD_PIPE && pipe2(p[i], O_CLOEXEC) != 0)
			goto fail;
		if (s->fd[i] == BGRUN_FD_PIPE)
			theirs[i] = i == 0 ? p[i][0] : p[i][1];
	}
	if (pipe2(status, O_CLOEXEC) != 0)
		goto fail;
	pid_t pid = fork();
	if (pid < 0)
		goto fail;
	if (pid == 0)
		child(s, theirs, status[1]);
	setpgid(pid, pid); /* both sides set it: no race with an early kill */
	close_fd(&status[1]);
	for (int i = 0; i < 3; i++) {
		if (s->fd[i] != BGRUN_FD_PIPE)
			continue;
		close_fd(i == 0 ? &p[i][0] : &p[i][1]);
		s->pipe[i] = i == 0 ? p[i][1] : p[i][0];
		fcntl(s->pipe[i], F_SETFL, fcntl(s->pipe[i], F_GETFL) | O_NONBLOCK);
	}
	int report[2];
	ssize_t got;
	while ((got = read(status[0], report, sizeof report)) < 0 && errno == EINTR)
		;
	close_fd(&status[0]);
	if (got == (ssize_t)sizeof report) {
		int st;
		while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
			;
		bgrun_spawn_close(s);
		s->child_errno = report[0];
		s->child_what = report[1] ? "change directory" : "execute";
		return 0;
	}
	s->pid = pid;
	return 0;

fail:;
	int e = errno;
	for (int i = 0; i < 3; i++) {
		close_fd(&p[i][0]);
		close_fd(&p[i][1]);
	}
	close_fd(&status[0]);
	close_fd(&status[1]);
	errno = e;
	return -1;
}

void bgrun_spawn_close(bgrun_spawn *s)
{
	for (int i = 0; i < 3; i++)
		close_fd(&s->pipe[i]);
}

void bgrun_spawn_stop(pid_t pid, int *status, int grace_ms)
{
	if (pid <= 0)
		return;
	kill(-pid, SIGTERM);
	for (int waited = 0; waited < grace_ms; waited += 20) {
		if (waitpid(pid, status, WNOHANG) == pid) {
			kill(-pid, SIGKILL); /* stragglers in the group */
			return;
		}
		bgrun_nap_uninterruptible(0.02);
	}
	kill(-pid, SIGKILL);
	while (waitpid(pid, status, 0) < 0 && errno == EINTR)
		;
}
