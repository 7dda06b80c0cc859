/* The interrupt flag: process-wide state set from core.c's signal handler
 * (SIGINT, SIGTERM, SIGUSR1 from the lock keeper) and read by every
 * blocking wait (clock.c's bgrun_nap, httpc's run loop, the modules).
 * It depends on nothing, so the clock and core both build on it.
 * Every function here is async-signal-safe. bgrun_interrupted() itself is
 * declared in bgrun.h, next to bgrun_throw_interrupted(). */
#ifndef BGRUN_INTERRUPT_H
#define BGRUN_INTERRUPT_H

/* Records a signal: 1 when the interrupt is now pending, 0 when it was
 * ignored because compensations run. lock_lost marks it as the deploy
 * lock going to another holder. */
int bgrun_interrupt_raise(int lock_lost);

/* A signal arrived (whether or not compensations mask it now). */
int bgrun_interrupt_pending(void);

/* The pending interrupt came from the lock keeper (SIGUSR1). */
int bgrun_interrupt_lock_lost(void);

/* Compensations run: interrupts stop being raised, new signals are
 * ignored. */
void bgrun_set_compensating(int on);
int bgrun_compensating(void);

#endif
