/* The engine's one monotonic clock and one interruptible sleep. Every wait
 * in engine/ measures time with bgrun_clock() and sleeps with bgrun_nap(),
 * so a signal cuts every wait short the same way. */
#ifndef BGRUN_CLOCK_H
#define BGRUN_CLOCK_H

/* Seconds on a monotonic clock (CLOCK_MONOTONIC), as a double. */
double bgrun_clock(void);

/* Milliseconds on the same clock. */
long long bgrun_clock_ms(void);

/* Sleeps s seconds in short steps, looking at the interrupt flag between
 * them. 0 when slept, 1 when an interrupt cut it short (or was pending). */
int bgrun_nap(double s);

/* Sleeps s seconds, whatever the interrupt flag says (cleanup waits). */
void bgrun_nap_uninterruptible(double s);

#endif
