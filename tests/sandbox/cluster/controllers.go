package cluster

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"sort"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
)

const (
	revisionAnnotation        = "deployment.kubernetes.io/revision"
	desiredReplicasAnnotation = "deployment.kubernetes.io/desired-replicas"
	maxReplicasAnnotation     = "deployment.kubernetes.io/max-replicas"
	podTemplateHashLabel      = "pod-template-hash"
)

func labelsSet(m map[string]string) labels.Set { return labels.Set(m) }

// controllerLoop runs every controller on each change (event-driven) and
// at least every 250 ms (for deadlines, back-offs and minReadySeconds).
func (c *Cluster) controllerLoop() {
	defer c.wg.Done()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-c.trigger:
		case <-t.C:
		}
		c.reconcile()
	}
}

func (c *Cluster) reconcile() {
	defer func() {
		if r := recover(); r != nil {
			c.logMu.Lock()
			fmt.Fprintf(c.logFile, "controller panic: %v\n", r)
			c.logMu.Unlock()
		}
	}()
	c.syncNamespaces()
	c.collectGarbage()
	rsList, _ := c.store.list(resReplicaSets, "")
	deps, _ := c.store.list(resDeployments, "")
	for _, d := range deps {
		c.syncDeployment(d.(*appsv1.Deployment), rsList)
	}
	pods, _ := c.store.list(resPods, "")
	rsList, _ = c.store.list(resReplicaSets, "")
	for _, rs := range rsList {
		c.syncReplicaSet(rs.(*appsv1.ReplicaSet), pods)
	}
	pods, _ = c.store.list(resPods, "")
	c.kubelet.sync(pods)
	c.net.sync()
}

func controllerOf(m metav1.Object) *metav1.OwnerReference {
	for _, r := range m.GetOwnerReferences() {
		if r.Controller != nil && *r.Controller {
			rc := r
			return &rc
		}
	}
	return nil
}

// ---- namespaces and garbage collection ----

func (c *Cluster) syncNamespaces() {
	nss, _ := c.store.list(resNamespaces, "")
	for _, o := range nss {
		ns := o.(*corev1.Namespace)
		if ns.DeletionTimestamp == nil {
			// The service account controller: every namespace has "default".
			if _, err := c.store.get(resServiceAccounts, ns.Name, "default"); apierrors.IsNotFound(err) {
				c.store.create(resServiceAccounts, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: ns.Name}}, false)
			}
			continue
		}
		left := 0
		for _, r := range allResources {
			if !r.namespaced {
				continue
			}
			objs, _ := c.store.list(r, ns.Name)
			for _, obj := range objs {
				left++
				m := metaOf(obj)
				if m.GetDeletionTimestamp() == nil {
					c.deleteObject(r, ns.Name, m.GetName(), &metav1.DeleteOptions{}, false)
				}
			}
		}
		if left == 0 {
			c.store.remove(resNamespaces, "", ns.Name, "", "", false)
		}
	}
}

// collectGarbage deletes objects whose controlling owner is gone
// (background propagation).
func (c *Cluster) collectGarbage() {
	exists := map[types.UID]bool{}
	for _, r := range []*resource{resDeployments, resReplicaSets, resServices} {
		objs, _ := c.store.list(r, "")
		for _, o := range objs {
			exists[metaOf(o).GetUID()] = true
		}
	}
	for _, r := range []*resource{resReplicaSets, resPods, resEndpointSlices} {
		objs, _ := c.store.list(r, "")
		for _, o := range objs {
			m := metaOf(o)
			if ref := controllerOf(m); ref != nil && !exists[ref.UID] && m.GetDeletionTimestamp() == nil {
				c.deleteObject(r, m.GetNamespace(), m.GetName(), &metav1.DeleteOptions{}, false)
			}
		}
	}
	// Foreground deletion: delete the dependents, then drop the
	// foregroundDeletion finalizer once none is left.
	owners := map[types.UID]int{}
	for _, r := range []*resource{resReplicaSets, resPods, resEndpointSlices} {
		objs, _ := c.store.list(r, "")
		for _, o := range objs {
			for _, ref := range metaOf(o).GetOwnerReferences() {
				owners[ref.UID]++
			}
		}
	}
	for _, r := range []*resource{resDeployments, resReplicaSets, resServices} {
		objs, _ := c.store.list(r, "")
		for _, o := range objs {
			m := metaOf(o)
			if m.GetDeletionTimestamp() == nil || !hasFinalizer(m, metav1.FinalizerDeleteDependents) {
				continue
			}
			if owners[m.GetUID()] > 0 {
				c.deleteDependents(m.GetNamespace(), m.GetUID(), metav1.DeletePropagationForeground)
				continue
			}
			c.store.update(r, m.GetNamespace(), m.GetName(), false, func(cur runtime.Object) (runtime.Object, error) {
				cm := metaOf(cur)
				var keep []string
				for _, f := range cm.GetFinalizers() {
					if f != metav1.FinalizerDeleteDependents {
						keep = append(keep, f)
					}
				}
				cm.SetFinalizers(keep)
				return cur, nil
			})
		}
	}
}

func hasFinalizer(m metav1.Object, f string) bool {
	for _, x := range m.GetFinalizers() {
		if x == f {
			return true
		}
	}
	return false
}

func (c *Cluster) orphanDependents(ns string, uid types.UID) {
	for _, r := range []*resource{resReplicaSets, resPods} {
		objs, _ := c.store.list(r, ns)
		for _, o := range objs {
			if ref := controllerOf(metaOf(o)); ref != nil && ref.UID == uid {
				c.store.update(r, ns, metaOf(o).GetName(), false, func(cur runtime.Object) (runtime.Object, error) {
					m := metaOf(cur)
					var keep []metav1.OwnerReference
					for _, ref := range m.GetOwnerReferences() {
						if ref.UID != uid {
							keep = append(keep, ref)
						}
					}
					m.SetOwnerReferences(keep)
					return cur, nil
				})
			}
		}
	}
}

func (c *Cluster) deleteDependents(ns string, uid types.UID, policy metav1.DeletionPropagation) {
	for _, r := range []*resource{resReplicaSets, resPods, resEndpointSlices} {
		objs, _ := c.store.list(r, ns)
		for _, o := range objs {
			if ref := controllerOf(metaOf(o)); ref != nil && ref.UID == uid && metaOf(o).GetDeletionTimestamp() == nil {
				c.deleteObject(r, ns, metaOf(o).GetName(), &metav1.DeleteOptions{PropagationPolicy: &policy}, false)
			}
		}
	}
}

// ---- deployment controller ----

// resolveFenceposts turns maxSurge/maxUnavailable into numbers as the
// deployment controller does: surge rounds up, unavailable rounds down,
// and both zero means one may be unavailable.
func resolveFenceposts(maxSurge, maxUnavailable *intstr.IntOrString, desired int32) (int32, int32, error) {
	zero := intstr.FromInt32(0)
	if maxSurge == nil {
		maxSurge = &zero
	}
	if maxUnavailable == nil {
		maxUnavailable = &zero
	}
	surge, err := intstr.GetScaledValueFromIntOrPercent(maxSurge, int(desired), true)
	if err != nil {
		return 0, 0, err
	}
	unavailable, err := intstr.GetScaledValueFromIntOrPercent(maxUnavailable, int(desired), false)
	if err != nil {
		return 0, 0, err
	}
	if surge == 0 && unavailable == 0 {
		unavailable = 1
	}
	return int32(surge), int32(unavailable), nil
}

func deploymentFenceposts(d *appsv1.Deployment) (surge, unavailable int32) {
	if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || d.Spec.Strategy.RollingUpdate == nil {
		return 0, 0
	}
	desired := *d.Spec.Replicas
	surge, unavailable, _ = resolveFenceposts(d.Spec.Strategy.RollingUpdate.MaxSurge, d.Spec.Strategy.RollingUpdate.MaxUnavailable, desired)
	if desired == 0 {
		unavailable = 0
	}
	if unavailable > desired {
		unavailable = desired
	}
	return surge, unavailable
}

// rsState is what the rolling-update math needs from one ReplicaSet.
type rsState struct {
	Replicas  int32 // spec.replicas
	Available int32 // status.availableReplicas
}

// rollingStep is one sync of the rolling-update strategy (the deployment
// controller's reconcileNewReplicaSet, then reconcileOldReplicaSets):
// either the new ReplicaSet scales up, or old ones scale down, never
// taking the total over desired+surge or the available count under
// desired-unavailable. old is ordered oldest first.
func rollingStep(desired, surge, unavailable int32, newRS rsState, old []rsState) (int32, []int32) {
	oldOut := make([]int32, len(old))
	total, oldTotal := newRS.Replicas, int32(0)
	for i, o := range old {
		oldOut[i] = o.Replicas
		total += o.Replicas
		oldTotal += o.Replicas
	}
	// Scale the new ReplicaSet.
	if newRS.Replicas > desired {
		return desired, oldOut
	}
	if newRS.Replicas < desired {
		if maxTotal := desired + surge; total < maxTotal {
			up := min(maxTotal-total, desired-newRS.Replicas)
			return newRS.Replicas + up, oldOut
		}
	}
	if oldTotal == 0 {
		return newRS.Replicas, oldOut
	}
	// Scale old ReplicaSets down.
	minAvailable := desired - unavailable
	newUnavailable := newRS.Replicas - newRS.Available
	maxScaledDown := total - minAvailable - newUnavailable
	if maxScaledDown <= 0 {
		return newRS.Replicas, oldOut
	}
	cleaned := int32(0)
	for i, o := range old {
		if cleaned >= maxScaledDown {
			break
		}
		if oldOut[i] == 0 || oldOut[i] <= o.Available {
			continue
		}
		n := min(maxScaledDown-cleaned, oldOut[i]-o.Available)
		oldOut[i] -= n
		cleaned += n
	}
	available := newRS.Available
	for _, o := range old {
		available += o.Available
	}
	if available <= minAvailable {
		return newRS.Replicas, oldOut
	}
	toScale := available - minAvailable
	scaled := int32(0)
	for i := range old {
		if scaled >= toScale {
			break
		}
		if oldOut[i] == 0 {
			continue
		}
		n := min(oldOut[i], toScale-scaled)
		oldOut[i] -= n
		scaled += n
	}
	return newRS.Replicas, oldOut
}

func templateHash(t *corev1.PodTemplateSpec, collisions *int32) string {
	b, _ := json.Marshal(t)
	h := fnv.New32a()
	h.Write(b)
	if collisions != nil {
		h.Write([]byte(strconv.Itoa(int(*collisions))))
	}
	return utilrand.SafeEncodeString(fmt.Sprint(h.Sum32()))
}

func equalIgnoreHash(a, b *corev1.PodTemplateSpec) bool {
	a, b = a.DeepCopy(), b.DeepCopy()
	delete(a.Labels, podTemplateHashLabel)
	delete(b.Labels, podTemplateHashLabel)
	if len(a.Labels) == 0 {
		a.Labels = nil
	}
	if len(b.Labels) == 0 {
		b.Labels = nil
	}
	return apiequality.Semantic.DeepEqual(a, b)
}

func revisionOf(m metav1.Object) int64 {
	v, _ := strconv.ParseInt(m.GetAnnotations()[revisionAnnotation], 10, 64)
	return v
}

func isPodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func isPodAvailable(p *corev1.Pod, minReady int32, now time.Time) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return minReady == 0 || c.LastTransitionTime.Add(time.Duration(minReady)*time.Second).Before(now)
		}
	}
	return false
}

func (c *Cluster) syncDeployment(d *appsv1.Deployment, rsAll []runtime.Object) {
	if d.DeletionTimestamp != nil {
		return
	}
	var newRS *appsv1.ReplicaSet
	var old []*appsv1.ReplicaSet
	var maxOldRev int64
	for _, o := range rsAll {
		rs := o.(*appsv1.ReplicaSet)
		if ref := controllerOf(rs); rs.Namespace != d.Namespace || ref == nil || ref.UID != d.UID || rs.DeletionTimestamp != nil {
			continue
		}
		if newRS == nil && equalIgnoreHash(&rs.Spec.Template, &d.Spec.Template) {
			newRS = rs
			continue
		}
		old = append(old, rs)
	}
	sort.Slice(old, func(i, j int) bool {
		ri, rj := revisionOf(old[i]), revisionOf(old[j])
		if ri != rj {
			return ri < rj
		}
		return old[i].CreationTimestamp.Before(&old[j].CreationTimestamp)
	})
	for _, rs := range old {
		maxOldRev = max(maxOldRev, revisionOf(rs))
	}
	desired := *d.Spec.Replicas
	surge, unavailable := deploymentFenceposts(d)
	var progressCond *appsv1.DeploymentCondition
	now := metav1.Now()

	if newRS == nil {
		if d.Spec.Paused {
			c.updateDeploymentStatus(d, nil, old, nil)
			return
		}
		// Create the new ReplicaSet with its first scale-up already applied.
		var total int32
		for _, rs := range old {
			total += *rs.Spec.Replicas
		}
		replicas := int32(0)
		if d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType {
			replicas = 0
		} else if total < desired+surge {
			replicas = min(desired+surge-total, desired)
		}
		hash := templateHash(&d.Spec.Template, d.Status.CollisionCount)
		tmpl := d.Spec.Template.DeepCopy()
		if tmpl.Labels == nil {
			tmpl.Labels = map[string]string{}
		}
		tmpl.Labels[podTemplateHashLabel] = hash
		sel := d.Spec.Selector.DeepCopy()
		if sel.MatchLabels == nil {
			sel.MatchLabels = map[string]string{}
		}
		sel.MatchLabels[podTemplateHashLabel] = hash
		rs := &appsv1.ReplicaSet{
			ObjectMeta: metav1.ObjectMeta{Name: d.Name + "-" + hash, Namespace: d.Namespace, Labels: tmpl.Labels,
				Annotations: rsAnnotations(d, maxOldRev+1, desired, surge),
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: d.Name, UID: d.UID,
					Controller: ptr(true), BlockOwnerDeletion: ptr(true)}}},
			Spec: appsv1.ReplicaSetSpec{Replicas: &replicas, MinReadySeconds: d.Spec.MinReadySeconds, Selector: sel, Template: *tmpl},
		}
		created, err := c.createObject(resReplicaSets, d.Namespace, rs, false)
		if err != nil {
			return
		}
		newRS = created.(*appsv1.ReplicaSet)
		c.recordEvent(d, "Normal", "ScalingReplicaSet", fmt.Sprintf("Scaled up replica set %s from 0 to %d", newRS.Name, replicas))
		progressCond = &appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue,
			Reason: "NewReplicaSetCreated", Message: fmt.Sprintf("Created new replica set %q", newRS.Name),
			LastUpdateTime: now, LastTransitionTime: now}
		c.updateDeploymentStatus(d, newRS, old, progressCond)
		return
	}
	// An older template coming back (rollback) takes the next revision.
	if rev := revisionOf(newRS); rev <= maxOldRev {
		c.store.update(resReplicaSets, newRS.Namespace, newRS.Name, false, func(cur runtime.Object) (runtime.Object, error) {
			rs := cur.(*appsv1.ReplicaSet)
			if rs.Annotations == nil {
				rs.Annotations = map[string]string{}
			}
			rs.Annotations[revisionAnnotation] = strconv.FormatInt(maxOldRev+1, 10)
			return rs, nil
		})
	}
	// A changed replica count (not a new template) scales the active
	// ReplicaSets proportionally, as the controller's sync/scale does.
	if !d.Spec.Paused && isScalingEvent(d, append([]*appsv1.ReplicaSet{newRS}, old...)) {
		c.scaleProportionally(d, newRS, old)
		c.updateDeploymentStatus(d, newRS, old, nil)
		return
	}
	if d.Spec.Paused {
		c.updateDeploymentStatus(d, newRS, old, nil)
		return
	}
	if d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType {
		oldRunning := false
		for _, rs := range old {
			if *rs.Spec.Replicas != 0 {
				c.scaleRS(d, rs, 0)
			}
			if rs.Status.Replicas > 0 {
				oldRunning = true
			}
		}
		if !oldRunning && *newRS.Spec.Replicas != desired {
			c.scaleRS(d, newRS, desired)
		}
	} else {
		oldStates := make([]rsState, len(old))
		for i, rs := range old {
			oldStates[i] = rsState{*rs.Spec.Replicas, rs.Status.AvailableReplicas}
		}
		newCount, oldCounts := rollingStep(desired, surge, unavailable,
			rsState{*newRS.Spec.Replicas, newRS.Status.AvailableReplicas}, oldStates)
		if newCount != *newRS.Spec.Replicas {
			c.scaleRS(d, newRS, newCount)
		}
		for i, rs := range old {
			if oldCounts[i] != *rs.Spec.Replicas {
				c.scaleRS(d, rs, oldCounts[i])
			}
		}
	}
	c.updateDeploymentStatus(d, newRS, old, nil)
	c.cleanupOldReplicaSets(d, old)
}

// rsAnnotations copies the Deployment's annotations (change-cause and
// the like) to a new ReplicaSet, as the controller does, plus its own.
func rsAnnotations(d *appsv1.Deployment, rev int64, desired, surge int32) map[string]string {
	out := map[string]string{}
	for k, v := range d.Annotations {
		switch k {
		case "kubectl.kubernetes.io/last-applied-configuration", revisionAnnotation, "deployment.kubernetes.io/revision-history",
			desiredReplicasAnnotation, maxReplicasAnnotation:
			continue
		}
		out[k] = v
	}
	out[revisionAnnotation] = strconv.FormatInt(rev, 10)
	out[desiredReplicasAnnotation] = strconv.Itoa(int(desired))
	out[maxReplicasAnnotation] = strconv.Itoa(int(desired + surge))
	return out
}

func (c *Cluster) scaleRS(d *appsv1.Deployment, rs *appsv1.ReplicaSet, n int32) {
	from := *rs.Spec.Replicas
	_, err := c.store.update(resReplicaSets, rs.Namespace, rs.Name, false, func(cur runtime.Object) (runtime.Object, error) {
		r := cur.(*appsv1.ReplicaSet)
		if *r.Spec.Replicas != n {
			r.Generation++
		}
		r.Spec.Replicas = ptr(n)
		// Record the deployment size this scaling was for (proportional
		// scaling reads it back).
		surge, _ := deploymentFenceposts(d)
		if r.Annotations == nil {
			r.Annotations = map[string]string{}
		}
		r.Annotations[desiredReplicasAnnotation] = strconv.Itoa(int(*d.Spec.Replicas))
		r.Annotations[maxReplicasAnnotation] = strconv.Itoa(int(*d.Spec.Replicas + surge))
		return r, nil
	})
	if err == nil && n != from {
		dir := "up"
		if n < from {
			dir = "down"
		}
		c.recordEvent(d, "Normal", "ScalingReplicaSet", fmt.Sprintf("Scaled %s replica set %s from %d to %d", dir, rs.Name, from, n))
	}
}

func annotationInt(rs *appsv1.ReplicaSet, key string) (int32, bool) {
	v, ok := rs.Annotations[key]
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	return int32(n), err == nil
}

// isScalingEvent: an active ReplicaSet was last sized for another
// deployment size.
func isScalingEvent(d *appsv1.Deployment, all []*appsv1.ReplicaSet) bool {
	for _, rs := range all {
		if rs == nil || *rs.Spec.Replicas == 0 {
			continue
		}
		if desired, ok := annotationInt(rs, desiredReplicasAnnotation); ok && desired != *d.Spec.Replicas {
			return true
		}
	}
	return false
}

// scaledRS is what proportional scaling needs from one ReplicaSet.
type scaledRS struct {
	Replicas    int32 // spec.replicas
	MaxReplicas int32 // max-replicas annotation (0 = none)
	Created     time.Time
}

// proportionalSizes is the deployment controller's scale() for a rolling
// update with several active ReplicaSets: the replicas to add (or remove)
// are shared in proportion to each ReplicaSet's size, the leftover going
// to the largest. rss are the active ReplicaSets.
func proportionalSizes(desired, surge, statusReplicas int32, rss []scaledRS) []int32 {
	var total int32
	for _, r := range rss {
		total += r.Replicas
	}
	allowed := int32(0)
	if desired > 0 {
		allowed = desired + surge
	}
	toAdd := allowed - total
	order := make([]int, len(rss))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		ra, rb := rss[order[a]], rss[order[b]]
		if ra.Replicas != rb.Replicas {
			return ra.Replicas > rb.Replicas
		}
		if toAdd > 0 {
			return ra.Created.After(rb.Created) // bigger, then newer first
		}
		return ra.Created.Before(rb.Created) // bigger, then older first
	})
	sizes := make([]int32, len(rss))
	var added int32
	for _, i := range order {
		r := rss[i]
		sizes[i] = r.Replicas
		if toAdd == 0 || r.Replicas == 0 || toAdd == added {
			continue
		}
		var fraction int32
		if desired == 0 {
			fraction = -r.Replicas
		} else {
			before := r.MaxReplicas
			if before == 0 {
				before = statusReplicas
			}
			if before == 0 {
				continue
			}
			fraction = int32(math.Round(float64(r.Replicas*(desired+surge))/float64(before))) - r.Replicas
		}
		left := toAdd - added
		if toAdd > 0 {
			fraction = min(fraction, left)
		} else {
			fraction = max(fraction, left)
		}
		sizes[i] += fraction
		added += fraction
	}
	if len(order) > 0 && toAdd != 0 {
		first := order[0]
		sizes[first] = max(sizes[first]+toAdd-added, 0)
	}
	return sizes
}

func (c *Cluster) scaleProportionally(d *appsv1.Deployment, newRS *appsv1.ReplicaSet, old []*appsv1.ReplicaSet) {
	desired := *d.Spec.Replicas
	var active []*appsv1.ReplicaSet
	for _, rs := range append([]*appsv1.ReplicaSet{newRS}, old...) {
		if rs != nil && *rs.Spec.Replicas > 0 {
			active = append(active, rs)
		}
	}
	switch {
	case len(active) <= 1:
		// One active ReplicaSet (or none): it takes the whole count.
		target := newRS
		if len(active) == 1 {
			target = active[0]
		}
		if target != nil {
			c.scaleRS(d, target, desired)
		}
		return
	case newRS != nil && newRS.Annotations[desiredReplicasAnnotation] == strconv.Itoa(int(desired)) &&
		newRS.Status.AvailableReplicas == desired && *newRS.Spec.Replicas == desired:
		// The new ReplicaSet is saturated: the old ones go.
		for _, rs := range old {
			if *rs.Spec.Replicas > 0 {
				c.scaleRS(d, rs, 0)
			}
		}
		return
	case d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType:
		return
	}
	surge, _ := deploymentFenceposts(d)
	in := make([]scaledRS, len(active))
	for i, rs := range active {
		maxR, _ := annotationInt(rs, maxReplicasAnnotation)
		in[i] = scaledRS{Replicas: *rs.Spec.Replicas, MaxReplicas: maxR, Created: rs.CreationTimestamp.Time}
	}
	for i, n := range proportionalSizes(desired, surge, d.Status.Replicas, in) {
		c.scaleRS(d, active[i], n)
	}
}

func (c *Cluster) cleanupOldReplicaSets(d *appsv1.Deployment, old []*appsv1.ReplicaSet) {
	limit := int(*d.Spec.RevisionHistoryLimit)
	var idle []*appsv1.ReplicaSet
	for _, rs := range old {
		if *rs.Spec.Replicas == 0 && rs.Status.Replicas == 0 && rs.Status.ObservedGeneration >= rs.Generation {
			idle = append(idle, rs)
		}
	}
	for i := 0; i < len(idle)-limit; i++ {
		c.deleteObject(resReplicaSets, idle[i].Namespace, idle[i].Name, &metav1.DeleteOptions{}, false)
	}
}

func setDeploymentCondition(st *appsv1.DeploymentStatus, cond appsv1.DeploymentCondition) {
	for i, cur := range st.Conditions {
		if cur.Type != cond.Type {
			continue
		}
		if cur.Status == cond.Status && cur.Reason == cond.Reason {
			return
		}
		if cur.Status == cond.Status {
			cond.LastTransitionTime = cur.LastTransitionTime
		}
		st.Conditions[i] = cond
		return
	}
	st.Conditions = append(st.Conditions, cond)
}

func getDeploymentCondition(st appsv1.DeploymentStatus, t appsv1.DeploymentConditionType) *appsv1.DeploymentCondition {
	for i := range st.Conditions {
		if st.Conditions[i].Type == t {
			return &st.Conditions[i]
		}
	}
	return nil
}

// updateDeploymentStatus computes status as syncRolloutStatus does,
// including the Available and Progressing conditions and the progress
// deadline.
func (c *Cluster) updateDeploymentStatus(d *appsv1.Deployment, newRS *appsv1.ReplicaSet, old []*appsv1.ReplicaSet, forced *appsv1.DeploymentCondition) {
	all := append([]*appsv1.ReplicaSet{}, old...)
	if newRS != nil {
		all = append(all, newRS)
	}
	st := appsv1.DeploymentStatus{ObservedGeneration: d.Generation, CollisionCount: d.Status.CollisionCount}
	var specTotal int32
	for _, rs := range all {
		st.Replicas += rs.Status.Replicas
		st.ReadyReplicas += rs.Status.ReadyReplicas
		st.AvailableReplicas += rs.Status.AvailableReplicas
		specTotal += *rs.Spec.Replicas
	}
	if newRS != nil {
		st.UpdatedReplicas = newRS.Status.Replicas
	}
	st.UnavailableReplicas = max(specTotal-st.AvailableReplicas, 0)
	st.Conditions = append(st.Conditions, d.Status.Conditions...)
	now := metav1.Now()
	desired := *d.Spec.Replicas
	_, unavailable := deploymentFenceposts(d)
	if st.AvailableReplicas >= desired-unavailable {
		setDeploymentCondition(&st, appsv1.DeploymentCondition{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue,
			Reason: "MinimumReplicasAvailable", Message: "Deployment has minimum availability.", LastUpdateTime: now, LastTransitionTime: now})
	} else {
		setDeploymentCondition(&st, appsv1.DeploymentCondition{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionFalse,
			Reason: "MinimumReplicasUnavailable", Message: "Deployment does not have minimum availability.", LastUpdateTime: now, LastTransitionTime: now})
	}
	cur := getDeploymentCondition(d.Status, appsv1.DeploymentProgressing)
	rsName := func(format string) string {
		if newRS != nil {
			return fmt.Sprintf("ReplicaSet %q "+format, newRS.Name)
		}
		return fmt.Sprintf("Deployment %q "+format, d.Name)
	}
	complete := st.UpdatedReplicas == desired && st.Replicas == desired && st.AvailableReplicas == desired && st.ObservedGeneration >= d.Generation
	progressing := st.UpdatedReplicas > d.Status.UpdatedReplicas ||
		(st.Replicas-st.UpdatedReplicas) < (d.Status.Replicas-d.Status.UpdatedReplicas) ||
		st.ReadyReplicas > d.Status.ReadyReplicas || st.AvailableReplicas > d.Status.AvailableReplicas
	switch {
	case forced != nil:
		removeCondition(&st, appsv1.DeploymentProgressing)
		st.Conditions = append(st.Conditions, *forced)
	case d.Spec.Paused:
		setDeploymentCondition(&st, appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionUnknown,
			Reason: "DeploymentPaused", Message: "Deployment is paused", LastUpdateTime: now, LastTransitionTime: now})
	case cur != nil && cur.Reason == "DeploymentPaused":
		setDeploymentCondition(&st, appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionUnknown,
			Reason: "DeploymentResumed", Message: "Deployment is resumed", LastUpdateTime: now, LastTransitionTime: now})
	case d.Spec.ProgressDeadlineSeconds == nil:
	case newRS != nil && complete:
		cond := appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue,
			Reason: "NewReplicaSetAvailable", Message: rsName("has successfully progressed."), LastUpdateTime: now, LastTransitionTime: now}
		if cur != nil && cur.Status == corev1.ConditionTrue {
			cond.LastTransitionTime = cur.LastTransitionTime
			if cur.Reason == cond.Reason {
				cond.LastUpdateTime = cur.LastUpdateTime
			}
		}
		removeCondition(&st, appsv1.DeploymentProgressing)
		st.Conditions = append(st.Conditions, cond)
	case progressing:
		cond := appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue,
			Reason: "ReplicaSetUpdated", Message: rsName("is progressing."), LastUpdateTime: now, LastTransitionTime: now}
		if cur != nil && cur.Status == corev1.ConditionTrue {
			cond.LastTransitionTime = cur.LastTransitionTime
		}
		removeCondition(&st, appsv1.DeploymentProgressing)
		st.Conditions = append(st.Conditions, cond)
	case cur == nil && newRS != nil:
		setDeploymentCondition(&st, appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue,
			Reason: "FoundNewReplicaSet", Message: fmt.Sprintf("Found new replica set %q", newRS.Name), LastUpdateTime: now, LastTransitionTime: now})
	case cur != nil && cur.Reason != "NewReplicaSetAvailable" && cur.Reason != "ProgressDeadlineExceeded" &&
		cur.LastUpdateTime.Add(time.Duration(*d.Spec.ProgressDeadlineSeconds)*time.Second).Before(now.Time):
		setDeploymentCondition(&st, appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse,
			Reason: "ProgressDeadlineExceeded", Message: rsName("has timed out progressing."), LastUpdateTime: now, LastTransitionTime: now})
	}
	sortConditions(&st)
	rev := ""
	if newRS != nil {
		rev = newRS.Annotations[revisionAnnotation]
	}
	if apiequality.Semantic.DeepEqual(st, d.Status) && (rev == "" || d.Annotations[revisionAnnotation] == rev) {
		return
	}
	c.store.update(resDeployments, d.Namespace, d.Name, false, func(cur runtime.Object) (runtime.Object, error) {
		nd := cur.(*appsv1.Deployment)
		if nd.Generation != d.Generation {
			return cur, nil // spec moved on; the next sync recomputes
		}
		nd.Status = st
		if rev != "" {
			if nd.Annotations == nil {
				nd.Annotations = map[string]string{}
			}
			nd.Annotations[revisionAnnotation] = rev
		}
		return nd, nil
	})
}

func removeCondition(st *appsv1.DeploymentStatus, t appsv1.DeploymentConditionType) {
	var keep []appsv1.DeploymentCondition
	for _, c := range st.Conditions {
		if c.Type != t {
			keep = append(keep, c)
		}
	}
	st.Conditions = keep
}

func sortConditions(st *appsv1.DeploymentStatus) {
	order := map[appsv1.DeploymentConditionType]int{appsv1.DeploymentAvailable: 0, appsv1.DeploymentProgressing: 1}
	sort.SliceStable(st.Conditions, func(i, j int) bool { return order[st.Conditions[i].Type] < order[st.Conditions[j].Type] })
}

// ---- replicaset controller ----

func (c *Cluster) syncReplicaSet(rs *appsv1.ReplicaSet, pods []runtime.Object) {
	if rs.DeletionTimestamp != nil {
		return
	}
	var active []*corev1.Pod
	for _, o := range pods {
		p := o.(*corev1.Pod)
		if ref := controllerOf(p); p.Namespace != rs.Namespace || ref == nil || ref.UID != rs.UID {
			continue
		}
		if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		active = append(active, p)
	}
	want := int(*rs.Spec.Replicas)
	if diff := want - len(active); diff > 0 {
		for i := 0; i < diff; i++ {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: rs.Name + "-", Namespace: rs.Namespace,
				Labels: rs.Spec.Template.Labels, Annotations: rs.Spec.Template.Annotations,
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID,
					Controller: ptr(true), BlockOwnerDeletion: ptr(true)}}},
				Spec: *rs.Spec.Template.Spec.DeepCopy()}
			if created, err := c.createObject(resPods, rs.Namespace, pod, false); err == nil {
				c.recordEvent(rs, "Normal", "SuccessfulCreate", "Created pod: "+metaOf(created).GetName())
			}
		}
	} else if diff < 0 {
		// Delete the least useful pods first: not ready, then newest.
		sort.SliceStable(active, func(i, j int) bool {
			a, b := active[i], active[j]
			if isPodReady(a) != isPodReady(b) {
				return !isPodReady(a)
			}
			if ra, rb := restarts(a), restarts(b); ra != rb {
				return ra > rb
			}
			return b.CreationTimestamp.Before(&a.CreationTimestamp)
		})
		for _, p := range active[:-diff] {
			if _, _, err := c.deleteObject(resPods, p.Namespace, p.Name, &metav1.DeleteOptions{}, false); err == nil {
				c.recordEvent(rs, "Normal", "SuccessfulDelete", "Deleted pod: "+p.Name)
			}
		}
	}
	now := time.Now()
	st := appsv1.ReplicaSetStatus{Replicas: int32(len(active)), ObservedGeneration: rs.Generation}
	tmplSel := labels.SelectorFromSet(rs.Spec.Template.Labels)
	for _, p := range active {
		if tmplSel.Matches(labels.Set(p.Labels)) {
			st.FullyLabeledReplicas++
		}
		if isPodReady(p) {
			st.ReadyReplicas++
		}
		if isPodAvailable(p, rs.Spec.MinReadySeconds, now) {
			st.AvailableReplicas++
		}
	}
	if apiequality.Semantic.DeepEqual(st, rs.Status) {
		return
	}
	c.store.update(resReplicaSets, rs.Namespace, rs.Name, false, func(cur runtime.Object) (runtime.Object, error) {
		r := cur.(*appsv1.ReplicaSet)
		if r.Generation != rs.Generation {
			return cur, nil
		}
		r.Status = st
		return r, nil
	})
}

func restarts(p *corev1.Pod) int32 {
	var n int32
	for _, s := range p.Status.ContainerStatuses {
		n += s.RestartCount
	}
	return n
}

// recordEvent writes a core/v1 Event about an object, as controllers and
// the kubelet do.
func (c *Cluster) recordEvent(obj runtime.Object, typ, reason, msg string) {
	m := metaOf(obj)
	kind, apiVersion := "", ""
	switch obj.(type) {
	case *appsv1.Deployment:
		kind, apiVersion = "Deployment", "apps/v1"
	case *appsv1.ReplicaSet:
		kind, apiVersion = "ReplicaSet", "apps/v1"
	case *corev1.Pod:
		kind, apiVersion = "Pod", "v1"
	}
	component := map[string]string{"Deployment": "deployment-controller", "ReplicaSet": "replicaset-controller", "Pod": "kubelet"}[kind]
	now := metav1.Now()
	// Repeats of the same event are counted on one object, as the
	// event recorder's aggregation does.
	key := string(m.GetUID()) + "\x00" + reason + "\x00" + msg
	c.eventsMu.Lock()
	name, seen := c.eventNames[key]
	c.eventsMu.Unlock()
	if seen {
		_, err := c.store.update(resEvents, m.GetNamespace(), name, false, func(o runtime.Object) (runtime.Object, error) {
			e := o.(*corev1.Event)
			e.Count++
			e.LastTimestamp = now
			return e, nil
		})
		if err == nil {
			return
		}
	}
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", m.GetName(), time.Now().UnixNano()), Namespace: m.GetNamespace()},
		InvolvedObject: corev1.ObjectReference{Kind: kind, APIVersion: apiVersion, Name: m.GetName(), Namespace: m.GetNamespace(),
			UID: m.GetUID(), ResourceVersion: m.GetResourceVersion()},
		Reason: reason, Message: msg, Type: typ, Count: 1, FirstTimestamp: now, LastTimestamp: now,
		Source: corev1.EventSource{Component: component}, ReportingController: component, ReportingInstance: component + "-sandbox",
	}
	if _, err := c.store.create(resEvents, ev, false); err == nil {
		c.eventsMu.Lock()
		if c.eventNames == nil || len(c.eventNames) > 10000 {
			c.eventNames = map[string]string{}
		}
		c.eventNames[key] = ev.Name
		c.eventsMu.Unlock()
	}
}
