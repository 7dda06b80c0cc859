package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
)

// KubeVersion is the Kubernetes release the control plane is built from
// (tests/sandbox/kube/go.mod); the kubelet reports it too.
const KubeVersion = "v1.37.2"

const kubeletVersion = KubeVersion

// startKubelet registers the node, starts the lease, the pod informers and
// the log server, and returns once the node's pods are being watched.
func startKubelet(ctx context.Context, c *Cluster) (*kubelet, error) {
	cs, err := c.clientset("kubelet-client")
	if err != nil {
		return nil, err
	}
	sched, err := c.clientset("scheduler")
	if err != nil {
		return nil, err
	}
	lf, err := os.OpenFile(filepath.Join(c.cfg.Dir, "kubelet.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	k := &kubelet{c: c, ctx: ctx, cs: cs, sched: sched, workers: map[types.UID]*podWorker{}, ipsUsed: map[string]bool{},
		ipNext: uint32(rand.IntN(65024)), log: log.New(lf, "", log.LstdFlags|log.LUTC|log.Lmicroseconds)}
	if err := k.serve(); err != nil {
		return nil, err
	}
	if err := k.register(ctx); err != nil {
		return nil, err
	}
	go k.heartbeat(ctx)

	// The node's pods.
	lw := cache.NewFilteredListWatchFromClient(cs.CoreV1().RESTClient(), "pods", metav1.NamespaceAll, func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", nodeName).String()
	})
	inf := cache.NewSharedIndexInformer(lw, &corev1.Pod{}, 0, cache.Indexers{})
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { k.handle(o.(*corev1.Pod)) },
		UpdateFunc: func(_, o any) { k.handle(o.(*corev1.Pod)) },
		DeleteFunc: func(o any) {
			if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = t.Obj
			}
			if p, ok := o.(*corev1.Pod); ok {
				k.forget(p)
			}
		},
	})
	k.pods = inf.GetIndexer()
	go inf.Run(ctx.Done())

	// Pods nobody has scheduled: one node, so the scheduler's whole job is
	// the binding.
	plw := cache.NewFilteredListWatchFromClient(sched.CoreV1().RESTClient(), "pods", metav1.NamespaceAll, func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", "").String()
	})
	pending := cache.NewSharedIndexInformer(plw, &corev1.Pod{}, 0, cache.Indexers{})
	pending.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { go k.bind(o.(*corev1.Pod)) },
		UpdateFunc: func(_, o any) { go k.bind(o.(*corev1.Pod)) },
	})
	go pending.Run(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced, pending.HasSynced) {
		return nil, errors.New("kubelet: pod informers did not sync")
	}
	return k, nil
}

// bind schedules a pending pod onto the sandbox node.
func (k *kubelet) bind(p *corev1.Pod) {
	if p.Spec.NodeName != "" || p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return
	}
	b := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID},
		Target: corev1.ObjectReference{Kind: "Node", Name: nodeName}}
	err := k.sched.CoreV1().Pods(p.Namespace).Bind(k.ctx, b, metav1.CreateOptions{})
	if err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) && !apierrors.IsAlreadyExists(err) {
		k.logf("bind %s/%s: %v", p.Namespace, p.Name, err)
	}
}

func (k *kubelet) nodeStatus() corev1.NodeStatus {
	now := metav1.Now()
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	capacity := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourceMemory: resource.MustParse("16Gi"),
		corev1.ResourcePods: resource.MustParse("500"), corev1.ResourceEphemeralStorage: resource.MustParse("100Gi")}
	return corev1.NodeStatus{
		Capacity: capacity, Allocatable: capacity,
		Conditions: []corev1.NodeCondition{
			cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
			cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
			cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
			cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "kubelet is posting ready status"),
		},
		Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: nodeIP}, {Type: corev1.NodeHostName, Address: nodeName}},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(k.port)}},
		NodeInfo: corev1.NodeSystemInfo{KubeletVersion: kubeletVersion, OperatingSystem: "linux", Architecture: "amd64",
			ContainerRuntimeVersion: "sandbox://1", OSImage: "sandbox (processes in a network namespace)", KernelVersion: "sandbox"},
	}
}

// register creates the Node (or takes over an existing one) and posts its
// status.
func (k *kubelet) register(ctx context.Context) error {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName, Labels: map[string]string{
		"kubernetes.io/hostname": nodeName, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
		Spec:   corev1.NodeSpec{PodCIDR: podCIDR, PodCIDRs: []string{podCIDR}},
		Status: k.nodeStatus()}
	if _, err := k.cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("register node %s: %w", nodeName, err)
	}
	return k.postStatus(ctx)
}

func (k *kubelet) postStatus(ctx context.Context) error {
	return retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		n, err := k.cs.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Status = k.nodeStatus()
		_, err = k.cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
}

// heartbeat renews the node's Lease every 10 s (kube-node-lease, 40 s
// duration, as the kubelet does) and posts the node's status every minute.
func (k *kubelet) heartbeat(ctx context.Context) {
	leases := k.cs.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	dur := int32(40)
	holder := nodeName
	lastStatus := time.Now()
	for {
		now := metav1.NewMicroTime(time.Now())
		l, err := leases.Get(ctx, nodeName, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: nodeName, Namespace: corev1.NamespaceNodeLease},
				Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &dur, RenewTime: &now}}, metav1.CreateOptions{})
		case err == nil:
			l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime = &holder, &dur, &now
			_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
		}
		if err != nil && ctx.Err() == nil {
			k.logf("node lease: %v", err)
		}
		if time.Since(lastStatus) > time.Minute {
			if err := k.postStatus(ctx); err != nil && ctx.Err() == nil {
				k.logf("node status: %v", err)
			}
			lastStatus = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Second):
		}
	}
}

// currentPod is the pod as last seen, or the spec the worker started from.
func (k *kubelet) currentPod(w *podWorker) *corev1.Pod {
	if o, ok, _ := k.pods.GetByKey(w.ns + "/" + w.name); ok {
		if p := o.(*corev1.Pod); p.UID == w.uid {
			return p
		}
	}
	return w.pod
}

// nodeGet runs a read as the node. The Node authorizer learns of a pod's
// ConfigMaps and Secrets shortly after the binding: a 403 right after
// start is retried for a few seconds.
func (k *kubelet) nodeGet(get func(ctx context.Context) error) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := get(k.ctx)
		if err == nil || !apierrors.IsForbidden(err) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// putStatus writes the worker's view of the pod through pods/status.
func (k *kubelet) putStatus(w *podWorker, st corev1.PodStatus) {
	first := true
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		var cur *corev1.Pod
		if first {
			first = false
			if p := k.currentPod(w); p != w.pod {
				cur = p.DeepCopy()
			}
		}
		if cur == nil {
			p, err := k.cs.CoreV1().Pods(w.ns).Get(k.ctx, w.name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			cur = p
		}
		if cur.UID != w.uid {
			return nil // replaced by a pod of the same name
		}
		// Conditions other components own (DisruptionTarget, readiness
		// gates) stay.
		keep := st.DeepCopy()
		for _, c := range cur.Status.Conditions {
			switch c.Type {
			case corev1.PodReady, corev1.ContainersReady, corev1.PodInitialized, corev1.PodScheduled, corev1.PodReadyToStartContainers:
			default:
				keep.Conditions = append(keep.Conditions, c)
			}
		}
		// The API server computes the QoS class at creation; it is immutable.
		keep.QOSClass = cur.Status.QOSClass
		cur.Status = *keep
		_, err := k.cs.CoreV1().Pods(w.ns).UpdateStatus(k.ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil && !apierrors.IsNotFound(err) && k.ctx.Err() == nil {
		k.logf("status of pod %s/%s: %v", w.ns, w.name, err)
	}
}

var eventsMu sync.Mutex
var eventNames = map[string]*corev1.Event{}

// recordEvent posts a core/v1 Event about the worker's pod, counting
// repeats of the same reason and message on one Event as the kubelet's
// recorder does.
func (k *kubelet) recordEvent(w *podWorker, typ, reason, msg string) {
	key := string(w.uid) + "\x00" + reason + "\x00" + msg
	now := metav1.Now()
	eventsMu.Lock()
	ev := eventNames[key]
	if ev != nil {
		ev.Count++
		ev.LastTimestamp = now
		ev = ev.DeepCopy()
	}
	eventsMu.Unlock()
	events := k.cs.CoreV1().Events(w.ns)
	if ev != nil {
		if _, err := events.Update(k.ctx, ev, metav1.UpdateOptions{}); err == nil {
			return
		}
	}
	ev = &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", w.name, time.Now().UnixNano()), Namespace: w.ns},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: w.ns, Name: w.name, UID: w.uid},
		Type:           typ, Reason: reason, Message: msg, Count: 1, FirstTimestamp: now, LastTimestamp: now,
		Source:              corev1.EventSource{Component: "kubelet", Host: nodeName},
		ReportingController: "kubelet", ReportingInstance: nodeName,
	}
	created, err := events.Create(k.ctx, ev, metav1.CreateOptions{})
	if err != nil {
		if k.ctx.Err() == nil {
			k.logf("event %s on pod %s/%s: %v", reason, w.ns, w.name, err)
		}
		return
	}
	eventsMu.Lock()
	eventNames[key] = created
	eventsMu.Unlock()
}

// serve starts the kubelet's HTTPS endpoint on the node's address: the
// API server connects here for pods/log with its kubelet client
// certificate.
func (k *kubelet) serve() error {
	p := k.c.pki
	cert, err := tls.LoadX509KeyPair(p.file("kubelet-serving.crt"), p.file("kubelet-serving.key"))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(nodeIP, "0"))
	if err != nil {
		return err
	}
	k.port = ln.Addr().(*net.TCPAddr).Port
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", k.serveLog)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	k.srv = &http.Server{Handler: k.authorize(mux), ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: p.pool(),
			ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}}
	go k.srv.ServeTLS(ln, "", "")
	return nil
}

// authorize admits the API server's kubelet client (and other members of
// system:masters); the real kubelet asks the API server, which would say
// the same for these identities.
func (k *kubelet) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cert := r.TLS.PeerCertificates[0]
		ok := cert.Subject.CommonName == "kube-apiserver-kubelet-client"
		for _, o := range cert.Subject.Organization {
			ok = ok || o == "system:masters"
		}
		if !ok {
			http.Error(w, fmt.Sprintf("Forbidden (user=%s, verb=get, resource=nodes, subresource=log)", cert.Subject.CommonName), 403)
			return
		}
		next.ServeHTTP(w, r)
	})
}
