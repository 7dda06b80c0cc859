/* httpc: the engine's one transfer layer (see httpc.h). The callbacks only
 * move bytes between libcurl and C buffers, files or the caller's sink. */
#define _POSIX_C_SOURCE 200809L
#include "httpc.h"

#include "bgrun.h"
#include "clock.h"
#include "httputil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

enum {
	POLL_MS = 100,              /* how often a busy loop looks at the interrupt flag */
	DEFAULT_CONNECT_MS = 10000,
};

struct httpc_pool {
	CURLM *multi;     /* its connection cache outlives each transfer */
	CURLSH *share;    /* DNS answers and TLS sessions */
	CURLSH *share_h2; /* the same plus connections, for HTTP/2 transfers:
	                   * libcurl would hand an HTTP/2 request a cached
	                   * HTTP/1.1 connection, so they get a pool of their own */
};

int httpc_global_init(void)
{
	static int done;
	if (!done && curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return -1;
	done = 1;
	return 0;
}

httpc_pool *httpc_pool_new(long max_connects)
{
	if (httpc_global_init() != 0)
		return NULL;
	httpc_pool *p = calloc(1, sizeof *p);
	if (p == NULL)
		return NULL;
	p->multi = curl_multi_init();
	p->share = curl_share_init();
	p->share_h2 = curl_share_init();
	if (p->multi == NULL || p->share == NULL || p->share_h2 == NULL) {
		httpc_pool_free(p);
		return NULL;
	}
	curl_share_setopt(p->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	curl_share_setopt(p->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(p->share_h2, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	curl_share_setopt(p->share_h2, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(p->share_h2, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
	curl_multi_setopt(p->multi, CURLMOPT_MAXCONNECTS, max_connects);
	return p;
}

void httpc_pool_free(httpc_pool *p)
{
	if (p == NULL)
		return;
	if (p->multi)
		curl_multi_cleanup(p->multi);
	if (p->share)
		curl_share_cleanup(p->share);
	if (p->share_h2)
		curl_share_cleanup(p->share_h2);
	free(p);
}

httpc_policy httpc_policy_default(void)
{
	httpc_policy pol = {1, 0.2, 5.0, 30.0, 0, 0.0};
	return pol;
}

void httpc_xfer_init(httpc_xfer *x)
{
	memset(x, 0, sizeof *x);
	x->body_fd = -1;
	x->sink_fd = -1;
	x->policy = httpc_policy_default();
}

void httpc_stop(httpc_xfer *x)
{
	if (x->added) {
		curl_multi_remove_handle(x->pool->multi, x->easy);
		x->added = 0;
	}
}

void httpc_xfer_free(httpc_xfer *x)
{
	httpc_stop(x);
	if (x->easy) {
		curl_easy_cleanup(x->easy);
		x->easy = NULL;
	}
	curl_slist_free_all(x->hl);
	x->hl = NULL;
	buf_free(&x->out);
}

void httpc_unpause(httpc_xfer *x)
{
	if (x->paused && x->easy) {
		x->paused = 0;
		curl_easy_pause(x->easy, CURLPAUSE_CONT);
	}
}

/* -------------------------------------------------------------- callbacks */

static int is_2xx(const httpc_xfer *x)
{
	long status = 0;
	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
	return status >= 200 && status < 300;
}

static size_t write_fd(httpc_xfer *x, const char *data, size_t len)
{
	size_t off = 0;
	while (off < len) {
		ssize_t w = write(x->sink_fd, data + off, len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			x->sink_err = errno ? errno : EIO;
			return 0;
		}
		off += (size_t)w;
	}
	x->sunk += (long long)len;
	return len;
}

static size_t on_write(char *data, size_t size, size_t n, void *ud)
{
	httpc_xfer *x = ud;
	size_t len = size * n;
	int to_sink = x->sink_fd >= 0 || x->sink;
	if (to_sink && (x->sink_2xx || x->sink_fd >= 0) && !is_2xx(x))
		to_sink = 0;
	if (to_sink && x->sink_fd >= 0)
		return write_fd(x, data, len);
	if (to_sink) {
		size_t r = x->sink(x, data, len, x->ud);
		if (r == CURL_WRITEFUNC_PAUSE)
			x->paused = 1;
		return r;
	}
	if (x->max_out && x->out.len + len > x->max_out) {
		x->overflow = 1;
		return 0;
	}
	if (buf_append(&x->out, data, len) != 0) {
		x->oom = 1;
		return 0;
	}
	return len;
}

static long long body_len(const httpc_xfer *x)
{
	return x->body_n;
}

static size_t on_read(char *dst, size_t size, size_t n, void *ud)
{
	httpc_xfer *x = ud;
	size_t want = size * n;
	long long left = body_len(x) - x->body_pos;
	if (left <= 0)
		return 0;
	if ((long long)want > left)
		want = (size_t)left;
	if (x->body_fd < 0) {
		memcpy(dst, x->body + x->body_pos, want);
		x->body_pos += (long long)want;
		return want;
	}
	ssize_t got;
	do
		got = pread(x->body_fd, dst, want, (off_t)(x->body_off + x->body_pos));
	while (got < 0 && errno == EINTR);
	if (got <= 0)
		return CURL_READFUNC_ABORT; /* the file shrank or failed: never send short */
	x->body_pos += got;
	return (size_t)got;
}

/* curl rewinds the body to resend it on a fresh connection when a reused
 * one drops without an answer; a request that is not idempotent must not
 * go out twice (see before_send). */
static int on_seek(void *ud, curl_off_t offset, int origin)
{
	httpc_xfer *x = ud;
	if (origin != SEEK_SET || offset < 0 || offset > body_len(x))
		return CURL_SEEKFUNC_CANTSEEK;
	if (!x->idempotent)
		return CURL_SEEKFUNC_FAIL;
	x->body_pos = (long long)offset;
	return CURL_SEEKFUNC_OK;
}

/* libcurl silently sends a request again when its reused connection drops
 * before any answer. The server may already have applied a mutation, so a
 * request that is not idempotent goes out once; a second send aborts. */
static int before_send(void *ud, char *primary_ip, char *local_ip, int primary_port, int local_port)
{
	(void)primary_ip;
	(void)local_ip;
	(void)primary_port;
	(void)local_port;
	httpc_xfer *x = ud;
	x->sends++;
	return !x->idempotent && x->sends > 1 ? CURL_PREREQFUNC_ABORT : CURL_PREREQFUNC_OK;
}

/* ------------------------------------------------------------- attempts */

static void fail_now(httpc_xfer *x, CURLcode rc, const char *msg)
{
	x->rc = rc;
	x->done = 1;
	snprintf(x->errbuf, sizeof x->errbuf, "%s", msg);
}

static void set_method(httpc_xfer *x, CURL *e)
{
	const char *m = x->method ? x->method : "GET";
	int post = strcmp(m, "POST") == 0;
	if (strcmp(m, "HEAD") == 0) {
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
		return;
	}
	if (strcmp(m, "PUT") == 0 && (x->has_body || x->body_fd >= 0)) {
		curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)body_len(x));
	} else if (x->has_body || x->body_fd >= 0 || post || strcmp(m, "PATCH") == 0 || strcmp(m, "PUT") == 0) {
		curl_easy_setopt(e, CURLOPT_POST, 1L);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len(x));
	}
	curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
	curl_easy_setopt(e, CURLOPT_READDATA, (void *)x);
	curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, on_seek);
	curl_easy_setopt(e, CURLOPT_SEEKDATA, (void *)x);
	if (!post && strcmp(m, "GET") != 0 && !(strcmp(m, "PUT") == 0 && (x->has_body || x->body_fd >= 0)))
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
}

/* The caller's headers, "Expect:" (no 100-continue round trip) unless they
 * name one, then the hook's. 0 or -1 (out of memory). */
static int build_headers(httpc_xfer *x, struct curl_slist **hl)
{
	int expect = 0;
	for (const struct curl_slist *h = x->headers; h; h = h->next) {
		struct curl_slist *nl = curl_slist_append(*hl, h->data);
		if (nl == NULL)
			return -1;
		*hl = nl;
		expect |= strncasecmp(h->data, "expect:", 7) == 0;
	}
	if (!expect) {
		struct curl_slist *nl = curl_slist_append(*hl, "Expect:");
		if (nl == NULL)
			return -1;
		*hl = nl;
	}
	return 0;
}

/* The whole-attempt limit in ms: the attempt's own, cut to what is left of
 * the total deadline; 0 none; -1 when the deadline has passed. */
static long attempt_limit(const httpc_xfer *x)
{
	long ms = x->attempt_ms;
	if (x->deadline_at > 0) {
		double left = x->deadline_at - bgrun_clock();
		if (left <= 0)
			return -1;
		long lms = (long)(left * 1000) + 1;
		if (ms == 0 || lms < ms)
			ms = lms;
	}
	return ms;
}

static void deadline_passed(httpc_xfer *x)
{
	x->deadline_hit = 1;
	snprintf(x->errbuf, sizeof x->errbuf, "no complete answer within the deadline of %g s", x->policy.deadline);
}

static void reset_outcome(httpc_xfer *x)
{
	x->status = 0;
	x->rc = CURLE_OK;
	x->errbuf[0] = '\0';
	buf_reset(&x->out);
	x->body_pos = x->sunk = 0;
	x->sink_err = x->oom = x->overflow = x->hook_failed = x->deadline_hit = 0;
	x->sends = x->done = x->paused = 0;
	curl_slist_free_all(x->hl);
	x->hl = NULL;
}

static void set_common(httpc_pool *p, httpc_xfer *x, CURL *e, long limit)
{
	curl_easy_setopt(e, CURLOPT_PRIVATE, (void *)x);
	curl_easy_setopt(e, CURLOPT_URL, x->url);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_USERAGENT, "bgrun/" BGRUN_VERSION);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_SHARE, x->h2 ? p->share_h2 : p->share);
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, x->h2 ? (long)CURL_HTTP_VERSION_2TLS : (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, (void *)x);
	curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, before_send);
	curl_easy_setopt(e, CURLOPT_PREREQDATA, (void *)x);
	long connect = x->connect_ms ? x->connect_ms : DEFAULT_CONNECT_MS;
	if (limit > 0 && limit < connect)
		connect = limit;
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, connect);
	if (limit > 0)
		curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, limit);
	if (x->idle_ms > 0) {
		/* stalled (under a byte a second) for idle_ms is a failure */
		curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (x->idle_ms + 999) / 1000);
	}
	set_method(x, e);
}

int httpc_start(httpc_pool *p, httpc_xfer *x)
{
	x->pool = p;
	httpc_stop(x);
	reset_outcome(x);
	if (x->attempt++ == 0)
		x->deadline_at = x->policy.deadline > 0 ? bgrun_clock() + x->policy.deadline : 0;
	long limit = attempt_limit(x);
	if (limit < 0) {
		fail_now(x, CURLE_OPERATION_TIMEDOUT, "");
		deadline_passed(x);
		return -1;
	}
	if (x->sink_fd >= 0 && (ftruncate(x->sink_fd, 0) != 0 || lseek(x->sink_fd, 0, SEEK_SET) != 0)) {
		x->sink_err = errno;
		x->hook_failed = 1;
		fail_now(x, CURLE_WRITE_ERROR, "cannot rewind the download");
		return -1;
	}
	if (x->easy == NULL && (x->easy = curl_easy_init()) == NULL) {
		fail_now(x, CURLE_OUT_OF_MEMORY, "cannot create a curl handle");
		return -1;
	}
	CURL *e = x->easy;
	curl_easy_reset(e);
	set_common(p, x, e, limit);
	char err[CURL_ERROR_SIZE];
	err[0] = '\0';
	if (build_headers(x, &x->hl) != 0) {
		fail_now(x, CURLE_OUT_OF_MEMORY, "out of memory");
		return -1;
	}
	if (x->pre_send && x->pre_send(x, e, &x->hl, x->ud, err, sizeof err) != 0) {
		x->hook_failed = 1;
		fail_now(x, CURLE_ABORTED_BY_CALLBACK, err[0] ? err : "out of memory");
		return -1;
	}
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hl);
	CURLMcode mc = curl_multi_add_handle(p->multi, e);
	if (mc != CURLM_OK) {
		char msg[CURL_ERROR_SIZE];
		snprintf(msg, sizeof msg, "cannot start the transfer: %s", curl_multi_strerror(mc));
		fail_now(x, CURLE_FAILED_INIT, msg);
		return -1;
	}
	x->added = 1;
	return 0;
}

/* ------------------------------------------------------------- the loop */

/* Marks an attempt that libcurl finished. */
static void attempt_done(httpc_xfer *x, CURLcode rc)
{
	x->rc = x->oom && rc != CURLE_OK ? CURLE_OUT_OF_MEMORY : rc;
	if (x->oom && x->rc == CURLE_OK)
		x->rc = CURLE_OUT_OF_MEMORY;
	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->status);
	httpc_stop(x);
	x->done = 1;
	if (x->rc == CURLE_OPERATION_TIMEDOUT && x->deadline_at > 0 && bgrun_clock() >= x->deadline_at - 0.01)
		deadline_passed(x);
}

static void pump(httpc_pool *p)
{
	int still = 0;
	curl_multi_perform(p->multi, &still);
	CURLMsg *msg;
	int q;
	while ((msg = curl_multi_info_read(p->multi, &q))) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		httpc_xfer *x = NULL;
		CURLcode rc = msg->data.result;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
		if (x && x->added)
			attempt_done(x, rc); /* msg is invalid from here */
	}
}

static void poll_pool(httpc_pool *p, int ms, const int *fds, int nfds, int *ready)
{
	struct curl_waitfd w[4];
	int n = nfds < 4 ? nfds : 4;
	for (int i = 0; i < n; i++) {
		w[i].fd = fds[i];
		w[i].events = CURL_WAIT_POLLIN;
		w[i].revents = 0;
	}
	curl_multi_poll(p->multi, n ? w : NULL, (unsigned)n, ms, NULL);
	if (ready) {
		*ready = 0;
		for (int i = 0; i < n; i++)
			*ready |= w[i].revents != 0;
	}
}

void httpc_step(httpc_pool *p, int ms, const int *fds, int nfds, int *ready)
{
	pump(p);
	poll_pool(p, ms, fds, nfds, ready);
	pump(p);
}

int httpc_wait(httpc_pool *p, httpc_xfer *x, double deadline, int (*ready)(void *), void *ud)
{
	for (;;) {
		pump(p);
		if (x->done)
			return HTTPC_OK;
		if (ready && ready(ud))
			return HTTPC_READY;
		if (x->tick)
			x->tick(x, x->ud);
		if (!x->ignore_interrupt && bgrun_interrupted())
			return HTTPC_INTERRUPTED;
		int ms = POLL_MS;
		if (deadline > 0) {
			double left = deadline - bgrun_clock();
			if (left <= 0)
				return HTTPC_DEADLINE;
			if (left * 1000 < ms)
				ms = (int)(left * 1000) + 1;
		}
		poll_pool(p, ms, NULL, 0, NULL);
	}
}

/* --------------------------------------------------------------- retries */

static int tls_failure(CURLcode cc)
{
	return strcmp(httputil_reason(cc), "TLS") == 0;
}

/* The request never left: safe to retry whatever the method. */
static int not_sent(CURLcode cc)
{
	return cc == CURLE_COULDNT_CONNECT;
}

int httpc_retryable(const httpc_xfer *x)
{
	if (x->hook_failed || x->deadline_hit || x->sink_err || x->overflow || x->attempt >= x->policy.attempts)
		return 0;
	if (x->rc != CURLE_OK)
		return !tls_failure(x->rc) && httputil_transient(x->rc) && (x->idempotent || not_sent(x->rc));
	return x->policy.retry_status && x->idempotent &&
	       (x->status == 429 || (x->status >= 500 && x->status != 501));
}

double httpc_backoff(const httpc_policy *pol, int attempt)
{
	double d = pol->backoff;
	for (int i = 1; i < attempt && d < pol->backoff_cap; i++)
		d *= 2;
	if (d > pol->backoff_cap)
		d = pol->backoff_cap;
	/* jitter, up to a quarter more (never less, so a wait is at least the
	 * nominal one): many clients retrying do not arrive together */
	return d * (1.0 + 0.25 * ((double)rand() / RAND_MAX));
}

double httpc_retry_after(const httpc_xfer *x)
{
	const char *v = httpc_header(x, "Retry-After");
	if (v == NULL)
		return -1;
	char *end;
	double s = strtod(v, &end);
	if (end == v || s < 0)
		return -1; /* an HTTP date: the backoff decides */
	return s > x->policy.retry_after_cap ? x->policy.retry_after_cap : s;
}

/* After an attempt finished: schedules the next one (1) or ends x (0). */
static int schedule_retry(httpc_xfer *x)
{
	if (!httpc_retryable(x))
		return 0;
	double wait = x->rc == CURLE_OK ? httpc_retry_after(x) : -1;
	if (wait < 0)
		wait = httpc_backoff(&x->policy, x->attempt);
	double now = bgrun_clock();
	if (x->deadline_at > 0 && now + wait >= x->deadline_at) {
		/* no time left for another attempt: this outcome stands, and a
		 * transport failure says that the deadline ended the retries */
		if (x->rc != CURLE_OK) {
			char last[CURL_ERROR_SIZE];
			snprintf(last, sizeof last, "%s", httpc_errmsg(x));
			x->deadline_hit = 1;
			snprintf(x->errbuf, sizeof x->errbuf, "no complete answer within the deadline of %g s (last attempt: %.150s)",
			         x->policy.deadline, last);
		}
		return 0;
	}
	x->not_before = now + wait;
	return 1;
}

static int all_ignore_interrupt(httpc_xfer **xs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (xs[i] && !xs[i]->ignore_interrupt && !xs[i]->finished)
			return 0;
	return 1;
}

/* Starts what may start; returns the number running. */
static size_t start_ready(httpc_pool *p, httpc_xfer **xs, size_t n, size_t cap, double now, double *next)
{
	size_t running = 0;
	for (size_t i = 0; i < n; i++)
		running += xs[i] && xs[i]->added;
	for (size_t i = 0; i < n && running < cap; i++) {
		httpc_xfer *x = xs[i];
		if (x == NULL || x->finished || x->added || (x->done && x->attempt > 0 && x->not_before == 0))
			continue;
		if (x->not_before > now) {
			if (*next == 0 || x->not_before < *next)
				*next = x->not_before;
			continue;
		}
		x->not_before = 0;
		if (httpc_start(p, x) == 0)
			running++;
	}
	return running;
}

/* Ends or reschedules the transfers whose attempt finished; 1 when all ended. */
static int settle(httpc_xfer **xs, size_t n)
{
	int all = 1;
	for (size_t i = 0; i < n; i++) {
		httpc_xfer *x = xs[i];
		if (x == NULL || x->finished)
			continue;
		if (x->done && x->not_before == 0 && !schedule_retry(x))
			x->finished = 1;
		all &= x->finished;
	}
	return all;
}

int httpc_run(httpc_pool *p, httpc_xfer **xs, size_t n, size_t cap)
{
	for (size_t i = 0; i < n; i++) {
		if (xs[i]) {
			xs[i]->attempt = 0;
			xs[i]->finished = 0;
			xs[i]->done = 0;
			xs[i]->not_before = 0;
		}
	}
	if (cap == 0)
		cap = 1;
	for (;;) {
		double next = 0, now = bgrun_clock();
		size_t running = start_ready(p, xs, n, cap, now, &next);
		pump(p);
		if (settle(xs, n))
			return HTTPC_OK;
		for (size_t i = 0; i < n; i++)
			if (xs[i] && xs[i]->added && xs[i]->tick)
				xs[i]->tick(xs[i], xs[i]->ud);
		if (bgrun_interrupted() && !all_ignore_interrupt(xs, n))
			return HTTPC_INTERRUPTED;
		int ms = POLL_MS;
		if (running == 0 && next > 0) {
			double left = next - bgrun_clock();
			ms = left <= 0 ? 0 : left * 1000 < POLL_MS ? (int)(left * 1000) + 1 : POLL_MS;
		}
		if (ms > 0)
			poll_pool(p, ms, NULL, 0, NULL);
	}
}

int httpc_perform(httpc_pool *p, httpc_xfer *x)
{
	httpc_xfer *xs[1] = {x};
	return httpc_run(p, xs, 1, 1);
}

/* ---------------------------------------------------------------- answers */

const char *httpc_header(const httpc_xfer *x, const char *name)
{
	struct curl_header *h = NULL;
	if (x->easy == NULL || curl_easy_header(x->easy, name, 0, CURLH_HEADER, -1, &h) != CURLHE_OK || h == NULL)
		return NULL;
	return h->value;
}

struct curl_header *httpc_next_header(const httpc_xfer *x, struct curl_header *prev)
{
	return x->easy ? curl_easy_nextheader(x->easy, CURLH_HEADER, -1, prev) : NULL;
}

const char *httpc_errmsg(const httpc_xfer *x)
{
	return x->errbuf[0] ? x->errbuf : curl_easy_strerror(x->rc);
}
