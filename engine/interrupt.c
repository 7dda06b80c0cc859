/* The interrupt flag (see interrupt.h). */
#include "interrupt.h"

#include "bgrun.h"

#include <signal.h>

/* Signal state is process-wide by nature: a handler can reach nothing else. */
static volatile sig_atomic_t interrupted_flag;
static volatile sig_atomic_t compensating_flag;
/* SIGUSR1 from the lock keeper: the deploy lock went to another holder */
static volatile sig_atomic_t lock_lost_flag;

int bgrun_interrupted(void)
{
	return interrupted_flag && !compensating_flag;
}

int bgrun_interrupt_raise(int lock_lost)
{
	if (compensating_flag)
		return 0;
	if (lock_lost)
		lock_lost_flag = 1;
	interrupted_flag = 1;
	return 1;
}

int bgrun_interrupt_pending(void)
{
	return interrupted_flag;
}

int bgrun_interrupt_lock_lost(void)
{
	return lock_lost_flag;
}

void bgrun_set_compensating(int on)
{
	compensating_flag = on ? 1 : 0;
}

int bgrun_compensating(void)
{
	return compensating_flag;
}
