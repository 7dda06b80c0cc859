/* The engine's clock and sleep (see clock.h). */
#define _POSIX_C_SOURCE 200809L
#include "clock.h"

#include "bgrun.h"
#include "interrupt.h"

#include <time.h>

enum { STEP_MS = 50 }; /* how often a sleep looks at the interrupt flag */

double bgrun_clock(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

long long bgrun_clock_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000L;
}

static void sleep_for(double s)
{
	if (s <= 0)
		return;
	struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
	nanosleep(&ts, NULL);
}

int bgrun_nap(double s)
{
	double end = bgrun_clock() + s;
	for (;;) {
		if (bgrun_interrupted())
			return 1;
		double left = end - bgrun_clock();
		if (left <= 0)
			return 0;
		sleep_for(left > STEP_MS / 1000.0 ? STEP_MS / 1000.0 : left);
	}
}

void bgrun_nap_uninterruptible(double s)
{
	sleep_for(s);
}
