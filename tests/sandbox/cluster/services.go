package cluster

import (
	"context"
	"errors"
	"hash/fnv"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"bgrun/sandbox/infra"
)

// services is the sandbox's kube-proxy: a TCP listener on each Service's
// cluster IP and port, forwarding each new connection to an endpoint the
// EndpointSlices (written by kube-controller-manager's endpointslice
// controller) list as ready at that moment — round robin, or pinned by
// client address with sessionAffinity ClientIP. No ready endpoint: the
// serving endpoints that are terminating (as kube-proxy falls back to);
// none at all: the connection is reset (kube-proxy's REJECT).
type services struct {
	c       *Cluster
	svcs    cache.Indexer
	slices  cache.Indexer
	mu      sync.Mutex
	proxies map[types.UID]*svcProxy
}

type svcProxy struct {
	ns, name, ip string
	ports        map[string]*portProxy // key: port number
}

type portProxy struct {
	ln      net.Listener
	port    int32
	name    string
	rr      atomic.Uint64
	closing atomic.Bool
}

const sliceServiceIndex = "service"

func startServices(ctx context.Context, c *Cluster, cs *kubernetes.Clientset) (*services, error) {
	s := &services{c: c, proxies: map[types.UID]*svcProxy{}}
	f := informers.NewSharedInformerFactory(cs, 0)
	svcInf := f.Core().V1().Services().Informer()
	sliceInf := f.Discovery().V1().EndpointSlices().Informer()
	if err := sliceInf.AddIndexers(cache.Indexers{sliceServiceIndex: func(o any) ([]string, error) {
		es := o.(*discoveryv1.EndpointSlice)
		return []string{es.Namespace + "/" + es.Labels[discoveryv1.LabelServiceName]}, nil
	}}); err != nil {
		return nil, err
	}
	svcInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { s.sync(o.(*corev1.Service)) },
		UpdateFunc: func(_, o any) { s.sync(o.(*corev1.Service)) },
		DeleteFunc: func(o any) {
			if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = t.Obj
			}
			if svc, ok := o.(*corev1.Service); ok {
				s.remove(svc.UID)
			}
		},
	})
	s.svcs, s.slices = svcInf.GetIndexer(), sliceInf.GetIndexer()
	f.Start(ctx.Done())
	for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return nil, errors.New("services: informer for " + typ.String() + " did not sync")
		}
	}
	return s, nil
}

func (s *services) remove(uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.proxies[uid]; p != nil {
		for _, pp := range p.ports {
			pp.closing.Store(true)
			pp.ln.Close()
		}
		delete(s.proxies, uid)
	}
}

func (s *services) stopAll() {
	s.mu.Lock()
	uids := make([]types.UID, 0, len(s.proxies))
	for uid := range s.proxies {
		uids = append(uids, uid)
	}
	s.mu.Unlock()
	for _, uid := range uids {
		s.remove(uid)
	}
}

// sync opens and closes listeners to match the Service's ports.
func (s *services) sync(svc *corev1.Service) {
	ip := svc.Spec.ClusterIP
	if ip == "" || ip == corev1.ClusterIPNone || svc.Spec.Type == corev1.ServiceTypeExternalName {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.proxies[svc.UID]
	if p == nil {
		p = &svcProxy{ns: svc.Namespace, name: svc.Name, ip: ip, ports: map[string]*portProxy{}}
		s.proxies[svc.UID] = p
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
			s.c.kubelet.logf("service %s/%s: listen %s:%d: %v", svc.Namespace, svc.Name, ip, sp.Port, err)
			continue
		}
		pp := &portProxy{ln: ln, port: sp.Port, name: sp.Name}
		p.ports[key] = pp
		go s.serve(p, pp)
	}
}

type backend struct {
	ip   string
	port int32
}

// backends reads the Service's EndpointSlices at this instant.
func (s *services) backends(ns, name, portName string) ([]backend, bool) {
	o, ok, _ := s.svcs.GetByKey(ns + "/" + name)
	if !ok {
		return nil, false
	}
	affinity := o.(*corev1.Service).Spec.SessionAffinity == corev1.ServiceAffinityClientIP
	objs, _ := s.slices.ByIndex(sliceServiceIndex, ns+"/"+name)
	var ready, terminating []backend
	seen := map[backend]bool{}
	for _, so := range objs {
		es := so.(*discoveryv1.EndpointSlice)
		if es.AddressType != discoveryv1.AddressTypeIPv4 {
			continue
		}
		var port int32 = -1
		for _, p := range es.Ports {
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			if name == portName && p.Port != nil {
				port = *p.Port
			}
		}
		if port < 0 {
			continue
		}
		for _, ep := range es.Endpoints {
			isReady := ep.Conditions.Ready == nil || *ep.Conditions.Ready
			serving := ep.Conditions.Serving != nil && *ep.Conditions.Serving
			term := ep.Conditions.Terminating != nil && *ep.Conditions.Terminating
			for _, a := range ep.Addresses {
				b := backend{a, port}
				if seen[b] {
					continue
				}
				seen[b] = true
				switch {
				case isReady:
					ready = append(ready, b)
				case serving && term:
					terminating = append(terminating, b)
				}
			}
		}
	}
	if len(ready) == 0 {
		ready = terminating
	}
	return ready, affinity
}

func (s *services) serve(p *svcProxy, pp *portProxy) {
	for {
		conn, err := pp.ln.Accept()
		if err != nil {
			if pp.closing.Load() {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go s.forward(p, pp, conn)
	}
}

func reject(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

func (s *services) forward(p *svcProxy, pp *portProxy, client net.Conn) {
	bs, affinity := s.backends(p.ns, p.name, pp.name)
	if len(bs) == 0 {
		reject(client)
		return
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].ip < bs[j].ip })
	start := pp.rr.Add(1)
	if affinity {
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
		reject(client)
		return
	}
	infra.Splice(client, upstream)
}
