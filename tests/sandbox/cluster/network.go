package cluster

import (
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

const (
	serviceNameLabel = "kubernetes.io/service-name"
	managedByLabel   = "endpointslice.kubernetes.io/managed-by"
	managedByValue   = "endpointslice-controller.k8s.io"
)

// network gives Services their cluster IPs (127.20.0.0/16) and a real TCP
// proxy per service port (kube-proxy), and keeps Endpoints and
// EndpointSlices in step with ready pods (endpoints controllers).
type network struct {
	c         *Cluster
	mu        sync.Mutex
	ipNext    uint32
	ipsUsed   map[string]bool
	nodePorts map[int32]bool
	proxies   map[types.UID]*svcProxy
	managed   map[string]bool // Endpoints we created, "ns/name"
}

type svcProxy struct {
	ns, name, ip string
	ports        map[string]*portProxy // key: protocol/port
}

type portProxy struct {
	ln      net.Listener
	port    int32
	name    string
	rr      atomic.Uint64
	conns   sync.WaitGroup
	closing atomic.Bool
}

func newNetwork(c *Cluster) *network {
	// A random start keeps two sandboxes on one machine off each other's addresses.
	return &network{c: c, ipsUsed: map[string]bool{}, nodePorts: map[int32]bool{}, proxies: map[types.UID]*svcProxy{},
		managed: map[string]bool{}, ipNext: uint32(rand.IntN(65024))}
}

// allocateClusterIP fills spec.clusterIP(s) (and node ports) on create.
func (n *network) allocateClusterIP(svc *corev1.Service) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return
	}
	switch svc.Spec.ClusterIP {
	case corev1.ClusterIPNone:
		svc.Spec.ClusterIPs = []string{corev1.ClusterIPNone}
	case "":
		for i := 0; i < 65000; i++ {
			k := n.ipNext
			n.ipNext = (n.ipNext + 1) % 65024
			ip := fmt.Sprintf("127.20.%d.%d", k/254, k%254+1)
			if !n.ipsUsed[ip] {
				n.ipsUsed[ip] = true
				svc.Spec.ClusterIP = ip
				break
			}
		}
		svc.Spec.ClusterIPs = []string{svc.Spec.ClusterIP}
	default:
		n.ipsUsed[svc.Spec.ClusterIP] = true
		svc.Spec.ClusterIPs = []string{svc.Spec.ClusterIP}
	}
	if svc.Spec.Type == corev1.ServiceTypeNodePort || svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		for i := range svc.Spec.Ports {
			if svc.Spec.Ports[i].NodePort != 0 {
				continue
			}
			for p := int32(30000); p < 32768; p++ {
				if !n.nodePorts[p] {
					n.nodePorts[p] = true
					svc.Spec.Ports[i].NodePort = p
					break
				}
			}
		}
	}
}

func (n *network) stopAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for uid, p := range n.proxies {
		for _, pp := range p.ports {
			pp.closing.Store(true)
			pp.ln.Close()
		}
		delete(n.proxies, uid)
	}
}

// sync reconciles proxies, Endpoints and EndpointSlices with Services.
func (n *network) sync() {
	c := n.c
	svcs, _ := c.store.list(resServices, "")
	live := map[types.UID]bool{}
	liveNames := map[string]bool{}
	for _, o := range svcs {
		svc := o.(*corev1.Service)
		live[svc.UID] = true
		liveNames[objKey(svc.Namespace, svc.Name)] = true
		n.syncProxy(svc)
		if svc.Spec.Selector != nil && svc.Spec.Type != corev1.ServiceTypeExternalName && svc.DeletionTimestamp == nil {
			n.syncEndpoints(svc)
		}
	}
	n.mu.Lock()
	for uid, p := range n.proxies {
		if !live[uid] {
			for _, pp := range p.ports {
				pp.closing.Store(true)
				pp.ln.Close()
			}
			delete(n.ipsUsed, p.ip)
			delete(n.proxies, uid)
		}
	}
	var gone []string
	for key := range n.managed {
		if !liveNames[key] {
			gone = append(gone, key)
			delete(n.managed, key)
		}
	}
	n.mu.Unlock()
	for _, key := range gone {
		ns, name := splitKey(key)
		c.store.remove(resEndpoints, ns, name, "", "", false)
	}
}

func splitKey(k string) (string, string) {
	for i := 0; i < len(k); i++ {
		if k[i] == '/' {
			return k[:i], k[i+1:]
		}
	}
	return "", k
}

func (n *network) syncProxy(svc *corev1.Service) {
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.proxies[svc.UID]
	ip := svc.Spec.ClusterIP
	if ip == "" || ip == corev1.ClusterIPNone {
		return
	}
	if p == nil {
		p = &svcProxy{ns: svc.Namespace, name: svc.Name, ip: ip, ports: map[string]*portProxy{}}
		n.proxies[svc.UID] = p
		n.ipsUsed[ip] = true
	}
	want := map[string]corev1.ServicePort{}
	for _, sp := range svc.Spec.Ports {
		if sp.Protocol == corev1.ProtocolTCP || sp.Protocol == "" {
			want[strconv.Itoa(int(sp.Port))] = sp
		}
	}
	for key, pp := range p.ports {
		if sp, ok := want[key]; !ok || sp.Name != pp.name {
			pp.closing.Store(true)
			pp.ln.Close()
			delete(p.ports, key)
		}
	}
	for key, sp := range want {
		if _, ok := p.ports[key]; ok {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(int(sp.Port))))
		if err != nil {
			n.c.logMu.Lock()
			fmt.Fprintf(n.c.logFile, "service %s/%s: listen %s:%d: %v\n", svc.Namespace, svc.Name, ip, sp.Port, err)
			n.c.logMu.Unlock()
			continue
		}
		pp := &portProxy{ln: ln, port: sp.Port, name: sp.Name}
		p.ports[key] = pp
		go n.serveProxy(p, pp)
	}
}

// backend is one ready pod address for a service port.
type backend struct {
	ip   string
	port int32
}

// backends computes, at this instant, the ready pods behind a service
// port: the current selector and readiness decide each new connection.
func (n *network) backends(ns, name, portName string) ([]backend, bool) {
	o, err := n.c.store.get(resServices, ns, name)
	if err != nil {
		return nil, false
	}
	svc := o.(*corev1.Service)
	affinity := svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP
	if svc.Spec.Selector == nil {
		return n.manualBackends(ns, name, portName), affinity
	}
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if svc.Spec.Ports[i].Name == portName {
			sp = &svc.Spec.Ports[i]
		}
	}
	if sp == nil {
		return nil, false
	}
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	pods, _ := n.c.store.list(resPods, ns)
	var out []backend
	for _, po := range pods {
		p := po.(*corev1.Pod)
		if p.DeletionTimestamp != nil || !isPodReady(p) || p.Status.PodIP == "" || !sel.Matches(labels.Set(p.Labels)) {
			continue
		}
		if port, ok := targetPort(p, sp.TargetPort); ok {
			out = append(out, backend{p.Status.PodIP, port})
		}
	}
	return out, affinity
}

// manualBackends serves selector-less services from their Endpoints.
func (n *network) manualBackends(ns, name, portName string) []backend {
	o, err := n.c.store.get(resEndpoints, ns, name)
	if err != nil {
		return nil
	}
	var out []backend
	for _, ss := range o.(*corev1.Endpoints).Subsets {
		for _, p := range ss.Ports {
			if p.Name != portName {
				continue
			}
			for _, a := range ss.Addresses {
				out = append(out, backend{a.IP, p.Port})
			}
		}
	}
	return out
}

func targetPort(p *corev1.Pod, tp intstr.IntOrString) (int32, bool) {
	if tp.Type == intstr.Int {
		return tp.IntVal, tp.IntVal > 0
	}
	for _, ct := range p.Spec.Containers {
		for _, cp := range ct.Ports {
			if cp.Name == tp.StrVal {
				return cp.ContainerPort, true
			}
		}
	}
	return 0, false
}

func (n *network) serveProxy(p *svcProxy, pp *portProxy) {
	for {
		conn, err := pp.ln.Accept()
		if err != nil {
			if pp.closing.Load() {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go n.forward(p, pp, conn)
	}
}

func (n *network) forward(p *svcProxy, pp *portProxy, client net.Conn) {
	bs, affinity := n.backends(p.ns, p.name, pp.name)
	if len(bs) == 0 {
		// No endpoints: refuse, as kube-proxy's REJECT rule does.
		if tc, ok := client.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		client.Close()
		return
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].ip < bs[j].ip })
	start := pp.rr.Add(1)
	if affinity {
		// sessionAffinity ClientIP: one client address, one backend.
		h := fnv.New32a()
		h.Write([]byte(client.RemoteAddr().(*net.TCPAddr).IP.String()))
		start = uint64(h.Sum32())
	}
	var upstream net.Conn
	for i := 0; i < len(bs); i++ {
		b := bs[(start+uint64(i))%uint64(len(bs))]
		c, err := net.DialTimeout("tcp", net.JoinHostPort(b.ip, strconv.Itoa(int(b.port))), 2*time.Second)
		if err == nil {
			upstream = c
			break
		}
	}
	if upstream == nil {
		if tc, ok := client.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		client.Close()
		return
	}
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(upstream, client)
	go pipe(client, upstream)
	<-done
	<-done
	client.Close()
	upstream.Close()
}

// ---- Endpoints and EndpointSlices ----

type epAddr struct {
	pod   *corev1.Pod
	ports []int32 // resolved per service port
	ready bool
}

func (n *network) syncEndpoints(svc *corev1.Service) {
	c := n.c
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	pods, _ := c.store.list(resPods, svc.Namespace)
	var addrs []epAddr
	for _, po := range pods {
		p := po.(*corev1.Pod)
		if p.Status.PodIP == "" || !sel.Matches(labels.Set(p.Labels)) ||
			p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		a := epAddr{pod: p, ready: isPodReady(p) && p.DeletionTimestamp == nil}
		ok := true
		for _, sp := range svc.Spec.Ports {
			port, found := targetPort(p, sp.TargetPort)
			ok = ok && found
			a.ports = append(a.ports, port)
		}
		if ok {
			addrs = append(addrs, a)
		}
	}
	sort.Slice(addrs, func(i, j int) bool { return addrs[i].pod.Status.PodIP < addrs[j].pod.Status.PodIP })

	// Endpoints: one subset per distinct port mapping; terminating pods
	// are left out.
	var subsets []corev1.EndpointSubset
	index := map[string]int{}
	for _, a := range addrs {
		if a.pod.DeletionTimestamp != nil {
			continue
		}
		key := fmt.Sprint(a.ports)
		i, ok := index[key]
		if !ok {
			ss := corev1.EndpointSubset{}
			for k, sp := range svc.Spec.Ports {
				ss.Ports = append(ss.Ports, corev1.EndpointPort{Name: sp.Name, Port: a.ports[k], Protocol: sp.Protocol})
			}
			subsets = append(subsets, ss)
			i = len(subsets) - 1
			index[key] = i
		}
		ea := corev1.EndpointAddress{IP: a.pod.Status.PodIP, NodeName: ptr("sandbox"),
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: a.pod.Namespace, Name: a.pod.Name, UID: a.pod.UID}}
		if a.ready {
			subsets[i].Addresses = append(subsets[i].Addresses, ea)
		} else {
			subsets[i].NotReadyAddresses = append(subsets[i].NotReadyAddresses, ea)
		}
	}
	epLabels := map[string]string{}
	for k, v := range svc.Labels {
		epLabels[k] = v
	}
	if svc.Spec.ClusterIP == corev1.ClusterIPNone {
		epLabels["service.kubernetes.io/headless"] = ""
	}
	if len(epLabels) == 0 {
		epLabels = nil
	}
	n.mu.Lock()
	n.managed[objKey(svc.Namespace, svc.Name)] = true
	n.mu.Unlock()
	cur, err := c.store.get(resEndpoints, svc.Namespace, svc.Name)
	if apierrors.IsNotFound(err) {
		ep := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: svc.Name, Namespace: svc.Namespace, Labels: epLabels}, Subsets: subsets}
		c.store.create(resEndpoints, ep, false)
	} else if err == nil {
		ep := cur.(*corev1.Endpoints)
		if !apiequality.Semantic.DeepEqual(ep.Subsets, subsets) || !apiequality.Semantic.DeepEqual(ep.Labels, epLabels) {
			c.store.update(resEndpoints, svc.Namespace, svc.Name, false, func(o runtime.Object) (runtime.Object, error) {
				e := o.(*corev1.Endpoints)
				e.Subsets, e.Labels = subsets, epLabels
				return e, nil
			})
		}
	}

	// EndpointSlice: one per service, terminating pods included with
	// their conditions.
	slice := discoveryv1.EndpointSlice{AddressType: discoveryv1.AddressTypeIPv4, Endpoints: []discoveryv1.Endpoint{},
		Ports: []discoveryv1.EndpointPort{}}
	for k, sp := range svc.Spec.Ports {
		port := int32(0)
		if tp := sp.TargetPort; tp.Type == intstr.Int {
			port = tp.IntVal
		}
		if len(addrs) > 0 {
			port = addrs[0].ports[k]
		}
		slice.Ports = append(slice.Ports, discoveryv1.EndpointPort{Name: ptr(sp.Name), Port: ptr(port), Protocol: ptr(sp.Protocol)})
	}
	for _, a := range addrs {
		terminating := a.pod.DeletionTimestamp != nil
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{Addresses: []string{a.pod.Status.PodIP},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(a.ready), Serving: ptr(isPodReady(a.pod)), Terminating: ptr(terminating)},
			NodeName:   ptr("sandbox"),
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: a.pod.Namespace, Name: a.pod.Name, UID: a.pod.UID}})
	}
	sliceLabels := map[string]string{}
	for k, v := range svc.Labels {
		sliceLabels[k] = v
	}
	sliceLabels[serviceNameLabel] = svc.Name
	sliceLabels[managedByLabel] = managedByValue
	existing, _ := c.store.list(resEndpointSlices, svc.Namespace)
	var mine []*discoveryv1.EndpointSlice
	for _, o := range existing {
		s := o.(*discoveryv1.EndpointSlice)
		if s.Labels[serviceNameLabel] == svc.Name && s.Labels[managedByLabel] == managedByValue {
			mine = append(mine, s)
		}
	}
	if len(mine) == 0 {
		es := slice.DeepCopy()
		es.ObjectMeta = metav1.ObjectMeta{GenerateName: svc.Name + "-", Namespace: svc.Namespace, Labels: sliceLabels,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID,
				Controller: ptr(true), BlockOwnerDeletion: ptr(true)}}}
		c.createObject(resEndpointSlices, svc.Namespace, es, false)
		return
	}
	for _, extra := range mine[1:] {
		c.store.remove(resEndpointSlices, extra.Namespace, extra.Name, "", "", false)
	}
	s := mine[0]
	if apiequality.Semantic.DeepEqual(s.Endpoints, slice.Endpoints) && apiequality.Semantic.DeepEqual(s.Ports, slice.Ports) &&
		apiequality.Semantic.DeepEqual(s.Labels, sliceLabels) {
		return
	}
	c.store.update(resEndpointSlices, s.Namespace, s.Name, false, func(o runtime.Object) (runtime.Object, error) {
		e := o.(*discoveryv1.EndpointSlice)
		e.Endpoints, e.Ports, e.Labels = slice.Endpoints, slice.Ports, sliceLabels
		return e, nil
	})
}
