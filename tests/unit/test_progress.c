/* Unit tests for the transfer reporter (engine/progress.c): what each mode
 * prints and when, driven by a fake clock into a memory stream. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "progress.h"

static double fake_now;
static char *text;
static size_t text_len;
static FILE *out;

static double fake_clock(void)
{
	return fake_now;
}

static int setup(void **state)
{
	(void)state;
	fake_now = 1000.0;
	out = open_memstream(&text, &text_len);
	bgrun_progress_set_output(out, fake_clock, 120);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	bgrun_progress_set_output(NULL, NULL, 0);
	fclose(out);
	free(text);
	text = NULL;
	return 0;
}

static const char *printed(void)
{
	fflush(out);
	return text ? text : "";
}

static int count(const char *hay, const char *needle)
{
	int n = 0;
	for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
		n++;
	return n;
}

/* JSON: one event per period however often update is called, and a done
 * event with the totals at the end. */
static void json_periodic(void **state)
{
	(void)state;
	bgrun_progress *p = bgrun_progress_start_mode(BGRUN_PROGRESS_JSON, "upload k", "backup", 100 << 20, 0, 5.0);
	assert_non_null(p);
	for (int i = 1; i <= 120; i++) { /* 12 s, a call every 0.1 s, 1 MiB/s */
		fake_now += 0.1;
		bgrun_progress_update(p, (long long)i * (1 << 20) / 10);
	}
	assert_int_equal(count(printed(), "\n"), 2); /* at 5 s and 10 s */
	fake_now += 0.5;
	bgrun_progress_finish(p, 1);
	const char *all = printed();
	assert_int_equal(count(all, "\n"), 3);
	const char *last = all;
	for (const char *q = all; *q; q++)
		if (*q == '\n' && q[1])
			last = q + 1;
	json_error_t e;
	json_t *j = json_loads(last, JSON_DISABLE_EOF_CHECK, &e);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "event")), "progress");
	assert_string_equal(json_string_value(json_object_get(j, "message")), "progress");
	assert_string_equal(json_string_value(json_object_get(j, "step")), "backup");
	assert_string_equal(json_string_value(json_object_get(j, "label")), "upload k");
	assert_int_equal(json_integer_value(json_object_get(j, "bytes")), 12 << 20);
	assert_int_equal(json_integer_value(json_object_get(j, "total")), 100 << 20);
	assert_true(json_is_true(json_object_get(j, "done")));
	assert_true(json_is_true(json_object_get(j, "ok")));
	/* 12 MiB in 12.5 s */
	long long r = json_integer_value(json_object_get(j, "rate"));
	assert_true(r >= (long long)((12 << 20) / 12.5) - 2 && r <= (long long)((12 << 20) / 12.5) + 2);
	json_t *f = json_object_get(j, "fields");
	assert_int_equal(json_integer_value(json_object_get(f, "bytes")), 12 << 20);
	json_decref(j);

	/* the first periodic event: rate and ETA from the samples */
	j = json_loads(all, JSON_DISABLE_EOF_CHECK, &e);
	assert_non_null(j);
	assert_false(json_is_true(json_object_get(j, "done")));
	double rate = (double)json_integer_value(json_object_get(j, "rate"));
	assert_true(rate > 0.9 * (1 << 20) && rate < 1.1 * (1 << 20));
	double eta = json_real_value(json_object_get(j, "eta_s"));
	assert_true(eta > 85 && eta < 105); /* 95 MiB left at 1 MiB/s */
	json_decref(j);
}

/* Unknown total: no ETA, null total. A failed transfer says ok=false. */
static void json_unknown_total_failed(void **state)
{
	(void)state;
	bgrun_progress *p = bgrun_progress_start_mode(BGRUN_PROGRESS_JSON, "download k", NULL, -1, 0, 5.0);
	fake_now += 6;
	bgrun_progress_update(p, 4096);
	bgrun_progress_finish(p, 0);
	const char *all = printed();
	assert_int_equal(count(all, "\"total\":null"), 4); /* top level and fields, twice */
	assert_int_equal(count(all, "\"eta_s\":null"), 4);
	assert_int_equal(count(all, "\"ok\":false"), 2);
	assert_int_equal(count(all, "\"step\""), 0);
}

/* Plain lines (no terminal): nothing for a short transfer, a line a
 * period and a summary for a long one. */
static void plain_lines(void **state)
{
	(void)state;
	bgrun_progress *p = bgrun_progress_start_mode(BGRUN_PROGRESS_LINES, "dump data.sql", "backup", -1, 0, 10.0);
	fake_now += 3;
	bgrun_progress_update(p, 1 << 20);
	bgrun_progress_finish(p, 1);
	assert_string_equal(printed(), "");

	p = bgrun_progress_start_mode(BGRUN_PROGRESS_LINES, "upload k", "backup", 40 << 20, 0, 10.0);
	for (int i = 1; i <= 25; i++) {
		fake_now += 1;
		bgrun_progress_update(p, (long long)i << 20);
	}
	bgrun_progress_finish(p, 1);
	const char *all = printed();
	assert_int_equal(count(all, "\n"), 3);
	assert_int_equal(count(all, "INFO  [backup] progress upload k: 10.0 MiB of 40.0 MiB (25%), 1.0 MiB/s, ETA 30s\n"), 1);
	assert_int_equal(count(all, "INFO  [backup] progress upload k: 20.0 MiB of 40.0 MiB (50%)"), 1);
	assert_int_equal(count(all, "INFO  [backup] upload k: 25.0 MiB in 25.0s (1.0 MiB/s)\n"), 1);
	assert_int_equal(count(all, "\033["), 0);
	assert_int_equal(count(all, "\r"), 0);
}

/* Terminal: one line rewritten in place, never longer than the width, all
 * running transfers on it; cleared before other output; a summary line. */
static void terminal_line(void **state)
{
	(void)state;
	bgrun_progress *a = bgrun_progress_start_mode(BGRUN_PROGRESS_TTY, "dump full_backup.dump", NULL, -1, 0, 10.0);
	fake_now += 0.1;
	bgrun_progress_update(a, 100);
	assert_string_equal(printed(), ""); /* not yet: short transfers never flicker */
	bgrun_progress *b = bgrun_progress_start_mode(BGRUN_PROGRESS_TTY, "up", NULL, 2048, 0, 10.0);
	fake_now += 0.3;
	bgrun_progress_update(a, 3 << 20);
	const char *all = printed();
	assert_int_equal(count(all, "\r"), 1);
	assert_int_equal(count(all, "dump full_backup.dump 3.0 MiB"), 1);
	assert_int_equal(count(all, "\n"), 0);
	fake_now += 0.05;
	bgrun_progress_update(a, 4 << 20); /* within 0.2 s: no redraw */
	assert_int_equal(count(printed(), "\r"), 1);
	fake_now += 0.3;
	bgrun_progress_update(b, 1024);
	all = printed();
	assert_int_equal(count(all, "\r"), 2);
	assert_int_equal(count(all, "  |  up 1.0 KiB/2.0 KiB (50%)"), 1);
	assert_true(strstr(all, "dump full_backup.dump 4.0 MiB") < strstr(all, "  |  up 1.0 KiB"));

	bgrun_progress_clear_line();
	all = printed();
	size_t n = strlen(all);
	assert_int_equal(all[n - 1], '\r'); /* erased, cursor at column 0 */
	bgrun_progress_finish(b, 1);
	bgrun_progress_finish(a, 1);
	all = printed();
	assert_int_equal(count(all, "up: 1.0 KiB in "), 1);
	assert_int_equal(count(all, "dump full_backup.dump: 4.0 MiB in "), 1);
	assert_int_equal(count(all, "\n"), 2);
}

/* A line never wraps: "\r" rewinds one row only. */
static void terminal_width(void **state)
{
	(void)state;
	char label[300];
	memset(label, 'x', sizeof label - 1);
	label[sizeof label - 1] = '\0';
	bgrun_progress *p = bgrun_progress_start_mode(BGRUN_PROGRESS_TTY, label, NULL, -1, 0, 10.0);
	fake_now += 1;
	bgrun_progress_update(p, 1);
	const char *all = printed();
	assert_int_equal(all[0], '\r');
	assert_int_equal(strlen(all), 120); /* "\r" and 119 columns */
	bgrun_progress_finish(p, 0); /* failed: erased, no summary */
	all = printed();
	assert_int_equal(count(all, "\n"), 0);
	assert_int_equal(all[strlen(all) - 1], '\r');
}

/* NULL is accepted everywhere (progress off). */
static void off(void **state)
{
	(void)state;
	assert_null(bgrun_progress_start_mode(BGRUN_PROGRESS_OFF, "x", NULL, 1, 0, 1));
	bgrun_progress_update(NULL, 1);
	bgrun_progress_add(NULL, 1);
	bgrun_progress_set_total(NULL, 1);
	bgrun_progress_finish(NULL, 1);
	assert_string_equal(printed(), "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(json_periodic, setup, teardown),
		cmocka_unit_test_setup_teardown(json_unknown_total_failed, setup, teardown),
		cmocka_unit_test_setup_teardown(plain_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(terminal_line, setup, teardown),
		cmocka_unit_test_setup_teardown(terminal_width, setup, teardown),
		cmocka_unit_test_setup_teardown(off, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
