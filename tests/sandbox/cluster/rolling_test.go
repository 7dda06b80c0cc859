package cluster

import (
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestResolveFenceposts(t *testing.T) {
	pct := func(s string) *intstr.IntOrString { v := intstr.FromString(s); return &v }
	num := func(n int32) *intstr.IntOrString { v := intstr.FromInt32(n); return &v }
	cases := []struct {
		surge, unavail *intstr.IntOrString
		desired        int32
		wantS, wantU   int32
	}{
		{pct("25%"), pct("25%"), 4, 1, 1},
		{pct("25%"), pct("25%"), 1, 1, 0},  // surge rounds up, unavailable down
		{pct("25%"), pct("25%"), 10, 3, 2}, // 2.5 -> 3 and 2
		{num(0), num(0), 3, 0, 1},          // both zero: one may be unavailable
		{num(2), pct("50%"), 3, 2, 1},
		{pct("100%"), num(0), 5, 5, 0},
	}
	for _, c := range cases {
		s, u, err := resolveFenceposts(c.surge, c.unavail, c.desired)
		if err != nil || s != c.wantS || u != c.wantU {
			t.Errorf("resolveFenceposts(%s, %s, %d) = %d, %d, %v; want %d, %d", c.surge, c.unavail, c.desired, s, u, err, c.wantS, c.wantU)
		}
	}
}

// simulate runs a rollout with the real step function: pods of a
// scaled-up ReplicaSet become available after `delay` steps. It checks the
// surge and availability bounds at every step and returns the number of
// steps to finish.
func simulate(t *testing.T, desired, surge, unavail int32, oldReplicas []int32, delay int) int {
	t.Helper()
	type rs struct {
		replicas int32
		pending  []int // step at which each not-yet-available pod becomes available
		avail    int32
	}
	newRS := &rs{}
	var old []*rs
	for _, n := range oldReplicas {
		old = append(old, &rs{replicas: n, avail: n})
	}
	scale := func(r *rs, n int32, step int) {
		for r.replicas < n {
			r.replicas++
			r.pending = append(r.pending, step+delay)
		}
		for r.replicas > n {
			r.replicas--
			if len(r.pending) > 0 {
				r.pending = r.pending[1:]
			} else {
				r.avail--
			}
		}
	}
	var oldTotal0 int32
	for _, n := range oldReplicas {
		oldTotal0 += n
	}
	for step := 0; step < 1000; step++ {
		for _, r := range append([]*rs{newRS}, old...) {
			var keep []int
			for _, at := range r.pending {
				if at <= step {
					r.avail++
				} else {
					keep = append(keep, at)
				}
			}
			r.pending = keep
		}
		states := make([]rsState, len(old))
		var oldTotal int32
		for i, r := range old {
			states[i] = rsState{r.replicas, r.avail}
			oldTotal += r.replicas
		}
		if newRS.replicas == desired && newRS.avail == desired && oldTotal == 0 {
			return step
		}
		n, olds := rollingStep(desired, surge, unavail, rsState{newRS.replicas, newRS.avail}, states)
		scale(newRS, n, step)
		for i, r := range old {
			scale(r, olds[i], step)
		}
		total, avail := newRS.replicas, newRS.avail
		for _, r := range old {
			total += r.replicas
			avail += r.avail
		}
		if max := max(desired+surge, oldTotal0); total > max {
			t.Fatalf("step %d: %d pods exceed desired+surge %d", step, total, max)
		}
		if min := desired - unavail; avail < min && oldTotal0 >= desired {
			t.Fatalf("step %d: %d available, below %d", step, avail, min)
		}
	}
	t.Fatalf("rollout did not finish")
	return 0
}

func TestRollingUpdateRespectsSurgeAndUnavailable(t *testing.T) {
	for _, c := range []struct {
		desired, surge, unavail int32
		old                     []int32
	}{
		{4, 1, 1, []int32{4}},
		{3, 1, 0, []int32{3}},
		{3, 0, 1, []int32{3}},
		{10, 3, 2, []int32{10}},
		{2, 1, 0, []int32{1, 1}}, // two old ReplicaSets
		{5, 2, 0, []int32{0, 5}}, // an idle old ReplicaSet
		{1, 1, 0, []int32{1}},    // default 25%/25% at one replica
		{3, 1, 1, nil},           // first rollout
		{2, 1, 1, []int32{4}},    // scale down during the update
		{6, 1, 1, []int32{2}},    // scale up during the update
	} {
		t.Run(fmt.Sprintf("%d_%d_%d_%v", c.desired, c.surge, c.unavail, c.old), func(t *testing.T) {
			for _, delay := range []int{0, 1, 3} {
				simulate(t, c.desired, c.surge, c.unavail, c.old, delay)
			}
		})
	}
}

func TestRollingStepFirstMoves(t *testing.T) {
	// 4 replicas, 25%/25%: the new ReplicaSet surges to 1 first.
	n, old := rollingStep(4, 1, 1, rsState{0, 0}, []rsState{{4, 4}})
	if n != 1 || old[0] != 4 {
		t.Fatalf("first step = %d %v", n, old)
	}
	// Then one old pod goes (4+1 total, 4 available, min 3).
	n, old = rollingStep(4, 1, 1, rsState{1, 0}, []rsState{{4, 4}})
	if n != 1 || old[0] != 3 {
		t.Fatalf("second step = %d %v", n, old)
	}
	// maxUnavailable 0: nothing old goes until a new pod is available.
	n, old = rollingStep(3, 1, 0, rsState{1, 0}, []rsState{{3, 3}})
	if n != 1 || old[0] != 3 {
		t.Fatalf("unavailable 0 step = %d %v", n, old)
	}
	// Unhealthy old pods are cleaned up first.
	n, old = rollingStep(3, 1, 0, rsState{1, 1}, []rsState{{3, 1}})
	if n != 1 || old[0] != 2 {
		t.Fatalf("cleanup step = %d %v", n, old)
	}
}

func TestProportionalScaling(t *testing.T) {
	// Mid-rollout (old 8, new 5, sized for 10 replicas with surge 3), the
	// Deployment is scaled to 15 (surge 4): 6 more are shared by size.
	old := scaledRS{Replicas: 8, MaxReplicas: 13}
	newer := scaledRS{Replicas: 5, MaxReplicas: 13, Created: old.Created.Add(time.Minute)}
	got := proportionalSizes(15, 4, 13, []scaledRS{newer, old})
	if got[0]+got[1] != 19 || got[1] != 12 || got[0] != 7 {
		t.Fatalf("scale up: new %d old %d", got[0], got[1])
	}
	// Scaling down shares the removal the same way.
	got = proportionalSizes(5, 2, 13, []scaledRS{newer, old})
	if got[0]+got[1] != 7 || got[1] != 4 || got[0] != 3 {
		t.Fatalf("scale down: new %d old %d", got[0], got[1])
	}
	// To zero: everything goes.
	got = proportionalSizes(0, 0, 13, []scaledRS{newer, old})
	if got[0] != 0 || got[1] != 0 {
		t.Fatalf("to zero: %v", got)
	}
}
