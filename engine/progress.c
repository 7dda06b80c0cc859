/* progress: see progress.h. The terminal line is shared by every running
 * transfer, and stderr is one per process, so the state here is
 * process-wide by nature: a list of running reporters under one mutex. */
#define _POSIX_C_SOURCE 200809L
#include "progress.h"
#include "bgrun.h"
#include "clock.h"
#include "buf.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define TTY_PERIOD 0.2      /* seconds between redraws of the terminal line */
#define TTY_FIRST 0.3       /* a transfer shorter than this is never drawn */
#define LINES_PERIOD 10.0   /* plain lines when stderr is not a terminal */
#define JSON_PERIOD 5.0
#define SAMPLE_PERIOD 0.5   /* the rate is smoothed over samples this far apart */

struct bgrun_progress {
	char *label, *step;
	int mode, color;
	double interval;
	long long total, bytes;
	double t0, last_emit, sample_t;
	long long sample_bytes;
	double rate; /* bytes/s, smoothed over samples */
	int sampled; /* rate comes from samples, not the average since start */
	int emitted; /* lines/events printed while running */
	int drawn;   /* shown on the terminal line at least once */
	struct bgrun_progress *next;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static bgrun_progress *running; /* terminal mode: drawn together */
static size_t line_len;         /* characters of the line now on the terminal */
static double last_draw;
static FILE *test_out;
static double (*test_clock)(void);
static int test_width;

static FILE *out_stream(void)
{
	return test_out ? test_out : stderr;
}

static double now_s(void)
{
	if (test_clock)
		return test_clock();
	return bgrun_clock();
}

static int term_width(void)
{
	if (test_width > 0)
		return test_width;
	struct winsize ws;
	if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 10)
		return ws.ws_col;
	return 80;
}

void bgrun_progress_set_output(FILE *out, double (*clock)(void), int width)
{
	pthread_mutex_lock(&mu);
	test_out = out;
	test_clock = clock;
	test_width = width;
	line_len = 0;
	last_draw = 0;
	pthread_mutex_unlock(&mu);
}

/* "12.0 MiB" */
static void fmt_bytes(buf *b, double n)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	int u = 0;
	while (n >= 1024 && u < 4) {
		n /= 1024;
		u++;
	}
	if (u == 0)
		buf_printf(b, "%.0f B", n);
	else
		buf_printf(b, "%.1f %s", n, units[u]);
}

/* "45s", "3m05s", "1h02m" */
static void fmt_secs(buf *b, double s)
{
	long long t = (long long)(s + 0.5);
	if (t < 60)
		buf_printf(b, "%llds", t);
	else if (t < 3600)
		buf_printf(b, "%lldm%02llds", t / 60, t % 60);
	else
		buf_printf(b, "%lldh%02lldm", t / 3600, (t % 3600) / 60);
}

static double eta_of(const bgrun_progress *p)
{
	if (p->total < 0 || p->rate <= 0 || p->bytes > p->total)
		return -1;
	double eta = (double)(p->total - p->bytes) / p->rate;
	return eta < 100 * 3600 ? eta : -1; /* a stalled transfer has no useful ETA */
}

/* label: bytes[ of total (pct%)], rate/s[, ETA t] */
static void describe(buf *b, const bgrun_progress *p, int compact)
{
	buf_printf(b, compact ? "%s " : "%s: ", p->label);
	fmt_bytes(b, (double)p->bytes);
	if (p->total >= 0) {
		buf_appends(b, compact ? "/" : " of ");
		fmt_bytes(b, (double)p->total);
		buf_printf(b, " (%d%%)", p->total > 0 ? (int)(100.0 * (double)p->bytes / (double)p->total) : 100);
	}
	buf_appends(b, compact ? " " : ", ");
	fmt_bytes(b, p->rate);
	buf_appends(b, "/s");
	double eta = eta_of(p);
	if (eta >= 0) {
		buf_appends(b, compact ? " ETA " : ", ETA ");
		fmt_secs(b, eta);
	}
}

static void log_prefix(buf *b, const bgrun_progress *p)
{
	struct timeval tv;
	gettimeofday(&tv, NULL);
	struct tm tm;
	gmtime_r(&tv.tv_sec, &tm);
	char t[16];
	strftime(t, sizeof t, "%H:%M:%S", &tm);
	buf_printf(b, "%s.%03d %sINFO %s ", t, (int)(tv.tv_usec / 1000), p->color ? "\033[36m" : "",
	           p->color ? "\033[0m" : "");
	if (p->step)
		buf_printf(b, "[%s] ", p->step);
}

/* Erases the terminal line; the caller holds mu. */
static void clear_locked(FILE *out)
{
	if (line_len == 0)
		return;
	/* one write: stderr is unbuffered */
	char blank[512];
	size_t n = line_len + 2 < sizeof blank ? line_len + 2 : sizeof blank;
	memset(blank, ' ', n);
	blank[0] = blank[n - 1] = '\r';
	fwrite(blank, 1, n, out);
	line_len = 0;
}

void bgrun_progress_clear_line(void)
{
	pthread_mutex_lock(&mu);
	FILE *out = out_stream();
	clear_locked(out);
	fflush(out);
	last_draw = 0; /* drawn again at the next update */
	pthread_mutex_unlock(&mu);
}

/* Rewrites the terminal line with every running transfer; holds mu. */
static void draw_locked(double now)
{
	FILE *out = out_stream();
	buf b = BUF_INIT;
	int n = 0;
	for (bgrun_progress *p = running; p; p = p->next) {
		if (now - p->t0 < TTY_FIRST)
			continue;
		if (n++)
			buf_appends(&b, "  |  ");
		describe(&b, p, 1);
		p->drawn = 1;
	}
	if (n == 0 || b.data == NULL) {
		buf_free(&b);
		return;
	}
	/* never wrap: "\r" only rewinds one terminal row */
	size_t width = (size_t)term_width() - 1;
	if (width > 500)
		width = 500; /* clear_locked erases at most that much */
	size_t len = b.len > width ? width : b.len;
	buf line = BUF_INIT;
	buf_appends(&line, "\r");
	buf_append(&line, b.data, len);
	for (size_t i = len; i < line_len; i++)
		buf_appends(&line, " "); /* what is left of a longer line before */
	if (line.data)
		fwrite(line.data, 1, line.len, out); /* one write: stderr is unbuffered */
	buf_free(&line);
	line_len = len;
	fflush(out);
	last_draw = now;
	buf_free(&b);
}

static void json_event(bgrun_progress *p, double now, int done, int ok)
{
	char t[40], base[32];
	struct timeval tv;
	gettimeofday(&tv, NULL);
	struct tm tm;
	gmtime_r(&tv.tv_sec, &tm);
	strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(t, sizeof t, "%.20s.%03dZ", base, (int)(tv.tv_usec / 1000));
	double elapsed = now - p->t0;
	double rate = done ? (elapsed > 0 ? (double)p->bytes / elapsed : 0) : p->rate;
	double eta = done ? (p->total >= 0 ? 0 : -1) : eta_of(p);
	json_t *f = json_object();
	json_object_set_new(f, "event", json_string("progress"));
	json_object_set_new(f, "label", json_string(p->label));
	json_object_set_new(f, "bytes", json_integer(p->bytes));
	json_object_set_new(f, "total", p->total >= 0 ? json_integer(p->total) : json_null());
	json_object_set_new(f, "rate", json_integer((json_int_t)(rate + 0.5)));
	json_object_set_new(f, "eta_s", eta >= 0 ? json_real((double)(long long)(eta * 10 + 0.5) / 10) : json_null());
	json_object_set_new(f, "elapsed_s", json_real((double)(long long)(elapsed * 1000 + 0.5) / 1000));
	json_object_set_new(f, "done", json_boolean(done));
	if (done)
		json_object_set_new(f, "ok", json_boolean(ok));
	json_t *o = json_deep_copy(f);
	json_object_set_new(o, "time", json_string(t));
	json_object_set_new(o, "level", json_string("info"));
	json_object_set_new(o, "message", json_string("progress"));
	if (p->step)
		json_object_set_new(o, "step", json_string(p->step));
	json_object_set_new(o, "fields", f);
	char *line = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(10));
	json_decref(o);
	if (line) {
		fprintf(out_stream(), "%s\n", line);
		fflush(out_stream());
		free(line);
	}
}

static void plain_line(bgrun_progress *p, double now, int done)
{
	buf b = BUF_INIT;
	log_prefix(&b, p);
	if (done) {
		double elapsed = now - p->t0;
		buf_printf(&b, "%s: ", p->label);
		fmt_bytes(&b, (double)p->bytes);
		buf_appends(&b, " in ");
		if (elapsed < 60)
			buf_printf(&b, "%.1fs", elapsed);
		else
			fmt_secs(&b, elapsed);
		buf_appends(&b, " (");
		fmt_bytes(&b, elapsed > 0 ? (double)p->bytes / elapsed : 0);
		buf_appends(&b, "/s)");
	} else {
		buf_appends(&b, "progress ");
		describe(&b, p, 0);
	}
	if (b.data) {
		FILE *out = out_stream();
		fprintf(out, "%s\n", b.data);
		fflush(out);
	}
	buf_free(&b);
}

static void sample(bgrun_progress *p, double now)
{
	double dt = now - p->sample_t;
	if (p->bytes < p->sample_bytes) {
		/* a retried request starts again from zero */
		p->sample_t = now;
		p->sample_bytes = p->bytes;
		return;
	}
	if (dt < SAMPLE_PERIOD) {
		/* until the first sample: the average so far */
		if (!p->sampled && now - p->t0 > 0)
			p->rate = (double)p->bytes / (now - p->t0);
		return;
	}
	double inst = (double)(p->bytes - p->sample_bytes) / dt;
	p->rate = p->sampled ? 0.6 * p->rate + 0.4 * inst : inst;
	p->sampled = 1;
	p->sample_t = now;
	p->sample_bytes = p->bytes;
}

/* Prints what is due; holds mu. */
static void tick_locked(bgrun_progress *p)
{
	double now = now_s();
	sample(p, now);
	switch (p->mode) {
	case BGRUN_PROGRESS_TTY:
		if (now - last_draw >= TTY_PERIOD && now - p->t0 >= TTY_FIRST)
			draw_locked(now);
		break;
	case BGRUN_PROGRESS_LINES:
		if (now - p->last_emit >= p->interval) {
			plain_line(p, now, 0);
			p->last_emit = now;
			p->emitted++;
		}
		break;
	case BGRUN_PROGRESS_JSON:
		if (now - p->last_emit >= p->interval) {
			json_event(p, now, 0, 1);
			p->last_emit = now;
			p->emitted++;
		}
		break;
	}
}

static double env_interval(double dflt)
{
	const char *v = getenv("BGRUN_PROGRESS_INTERVAL");
	if (v == NULL || *v == '\0')
		return dflt;
	char *end;
	double d = strtod(v, &end);
	return (*end == '\0' && d >= 0 && d < 1e6) ? d : dflt;
}

bgrun_progress *bgrun_progress_start_mode(int mode, const char *label, const char *step, long long total,
                                          int color, double interval)
{
	if (mode == BGRUN_PROGRESS_OFF)
		return NULL;
	if (mode == BGRUN_PROGRESS_TTY)
		bgrun_log_before_line(bgrun_progress_clear_line); /* log lines erase ours first */
	bgrun_progress *p = calloc(1, sizeof *p);
	if (p == NULL)
		return NULL;
	p->label = strdup(label ? label : "transfer");
	p->step = step ? strdup(step) : NULL;
	if (p->label == NULL || (step && p->step == NULL)) {
		free(p->label);
		free(p->step);
		free(p);
		return NULL;
	}
	p->mode = mode;
	p->color = color;
	p->interval = interval;
	p->total = total;
	pthread_mutex_lock(&mu);
	p->t0 = p->last_emit = p->sample_t = now_s();
	if (mode == BGRUN_PROGRESS_TTY) {
		bgrun_progress **q = &running; /* in start order on the line */
		while (*q)
			q = &(*q)->next;
		*q = p;
	}
	pthread_mutex_unlock(&mu);
	return p;
}

bgrun_progress *bgrun_progress_start(lua_State *L, const char *label, long long total)
{
	const char *off = getenv("BGRUN_PROGRESS");
	if (off && (strcmp(off, "0") == 0 || strcmp(off, "off") == 0 || strcmp(off, "false") == 0 ||
	            strcmp(off, "no") == 0))
		return NULL;
	int color = 0;
	int fmt = bgrun_log_mode(L, &color);
	int mode = fmt == 0 ? BGRUN_PROGRESS_OFF
	           : fmt == 2 ? BGRUN_PROGRESS_JSON
	           : isatty(STDERR_FILENO) ? BGRUN_PROGRESS_TTY
	                                               : BGRUN_PROGRESS_LINES;
	if (mode == BGRUN_PROGRESS_OFF)
		return NULL;
	bgrun_push_redacted(L, label, strlen(label));
	bgrun_progress *p = bgrun_progress_start_mode(mode, lua_tostring(L, -1), bgrun_log_step(L), total, color,
	                                              env_interval(mode == BGRUN_PROGRESS_JSON ? JSON_PERIOD : LINES_PERIOD));
	lua_pop(L, 1);
	return p;
}

void bgrun_progress_update(bgrun_progress *p, long long bytes)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&mu);
	p->bytes = bytes < 0 ? 0 : bytes;
	tick_locked(p);
	pthread_mutex_unlock(&mu);
}

void bgrun_progress_add(bgrun_progress *p, long long delta)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&mu);
	p->bytes += delta;
	tick_locked(p);
	pthread_mutex_unlock(&mu);
}

void bgrun_progress_set_total(bgrun_progress *p, long long total)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&mu);
	p->total = total;
	pthread_mutex_unlock(&mu);
}

void bgrun_progress_finish(bgrun_progress *p, int ok)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&mu);
	double now = now_s();
	if (p->mode == BGRUN_PROGRESS_TTY) {
		for (bgrun_progress **q = &running; *q; q = &(*q)->next)
			if (*q == p) {
				*q = p->next;
				break;
			}
		FILE *out = out_stream();
		clear_locked(out);
		if (p->drawn && ok)
			plain_line(p, now, 1);
		last_draw = 0;
		if (running)
			draw_locked(now);
		fflush(out);
	} else if (p->mode == BGRUN_PROGRESS_LINES) {
		if (p->emitted && ok)
			plain_line(p, now, 1);
	} else if (p->mode == BGRUN_PROGRESS_JSON) {
		json_event(p, now, 1, ok);
	}
	pthread_mutex_unlock(&mu);
	free(p->label);
	free(p->step);
	free(p);
}
