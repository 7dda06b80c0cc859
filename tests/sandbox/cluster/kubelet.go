package cluster

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// appImage matches the images that run the demo app; the tag is the
// version the app reports.
var appImage = regexp.MustCompile(`^(?:.*/)?physioflow-api(?::([A-Za-z0-9_][A-Za-z0-9_.-]*))?(?:@sha256:[0-9a-f]+)?$`)

const maxBackoff = 10 * time.Second

// kubelet is the node agent, as a client of the real API server: it
// registers Node "sandbox" (InternalIP nodeIP, daemon endpoint = its HTTPS
// port), renews its Lease, binds pending pods to itself (the scheduler's
// job, with the scheduler's identity: one node, nothing to choose), runs
// the pods bound to it as local process groups on their own addresses in
// podCIDR, probes them, reports their status through pods/status, and
// serves /containerLogs to kube-apiserver over TLS (client certificates
// from the cluster CA), so `kubectl logs` goes the real way.
type kubelet struct {
	c       *Cluster
	ctx     context.Context
	cs      *kubernetes.Clientset // as system:node:sandbox (Node authorizer)
	sched   *kubernetes.Clientset // as system:kube-scheduler (bindings)
	pods    cache.Indexer         // pods bound to this node
	srv     *http.Server
	port    int
	log     *log.Logger // DIR/kubelet.log
	mu      sync.Mutex
	workers map[types.UID]*podWorker
	ipNext  uint32
	ipsUsed map[string]bool
}

func (k *kubelet) allocIP() string {
	for i := 0; i < 65000; i++ {
		n := k.ipNext
		k.ipNext = (k.ipNext + 1) % 65024
		ip := fmt.Sprintf("198.18.%d.%d", n/254+1, n%254+1)
		if !k.ipsUsed[ip] {
			k.ipsUsed[ip] = true
			return ip
		}
	}
	panic("pod IP range exhausted")
}

// handle starts a worker for a new pod, begins termination for a pod being
// deleted, and applies image changes.
func (k *kubelet) handle(p *corev1.Pod) {
	k.mu.Lock()
	defer k.mu.Unlock()
	w := k.workers[p.UID]
	if w == nil {
		if p.DeletionTimestamp != nil {
			go k.deletePod(p.Namespace, p.Name, p.UID)
			return
		}
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			return
		}
		w = newPodWorker(k, p)
		k.workers[p.UID] = w
		go w.run()
		return
	}
	if p.DeletionTimestamp != nil {
		w.terminate(p.DeletionTimestamp.Time)
		return
	}
	for _, c := range p.Spec.Containers {
		w.setImage(c.Name, c.Image)
	}
}

// forget is called when a pod object is removed outright.
func (k *kubelet) forget(p *corev1.Pod) {
	k.mu.Lock()
	w := k.workers[p.UID]
	k.mu.Unlock()
	if w != nil {
		w.terminate(time.Now())
	}
}

func (k *kubelet) release(w *podWorker) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.ipsUsed, w.ip)
	delete(k.workers, w.uid)
}

// find returns the worker of the pod now named ns/name that is not
// terminating (an older pod of the same name may still be).
func (k *kubelet) find(ns, name string) *podWorker {
	k.mu.Lock()
	defer k.mu.Unlock()
	var found *podWorker
	for _, w := range k.workers {
		if w.ns == ns && w.name == name {
			if found == nil || !w.terminating() {
				found = w
			}
		}
	}
	return found
}

// deletePod removes a pod whose containers have stopped, as the kubelet
// does once termination is complete (grace period 0, this UID only).
func (k *kubelet) deletePod(ns, name string, uid types.UID) {
	zero := int64(0)
	err := k.cs.CoreV1().Pods(ns).Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: &zero,
		Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		k.logf("delete pod %s/%s: %v", ns, name, err)
	}
}

func (k *kubelet) logf(format string, args ...any) {
	k.log.Printf(format, args...)
}

// kill SIGKILLs a pod's processes; they restart as after a crash.
func (k *kubelet) kill(ns, name string) error {
	w := k.find(ns, name)
	if w == nil {
		return fmt.Errorf("pod %s/%s is not running here", ns, name)
	}
	killed := 0
	w.mu.Lock()
	for _, ct := range w.ctrs {
		if ct.pgid > 0 {
			syscall.Kill(-ct.pgid, syscall.SIGKILL)
			killed++
		}
	}
	w.mu.Unlock()
	if killed == 0 {
		return fmt.Errorf("pod %s/%s has no running process", ns, name)
	}
	return nil
}

func (k *kubelet) stopAll() {
	k.mu.Lock()
	ws := make([]*podWorker, 0, len(k.workers))
	for _, w := range k.workers {
		ws = append(ws, w)
	}
	k.mu.Unlock()
	for _, w := range ws {
		w.terminate(time.Now())
	}
	for _, w := range ws {
		select {
		case <-w.done:
		case <-time.After(3 * time.Second):
		}
	}
}

// ---- one pod ----

type podWorker struct {
	k        *kubelet
	uid      types.UID
	ns, name string
	ip       string
	dir      string
	pod      *corev1.Pod // the spec at start
	started  metav1.Time

	mu        sync.Mutex
	ctrs      []*ctrRuntime
	termOnce  sync.Once
	term      chan struct{} // closed when termination begins
	deadline  time.Time     // SIGKILL after this
	done      chan struct{}
	conds     map[corev1.PodConditionType]corev1.PodCondition
	finalized bool
}

type ctrRuntime struct {
	spec         corev1.Container
	tag          string
	pgid         int
	runs         int // number of process starts; logs are <runs>.log
	restarts     int32
	ready        bool
	started      bool
	state        corev1.ContainerState
	lastState    corev1.ContainerState
	cid          string
	runDone      chan struct{} // closed when the current run ends (for log follow)
	imageChanged bool          // the process was stopped for a new image
	wake         chan struct{} // cuts a back-off short (new image)
}

func newPodWorker(k *kubelet, p *corev1.Pod) *podWorker {
	w := &podWorker{k: k, uid: p.UID, ns: p.Namespace, name: p.Name, ip: k.allocIP(), pod: p.DeepCopy(),
		term: make(chan struct{}), done: make(chan struct{}), started: metav1.Now(),
		conds: map[corev1.PodConditionType]corev1.PodCondition{}}
	w.dir = filepath.Join(k.c.cfg.Dir, "pods", fmt.Sprintf("%s_%s_%s", p.Namespace, p.Name, p.UID))
	for _, c := range p.Spec.Containers {
		ct := &ctrRuntime{spec: c, runDone: make(chan struct{}), wake: make(chan struct{}, 1)}
		ct.state.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
		w.ctrs = append(w.ctrs, ct)
	}
	return w
}

func (w *podWorker) terminate(deadline time.Time) {
	w.termOnce.Do(func() {
		w.mu.Lock()
		w.deadline = deadline
		w.mu.Unlock()
		close(w.term)
	})
}

func (w *podWorker) terminating() bool {
	select {
	case <-w.term:
		return true
	default:
		return false
	}
}

// sleep waits d, returning false if termination began.
func (w *podWorker) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-w.term:
		return false
	}
}

func (w *podWorker) run() {
	defer close(w.done)
	os.MkdirAll(w.dir, 0o755)
	w.setCond(corev1.PodScheduled, true, "")
	w.setCond(corev1.PodReadyToStartContainers, true, "")
	w.setCond(corev1.PodInitialized, true, "")
	w.setCond(corev1.ContainersReady, false, "ContainersNotReady")
	w.setCond(corev1.PodReady, false, "ContainersNotReady")
	w.publish()
	var wg sync.WaitGroup
	for _, ct := range w.ctrs {
		wg.Add(1)
		go func(ct *ctrRuntime) {
			defer wg.Done()
			w.runContainer(ct)
		}(ct)
	}
	wg.Wait()
	if w.terminating() {
		w.k.deletePod(w.ns, w.name, w.uid)
	} else {
		w.publish() // Succeeded or Failed
	}
	w.k.release(w)
}

func (w *podWorker) setCond(t corev1.PodConditionType, ok bool, reason string) {
	st := corev1.ConditionFalse
	if ok {
		st = corev1.ConditionTrue
		reason = ""
	}
	cur, exists := w.conds[t]
	if exists && cur.Status == st {
		return
	}
	c := corev1.PodCondition{Type: t, Status: st, Reason: reason, LastTransitionTime: metav1.Now()}
	if reason == "ContainersNotReady" {
		c.Message = "containers with unready status: [" + w.unreadyNames() + "]"
	}
	w.conds[t] = c
}

func (w *podWorker) unreadyNames() string {
	var names []string
	for _, ct := range w.ctrs {
		if !ct.ready {
			names = append(names, ct.spec.Name)
		}
	}
	return strings.Join(names, " ")
}

// publish writes the pod's status from the worker's view.
func (w *podWorker) publish() {
	w.mu.Lock()
	allReady := true
	for _, ct := range w.ctrs {
		allReady = allReady && ct.ready
	}
	if allReady {
		w.setCond(corev1.ContainersReady, true, "")
		w.setCond(corev1.PodReady, true, "")
	} else {
		w.setCond(corev1.ContainersReady, false, "ContainersNotReady")
		w.setCond(corev1.PodReady, false, "ContainersNotReady")
	}
	st := corev1.PodStatus{Phase: corev1.PodPending, HostIP: nodeIP, PodIP: w.ip,
		HostIPs: []corev1.HostIP{{IP: nodeIP}}, PodIPs: []corev1.PodIP{{IP: w.ip}},
		StartTime: &w.started, QOSClass: corev1.PodQOSBestEffort}
	for _, t := range []corev1.PodConditionType{corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.PodReady,
		corev1.ContainersReady, corev1.PodScheduled} {
		if c, ok := w.conds[t]; ok {
			st.Conditions = append(st.Conditions, c)
		}
	}
	anyStarted, allDone, allOK := false, true, true
	for _, ct := range w.ctrs {
		cs := corev1.ContainerStatus{Name: ct.spec.Name, Image: ct.spec.Image, Ready: ct.ready, RestartCount: ct.restarts,
			Started: ptr(ct.state.Running != nil), State: ct.state, LastTerminationState: ct.lastState, ContainerID: ct.cid}
		if ct.started {
			repo, _ := splitImage(ct.spec.Image)
			cs.ImageID = fmt.Sprintf("%s@sha256:%x", repo, sha256.Sum256([]byte(ct.spec.Image)))
			anyStarted = true
		}
		if ct.state.Terminated == nil {
			allDone = false
		} else if ct.state.Terminated.ExitCode != 0 {
			allOK = false
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}
	if anyStarted {
		st.Phase = corev1.PodRunning
	}
	if allDone && len(w.ctrs) > 0 {
		if allOK {
			st.Phase = corev1.PodSucceeded
		} else {
			st.Phase = corev1.PodFailed
		}
	}
	w.mu.Unlock()
	w.k.putStatus(w, st)
}

func (w *podWorker) event(typ, reason, msg string) {
	w.k.recordEvent(w, typ, reason, msg)
}

func (w *podWorker) update(ct *ctrRuntime, f func()) {
	w.mu.Lock()
	f()
	w.mu.Unlock()
	w.publish()
}

// runContainer is one container's life: pull (fails for unknown images),
// start, probe, restart with back-off, stop on termination.
func (w *podWorker) runContainer(ct *ctrRuntime) {
	backoff := time.Second
	for !w.terminating() {
		w.mu.Lock()
		image := ct.spec.Image
		w.mu.Unlock()
		m := appImage.FindStringSubmatch(image)
		if m == nil {
			msg := fmt.Sprintf("Failed to pull image %q: rpc error: code = NotFound desc = failed to pull and unpack image %q: not found", image, image)
			w.update(ct, func() {
				ct.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImagePull", Message: msg}}
			})
			w.event("Warning", "Failed", msg)
			if !w.sleepCtr(ct, time.Second) {
				return
			}
			w.update(ct, func() {
				ct.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff",
					Message: fmt.Sprintf("Back-off pulling image %q", image)}}
			})
			if !w.sleepCtr(ct, backoff) {
				return
			}
			backoff = min(backoff*2, maxBackoff)
			continue
		}
		w.mu.Lock()
		ct.tag = m[1]
		if ct.tag == "" {
			ct.tag = "latest"
		}
		w.mu.Unlock()
		env, err := w.containerEnv(ct)
		if err != nil {
			w.update(ct, func() {
				ct.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CreateContainerConfigError", Message: err.Error()}}
			})
			w.event("Warning", "Failed", "Error: "+err.Error())
			if !w.sleepCtr(ct, time.Second) {
				return
			}
			continue
		}
		began := time.Now()
		exit, reason := w.runOnce(ct, env)
		finished := metav1.Now()
		term := &corev1.ContainerStateTerminated{ExitCode: int32(exit), Reason: reason, StartedAt: metav1.NewTime(began),
			FinishedAt: finished, ContainerID: ct.cid}
		if w.terminating() {
			w.update(ct, func() { ct.ready = false; ct.state = corev1.ContainerState{Terminated: term} })
			return
		}
		w.mu.Lock()
		changed := ct.imageChanged
		ct.imageChanged = false
		w.mu.Unlock()
		if changed {
			// A new image: the kubelet restarts the container at once.
			w.update(ct, func() {
				ct.ready = false
				ct.restarts++
				ct.lastState = corev1.ContainerState{Terminated: term}
				ct.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}
			})
			backoff = time.Second
			continue
		}
		policy := w.pod.Spec.RestartPolicy
		if policy == corev1.RestartPolicyNever || (policy == corev1.RestartPolicyOnFailure && exit == 0) {
			w.update(ct, func() { ct.ready = false; ct.state = corev1.ContainerState{Terminated: term} })
			return
		}
		if time.Since(began) > 2*maxBackoff {
			backoff = time.Second
		}
		w.update(ct, func() {
			ct.ready = false
			ct.restarts++
			ct.lastState = corev1.ContainerState{Terminated: term}
			ct.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff",
				Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", backoff, ct.spec.Name, w.name, w.ns, w.uid)}}
		})
		w.event("Warning", "BackOff", "Back-off restarting failed container "+ct.spec.Name+" in pod "+w.name+"_"+w.ns+"("+string(w.uid)+")")
		if !w.sleepCtr(ct, backoff) {
			return
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// sleepCtr waits d, cut short by an image change; false if termination
// began.
func (w *podWorker) sleepCtr(ct *ctrRuntime, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ct.wake:
	case <-w.term:
		return false
	}
	return true
}

// preStop runs the container's preStop hook before the process is
// signalled, as the kubelet does on pod termination: the sleep action
// (lifecycle.preStop.sleep.seconds) waits, within the grace period, while
// the pod keeps serving what still reaches it — the endpoints have
// already dropped it, so nothing new does. Other actions (exec, httpGet)
// have no process of their own to run in here and are skipped.
func (w *podWorker) preStop(ct *ctrRuntime, exited <-chan struct{}) {
	lc := ct.spec.Lifecycle
	if lc == nil || lc.PreStop == nil || lc.PreStop.Sleep == nil || lc.PreStop.Sleep.Seconds <= 0 {
		return
	}
	d := time.Duration(lc.PreStop.Sleep.Seconds) * time.Second
	w.mu.Lock()
	left := time.Until(w.deadline)
	w.mu.Unlock()
	if d > left {
		d = left
	}
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-exited:
	}
}

// setImage applies a changed container image: the running process is
// stopped (SIGTERM, SIGKILL after 10 s) and the container restarts with
// the new image.
func (w *podWorker) setImage(name, image string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ct := range w.ctrs {
		if ct.spec.Name != name || ct.spec.Image == image {
			continue
		}
		ct.spec.Image = image
		ct.imageChanged = ct.pgid > 0
		select {
		case ct.wake <- struct{}{}:
		default:
		}
		if pgid := ct.pgid; pgid > 0 {
			syscall.Kill(-pgid, syscall.SIGTERM)
			time.AfterFunc(10*time.Second, func() {
				w.mu.Lock()
				defer w.mu.Unlock()
				if ct.pgid == pgid {
					syscall.Kill(-pgid, syscall.SIGKILL)
				}
			})
		}
		go w.event("Normal", "Killing", fmt.Sprintf("Container %s definition changed, will be restarted", name))
	}
}

func (w *podWorker) logPath(ct *ctrRuntime, run int) string {
	return filepath.Join(w.dir, ct.spec.Name, strconv.Itoa(run)+".log")
}

// runOnce starts the process, probes it, and waits for it to exit or for
// termination. It returns the exit code and the terminated reason.
func (w *podWorker) runOnce(ct *ctrRuntime, env []string) (int, string) {
	argv := w.k.c.cfg.DemoAppArgv
	if len(argv) == 0 {
		return 128, "StartError"
	}
	os.MkdirAll(filepath.Join(w.dir, ct.spec.Name), 0o755)
	w.mu.Lock()
	ct.runs++
	run := ct.runs
	ct.runDone = make(chan struct{})
	runDone := ct.runDone
	w.mu.Unlock()
	defer close(runDone)
	logFile, err := os.OpenFile(w.logPath(ct, run), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return 128, "StartError"
	}
	defer logFile.Close()
	var logMu sync.Mutex
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	var copiers sync.WaitGroup
	for stream, r := range map[string]*os.File{"stdout": outR, "stderr": errR} {
		copiers.Add(1)
		go func(stream string, r *os.File) {
			defer copiers.Done()
			defer r.Close()
			copyLog(r, logFile, &logMu, stream)
		}(stream, r)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Dir = w.dir
	cmd.Stdout, cmd.Stderr = outW, errW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		fmt.Fprintf(logFile, "%s stderr F failed to start: %v\n", time.Now().UTC().Format(time.RFC3339Nano), err)
		copiers.Wait()
		return 128, "StartError"
	}
	startedAt := metav1.Now()
	w.update(ct, func() {
		ct.pgid = cmd.Process.Pid
		ct.started = true
		ct.cid = fmt.Sprintf("containerd://%016x%016x", time.Now().UnixNano(), cmd.Process.Pid)
		ct.state = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: startedAt}}
		if ct.spec.ReadinessProbe == nil {
			ct.ready = true
		}
	})
	if run == 1 {
		w.event("Normal", "Started", "Started container "+ct.spec.Name)
	}
	exited := make(chan struct{})
	probeCtx, cancelProbes := context.WithCancel(context.Background())
	go w.probeLoop(probeCtx, ct, cmd.Process.Pid)
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	select {
	case <-exited:
	case <-w.term:
		w.preStop(ct, exited)
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		w.mu.Lock()
		deadline := w.deadline
		w.mu.Unlock()
		select {
		case <-exited:
		case <-time.After(time.Until(deadline)):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}
	cancelProbes()
	// Whatever the process left behind in its group goes with it.
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	w.mu.Lock()
	ct.pgid = 0
	w.mu.Unlock()
	done := make(chan struct{})
	go func() { copiers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
	code := 0
	if ee, ok := waitErr.(*exec.ExitError); ok {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		} else {
			code = ee.ExitCode()
		}
	}
	if code == 0 {
		return 0, "Completed"
	}
	return code, "Error"
}

// copyLog writes each line with a timestamp and stream, as the CRI log
// format does: "<RFC3339Nano> <stream> <F|P> <text>".
func copyLog(r io.Reader, f *os.File, mu *sync.Mutex, stream string) {
	br := bufio.NewReaderSize(r, 64*1024)
	for {
		line, err := br.ReadString('\n')
		if len(line) > 0 {
			tag := "F"
			if !strings.HasSuffix(line, "\n") {
				tag = "P"
				line += "\n"
			}
			mu.Lock()
			fmt.Fprintf(f, "%s %s %s %s", time.Now().UTC().Format(time.RFC3339Nano), stream, tag, line)
			mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

// ---- probes ----

func (w *podWorker) probeLoop(ctx context.Context, ct *ctrRuntime, pid int) {
	sleep := func(d time.Duration) bool {
		select {
		case <-time.After(d):
			return true
		case <-ctx.Done():
			return false
		}
	}
	if p := ct.spec.StartupProbe; p != nil {
		if !sleep(time.Duration(p.InitialDelaySeconds) * time.Second) {
			return
		}
		fails := int32(0)
		for !w.probe(ctx, ct, p) {
			if fails++; fails >= p.FailureThreshold {
				syscall.Kill(-pid, syscall.SIGKILL)
				return
			}
			if !sleep(probePeriod(p)) {
				return
			}
		}
	}
	if p := ct.spec.LivenessProbe; p != nil {
		go func() {
			if !sleep(time.Duration(p.InitialDelaySeconds) * time.Second) {
				return
			}
			fails := int32(0)
			// Liveness keeps its own period: killing sooner than the real
			// kubelet would change what a test observes.
			for sleep(time.Duration(max(p.PeriodSeconds, 1)) * time.Second) {
				if w.probe(ctx, ct, p) {
					fails = 0
				} else if fails++; fails >= p.FailureThreshold {
					w.event("Warning", "Unhealthy", "Liveness probe failed")
					syscall.Kill(-pid, syscall.SIGKILL)
					return
				}
			}
		}()
	}
	p := ct.spec.ReadinessProbe
	if p == nil {
		return
	}
	if !sleep(time.Duration(p.InitialDelaySeconds) * time.Second) {
		return
	}
	succ, fails := int32(0), int32(0)
	for {
		ok := w.probe(ctx, ct, p)
		if ctx.Err() != nil {
			return
		}
		w.mu.Lock()
		ready := ct.ready
		w.mu.Unlock()
		if ok {
			fails = 0
			if succ++; !ready && succ >= p.SuccessThreshold {
				w.update(ct, func() { ct.ready = true })
				ready = true
			}
		} else {
			succ = 0
			if fails++; ready && fails >= p.FailureThreshold {
				w.update(ct, func() { ct.ready = false })
				w.event("Warning", "Unhealthy", "Readiness probe failed")
				ready = false
			}
		}
		period := probePeriod(p)
		if !ready {
			period = min(period, 250*time.Millisecond) // get ready fast; failures only count once ready
		}
		if !sleep(period) {
			return
		}
	}
}

// probePeriod honours periodSeconds but never waits more than a second:
// the sandbox trades kubelet's pace for test speed.
func probePeriod(p *corev1.Probe) time.Duration {
	return min(time.Duration(max(p.PeriodSeconds, 1))*time.Second, time.Second)
}

func (w *podWorker) resolvePort(ct *ctrRuntime, port intstr.IntOrString) int {
	if port.Type == intstr.Int {
		return int(port.IntVal)
	}
	for _, cp := range ct.spec.Ports {
		if cp.Name == port.StrVal {
			return int(cp.ContainerPort)
		}
	}
	n, _ := strconv.Atoi(port.StrVal)
	return n
}

func (w *podWorker) probe(ctx context.Context, ct *ctrRuntime, p *corev1.Probe) bool {
	timeout := time.Duration(max(p.TimeoutSeconds, 1)) * time.Second
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case p.HTTPGet != nil:
		host := p.HTTPGet.Host
		if host == "" {
			host = w.ip
		}
		scheme := strings.ToLower(string(p.HTTPGet.Scheme))
		if scheme == "" {
			scheme = "http"
		}
		u := fmt.Sprintf("%s://%s%s", scheme, net.JoinHostPort(host, strconv.Itoa(w.resolvePort(ct, p.HTTPGet.Port))), p.HTTPGet.Path)
		req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
		if err != nil {
			return false
		}
		for _, h := range p.HTTPGet.HTTPHeaders {
			req.Header.Add(h.Name, h.Value)
		}
		req.Header.Set("User-Agent", "kube-probe/1.37")
		resp, err := probeClient.Do(req)
		if err != nil {
			return false
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 10240))
		resp.Body.Close()
		return resp.StatusCode >= 200 && resp.StatusCode < 400
	case p.TCPSocket != nil:
		host := p.TCPSocket.Host
		if host == "" {
			host = w.ip
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(w.resolvePort(ct, p.TCPSocket.Port))))
		if err != nil {
			return false
		}
		conn.Close()
		return true
	case p.Exec != nil && len(p.Exec.Command) > 0:
		env, _ := w.containerEnv(ct)
		cmd := exec.CommandContext(ctx, p.Exec.Command[0], p.Exec.Command[1:]...)
		cmd.Env = env
		return cmd.Run() == nil
	case p.GRPC != nil:
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(w.ip, strconv.Itoa(int(p.GRPC.Port))))
		if err != nil {
			return false
		}
		conn.Close()
		return true
	}
	return true
}

var probeClient = &http.Client{
	Transport: &http.Transport{DisableKeepAlives: true},
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
}

// ---- environment ----

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$`)

func (w *podWorker) containerEnv(ct *ctrRuntime) ([]string, error) {
	c := w.k.c
	vals := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			order = append(order, k)
		}
		vals[k] = v
	}
	for _, k := range []string{"PATH", "HOME", "LANG", "TZ", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			set(k, v)
		}
	}
	getCM := func(name string) (*corev1.ConfigMap, error) {
		var cm *corev1.ConfigMap
		err := w.k.nodeGet(func(ctx context.Context) (err error) {
			cm, err = w.k.cs.CoreV1().ConfigMaps(w.ns).Get(ctx, name, metav1.GetOptions{})
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("configmap %q not found", name)
		}
		return cm, nil
	}
	getSecret := func(name string) (*corev1.Secret, error) {
		var s *corev1.Secret
		err := w.k.nodeGet(func(ctx context.Context) (err error) {
			s, err = w.k.cs.CoreV1().Secrets(w.ns).Get(ctx, name, metav1.GetOptions{})
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("secret %q not found", name)
		}
		return s, nil
	}
	// The sandbox's defaults (database, S3) come first: a container's own
	// env and envFrom override them, as its manifest says.
	for k, v := range c.cfg.PodEnv {
		set(k, v)
	}
	for _, ef := range ct.spec.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			cm, err := getCM(ef.ConfigMapRef.Name)
			if err != nil {
				if ef.ConfigMapRef.Optional != nil && *ef.ConfigMapRef.Optional {
					continue
				}
				return nil, err
			}
			for k, v := range cm.Data {
				set(ef.Prefix+k, v)
			}
		case ef.SecretRef != nil:
			s, err := getSecret(ef.SecretRef.Name)
			if err != nil {
				if ef.SecretRef.Optional != nil && *ef.SecretRef.Optional {
					continue
				}
				return nil, err
			}
			for k, v := range s.Data {
				set(ef.Prefix+k, string(v))
			}
		}
	}
	pod := w.k.currentPod(w)
	for _, e := range ct.spec.Env {
		if e.ValueFrom == nil {
			v := envRef.ReplaceAllStringFunc(e.Value, func(ref string) string {
				if ref == "$$" {
					return "$"
				}
				if x, ok := vals[ref[2:len(ref)-1]]; ok {
					return x
				}
				return ref
			})
			set(e.Name, v)
			continue
		}
		vf := e.ValueFrom
		switch {
		case vf.FieldRef != nil:
			v, err := podField(pod, w.ip, vf.FieldRef.FieldPath)
			if err != nil {
				return nil, err
			}
			set(e.Name, v)
		case vf.SecretKeyRef != nil:
			optional := vf.SecretKeyRef.Optional != nil && *vf.SecretKeyRef.Optional
			s, err := getSecret(vf.SecretKeyRef.Name)
			if err != nil {
				if optional {
					continue
				}
				return nil, err
			}
			v, ok := s.Data[vf.SecretKeyRef.Key]
			if !ok {
				if optional {
					continue
				}
				return nil, fmt.Errorf("couldn't find key %s in Secret %s/%s", vf.SecretKeyRef.Key, w.ns, vf.SecretKeyRef.Name)
			}
			set(e.Name, string(v))
		case vf.ConfigMapKeyRef != nil:
			optional := vf.ConfigMapKeyRef.Optional != nil && *vf.ConfigMapKeyRef.Optional
			cm, err := getCM(vf.ConfigMapKeyRef.Name)
			if err != nil {
				if optional {
					continue
				}
				return nil, err
			}
			v, ok := cm.Data[vf.ConfigMapKeyRef.Key]
			if !ok {
				if optional {
					continue
				}
				return nil, fmt.Errorf("couldn't find key %s in ConfigMap %s/%s", vf.ConfigMapKeyRef.Key, w.ns, vf.ConfigMapKeyRef.Name)
			}
			set(e.Name, v)
		case vf.ResourceFieldRef != nil:
			set(e.Name, "0")
		}
	}
	port := 8080
	if len(ct.spec.Ports) > 0 {
		port = int(ct.spec.Ports[0].ContainerPort)
	}
	set("POD_IP", w.ip)
	set("POD_NAME", w.name)
	set("POD_NAMESPACE", w.ns)
	set("APP_VERSION", ct.tag)
	set("PORT", strconv.Itoa(port))
	set("SANDBOX_BEHAVIORS", c.cfg.BehaviorsFile)
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+vals[k])
	}
	return out, nil
}

func podField(p *corev1.Pod, ip, path string) (string, error) {
	switch path {
	case "metadata.name":
		return p.Name, nil
	case "metadata.namespace":
		return p.Namespace, nil
	case "metadata.uid":
		return string(p.UID), nil
	case "status.podIP":
		return ip, nil
	case "status.podIPs":
		return ip, nil
	case "status.hostIP", "status.hostIPs":
		return nodeIP, nil
	case "spec.nodeName":
		return nodeName, nil
	case "spec.serviceAccountName":
		return p.Spec.ServiceAccountName, nil
	}
	if m := regexp.MustCompile(`^metadata\.(labels|annotations)\['(.+)'\]$`).FindStringSubmatch(path); m != nil {
		if m[1] == "labels" {
			return p.Labels[m[2]], nil
		}
		return p.Annotations[m[2]], nil
	}
	return "", fmt.Errorf("unsupported fieldPath %q", path)
}

func ptr[T any](v T) *T { return &v }

// splitImage splits an image reference into repository and tag.
func splitImage(image string) (repo, tag string) {
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	slash := strings.LastIndex(image, "/")
	if colon := strings.LastIndex(image, ":"); colon > slash {
		return image[:colon], image[colon+1:]
	}
	return image, ""
}
