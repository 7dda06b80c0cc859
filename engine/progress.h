/* progress: the one reporter for long transfers (dumps, archives, uploads,
 * downloads). Call it from any transfer loop:
 *
 *     bgrun_progress *p = bgrun_progress_start(L, "upload prod/x.tar.gz", size);
 *     while (...) {
 *         ...move bytes...
 *         bgrun_progress_update(p, bytes_so_far);  // or bgrun_progress_add(p, n)
 *     }
 *     bgrun_progress_finish(p, ok);                 // prints the summary, frees p
 *
 * - start reads the log settings from L once (format, level, terminal, the
 *   current step) and masks registered secrets in the label. It returns
 *   NULL when progress is off (-q, BGRUN_PROGRESS=0, dry-run is up to the
 *   caller) or memory is short; every other call accepts NULL.
 * - update/add/set_total/finish never touch Lua and never raise: they are
 *   safe inside libcurl/libarchive callbacks and from other threads (one
 *   mutex). update is cheap (one clock read); call it as often as you like,
 *   also with an unchanged count so a stalled transfer shows its rate fall.
 *   Output is rate-limited by the clock, not by the number of calls.
 * - total < 0 means unknown (no percentage, no ETA); set_total may give it
 *   later (a download's Content-Length).
 *
 * What is printed, on stderr:
 * - text on a terminal: one line rewritten in place ("\r") every 0.2 s with
 *   every running transfer: label, bytes, total and percentage, rate, ETA;
 *   log lines clear it first (a logcore.c hook calls bgrun_progress_clear_line).
 *   A transfer that was shown ends with a summary log line.
 * - text, not a terminal (CI): a plain log line every 10 s while a transfer
 *   runs, and its summary once it ends if it ran that long; nothing for
 *   shorter ones.
 * - --log-format json: an event {"event":"progress", ...} every 5 s, and
 *   one with "done": true when the transfer ends (always).
 * - -q (level above info): nothing.
 * BGRUN_PROGRESS_INTERVAL=SECONDS changes the 10 s / 5 s period (0: every
 * update, for tests); BGRUN_PROGRESS=0 turns progress off. */
#ifndef BGRUN_PROGRESS_H
#define BGRUN_PROGRESS_H

#include <stdio.h>

#include <lua.h>

typedef struct bgrun_progress bgrun_progress;

bgrun_progress *bgrun_progress_start(lua_State *L, const char *label, long long total);
void bgrun_progress_update(bgrun_progress *p, long long bytes);
void bgrun_progress_add(bgrun_progress *p, long long delta);
void bgrun_progress_set_total(bgrun_progress *p, long long total);
/* ok = 0: the transfer failed (no summary line; the JSON event says
 * "ok": false). Frees p. */
void bgrun_progress_finish(bgrun_progress *p, int ok);

/* Erases the terminal line before another line is written to stderr; the
 * next update draws it again. */
void bgrun_progress_clear_line(void);

/* ---- for unit tests: a settings-only start, a fake clock, an output ---- */
enum { BGRUN_PROGRESS_OFF, BGRUN_PROGRESS_TTY, BGRUN_PROGRESS_LINES, BGRUN_PROGRESS_JSON };
bgrun_progress *bgrun_progress_start_mode(int mode, const char *label, const char *step, long long total,
                                          int color, double interval);
void bgrun_progress_set_output(FILE *out, double (*clock)(void), int width);

#endif
