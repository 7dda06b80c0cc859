/* httpc: the engine's one HTTP transfer layer over libcurl, with no Lua in
 * it. mod_http, mod_k8s and mod_s3 are bindings over it.
 *
 * - A pool: a curl multi handle (the connection cache) and share handles
 *   (DNS answers, TLS sessions, and for HTTP/2 the connections).
 * - A transfer: an easy handle kept across attempts, a body source (memory
 *   or a range of a file), a sink (memory, a file, or a callback), and the
 *   response headers, read with curl_easy_header after it finished.
 * - One run loop (httpc_wait / httpc_run) that looks at the interrupt flag
 *   and a deadline, and one retry policy (httpc_policy): idempotence-aware,
 *   exponential backoff with jitter, Retry-After, and a total deadline on
 *   top of each attempt's no-progress and whole-attempt limits.
 * - A pre-send hook per transfer, run before every attempt: SigV4 signing
 *   (s3) and Kubernetes credentials (k8s) live there.
 *
 * Only this file calls curl_multi_* and curl_global_init. Nothing here
 * raises: results and failures are left in the transfer. */
#ifndef BGRUN_HTTPC_H
#define BGRUN_HTTPC_H

#include <stddef.h>

#include <curl/curl.h>

#include "buf.h"

/* 0, or -1 when libcurl cannot be initialised. Safe to call again. */
int httpc_global_init(void);

typedef struct httpc_pool httpc_pool;

/* A pool keeping at most max_connects idle connections; NULL when out of
 * memory. */
httpc_pool *httpc_pool_new(long max_connects);
void httpc_pool_free(httpc_pool *p);

typedef struct httpc_xfer httpc_xfer;

/* Before every attempt, after the common options are set on e: adds
 * headers to *hl (sent after the transfer's own) and sets what else the
 * protocol needs on e (credentials, TLS, signatures). 0, or -1 with a
 * message in err: the transfer then fails with hook_failed set. */
typedef int (*httpc_pre_send)(httpc_xfer *x, CURL *e, struct curl_slist **hl, void *ud, char *err,
                              size_t errlen);

/* The response body, in order: returns n, 0 to fail the transfer, or
 * CURL_WRITEFUNC_PAUSE (see httpc_unpause). */
typedef size_t (*httpc_sink)(httpc_xfer *x, const char *p, size_t n, void *ud);

/* Called on every turn of the run loop while x runs (progress reports). */
typedef void (*httpc_tick)(httpc_xfer *x, void *ud);

/* How a transfer is retried and bounded. */
typedef struct httpc_policy {
	int attempts;          /* in all, at least 1 */
	double backoff;        /* seconds before the second attempt; doubles, with jitter */
	double backoff_cap;    /* seconds, the longest backoff */
	double retry_after_cap;/* seconds, the longest Retry-After honoured */
	int retry_status;      /* 429 and 5xx (but 501) are retried too, not only transport failures */
	double deadline;       /* seconds for everything, attempts and waits together; 0: none */
} httpc_policy;

/* The defaults: 1 attempt, 0.2 s doubling to 5 s, Retry-After up to 30 s,
 * transport failures only, no total deadline. */
httpc_policy httpc_policy_default(void);

struct httpc_xfer {
	/* ---- the request, set by the caller before httpc_start/httpc_run */
	const char *method;    /* "GET", "HEAD", "PUT", ... */
	const char *url;
	const struct curl_slist *headers; /* the caller's, sent every attempt */
	const char *body;      /* the body from memory, or */
	int body_fd;           /* body_n bytes of this file from body_off (-1: none) */
	long long body_off, body_n;
	int has_body;          /* send body/body_fd (an empty body too) */
	int idempotent;        /* retried on transport failures; else sent once */
	int h2;                /* HTTP/2 over TLS, on the pool's HTTP/2 connections */
	long connect_ms;       /* connect limit; 0: 10 s */
	long attempt_ms;       /* one attempt's whole-transfer limit; 0: none */
	long idle_ms;          /* no progress for this long fails; 0: none */
	httpc_policy policy;
	httpc_pre_send pre_send;
	httpc_sink sink;       /* NULL: the body into out (below) */
	int sink_fd;           /* >= 0: a 2xx body into this file (rewound per attempt) */
	int sink_2xx;          /* the sink sees 2xx bodies only; others go to out */
	size_t max_out;        /* out's limit; 0: none (overflow set past it) */
	httpc_tick tick;
	void *ud;              /* for the hooks */
	int ignore_interrupt;  /* cleanup after an interrupt (an abort) */

	/* ---- the outcome (and state), read by the caller */
	CURL *easy;            /* kept across attempts until httpc_xfer_free */
	long status;
	CURLcode rc;
	char errbuf[CURL_ERROR_SIZE];
	buf out;               /* body of a non-sunk response */
	long long body_pos;    /* body bytes sent this attempt */
	long long sunk;        /* bytes written to sink_fd this attempt */
	int sink_err;          /* errno of a failed sink_fd write */
	int oom, overflow;
	int hook_failed;       /* pre_send refused; its message in errbuf */
	int deadline_hit;      /* the total deadline ended it */
	int attempt;           /* attempts started */
	int sends;             /* times curl was about to send this attempt */
	int added, done, paused;
	int finished;          /* httpc_run: no more attempts */
	double deadline_at;    /* monotonic seconds; 0: none */
	double not_before;     /* a retry waits until then */
	struct curl_slist *hl; /* this attempt's header list */
	httpc_pool *pool;
};

/* Zeroes x and sets the defaults (no body, no sink, default policy). */
void httpc_xfer_init(httpc_xfer *x);

/* Removes x from its pool if running and frees what it holds. */
void httpc_xfer_free(httpc_xfer *x);

/* Starts one attempt of x on p: sets the options, runs pre_send, adds it
 * to the multi handle. 0, or -1 (x->done set, rc and errbuf say why). The
 * first start also fixes the total deadline. */
int httpc_start(httpc_pool *p, httpc_xfer *x);

/* Takes x out of the multi handle (it keeps its outcome). */
void httpc_stop(httpc_xfer *x);

/* Resumes a paused sink. */
void httpc_unpause(httpc_xfer *x);

enum { HTTPC_OK = 0, HTTPC_INTERRUPTED = 1, HTTPC_DEADLINE = 2, HTTPC_READY = 3 };

/* One turn of the loop: lets libcurl work, marks finished transfers done
 * (with their status), then waits up to ms for sockets or the extra fds
 * (*ready: 1 when one of those is readable). */
void httpc_step(httpc_pool *p, int ms, const int *fds, int nfds, int *ready);

/* The run loop for transfers already started: turns until x is done,
 * ready(ud) says so (HTTPC_READY), deadline (monotonic seconds, 0: none)
 * passes (HTTPC_DEADLINE), or an interrupt arrives (HTTPC_INTERRUPTED,
 * unless x->ignore_interrupt). Other transfers on p progress too. */
int httpc_wait(httpc_pool *p, httpc_xfer *x, double deadline, int (*ready)(void *), void *ud);

/* Runs xs[0..n) to completion, at most cap at a time, retrying each as its
 * policy says. HTTPC_OK (look at each x's rc and status) or
 * HTTPC_INTERRUPTED (the running ones are left for httpc_xfer_free). */
int httpc_run(httpc_pool *p, httpc_xfer **xs, size_t n, size_t cap);

/* httpc_run for one transfer. */
int httpc_perform(httpc_pool *p, httpc_xfer *x);

/* 1 when x's outcome is worth another attempt under its policy. */
int httpc_retryable(const httpc_xfer *x);

/* The seconds to wait before attempt number `attempt` (1: the second). */
double httpc_backoff(const httpc_policy *pol, int attempt);

/* The Retry-After of x's response in seconds (capped), or -1. */
double httpc_retry_after(const httpc_xfer *x);

/* The value of response header name (any case) of the last response, or
 * NULL; valid until the next attempt or httpc_xfer_free. */
const char *httpc_header(const httpc_xfer *x, const char *name);

/* The last response's header fields in order: pass NULL first, then the
 * previous one; NULL at the end. */
struct curl_header *httpc_next_header(const httpc_xfer *x, struct curl_header *prev);

/* The message for a failed transfer: curl's error buffer or its code's
 * text, or the deadline's. */
const char *httpc_errmsg(const httpc_xfer *x);

#endif
