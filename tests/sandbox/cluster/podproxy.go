package cluster

import (
	"math/rand"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// servePodProxy answers /api/v1/namespaces/<ns>/pods/<name>[:<port>]/proxy[/<path>]
// as kube-apiserver does: the request goes on to the pod's IP and port
// (the first container port when none is named), the path after /proxy
// and the query kept, the caller's Authorization not passed on. parts is
// the URL path split on "/"; it reports whether the path was a pod proxy.
func (c *Cluster) servePodProxy(w http.ResponseWriter, r *http.Request, parts []string) bool {
	if len(parts) < 7 || parts[0] != "api" || parts[1] != "v1" || parts[2] != "namespaces" ||
		parts[4] != "pods" || parts[6] != "proxy" {
		return false
	}
	ns, name, port := parts[3], parts[5], ""
	if i := strings.LastIndexByte(name, ':'); i >= 0 {
		name, port = name[:i], name[i+1:]
	}
	o, err := c.store.get(resPods, ns, name)
	if err != nil {
		writeError(w, err)
		return true
	}
	p := o.(*corev1.Pod)
	if port == "" {
		for _, ct := range p.Spec.Containers {
			if len(ct.Ports) > 0 {
				port = strconv.Itoa(int(ct.Ports[0].ContainerPort))
				break
			}
		}
	} else if _, err := strconv.Atoi(port); err != nil {
		found := false
		for _, ct := range p.Spec.Containers {
			for _, cp := range ct.Ports {
				if cp.Name == port {
					port, found = strconv.Itoa(int(cp.ContainerPort)), true
				}
			}
		}
		if !found {
			writeError(w, apierrors.NewBadRequest("no port named "+port+" on pod "+name))
			return true
		}
	}
	if port == "" {
		port = "80"
	}
	if p.Status.PodIP == "" {
		writeError(w, apierrors.NewServiceUnavailable("pod "+name+" has no IP address"))
		return true
	}
	proxyTo(w, r, net.JoinHostPort(p.Status.PodIP, port), parts[7:])
	return true
}

// serveServiceProxy answers /api/v1/namespaces/<ns>/services/<name>[:<port>]/proxy[/<path>]
// as kube-apiserver does: the port (a Service port's name or number; the
// first when none is given) picks the Endpoints port of the same name, and
// the request goes on to a random ready address of the Service's Endpoints.
func (c *Cluster) serveServiceProxy(w http.ResponseWriter, r *http.Request, parts []string) bool {
	if len(parts) < 7 || parts[0] != "api" || parts[1] != "v1" || parts[2] != "namespaces" ||
		parts[4] != "services" || parts[6] != "proxy" {
		return false
	}
	ns, name, port := parts[3], parts[5], ""
	if i := strings.LastIndexByte(name, ':'); i >= 0 {
		name, port = name[:i], name[i+1:]
	}
	o, err := c.store.get(resServices, ns, name)
	if err != nil {
		writeError(w, err)
		return true
	}
	svc := o.(*corev1.Service)
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		p := &svc.Spec.Ports[i]
		if port == "" || p.Name == port || strconv.Itoa(int(p.Port)) == port {
			sp = p
			break
		}
	}
	if sp == nil {
		writeError(w, apierrors.NewServiceUnavailable("no service port "+strconv.Quote(port)+" found for service "+strconv.Quote(name)))
		return true
	}
	eo, err := c.store.get(resEndpoints, ns, name)
	if err != nil {
		writeError(w, apierrors.NewServiceUnavailable("no endpoints available for service "+strconv.Quote(name)))
		return true
	}
	var addrs []string
	for _, ss := range eo.(*corev1.Endpoints).Subsets {
		for _, ep := range ss.Ports {
			if ep.Name != sp.Name {
				continue
			}
			for _, a := range ss.Addresses {
				addrs = append(addrs, net.JoinHostPort(a.IP, strconv.Itoa(int(ep.Port))))
			}
		}
	}
	if len(addrs) == 0 {
		writeError(w, apierrors.NewServiceUnavailable("no endpoints available for service "+strconv.Quote(name)))
		return true
	}
	proxyTo(w, r, addrs[rand.Intn(len(addrs))], parts[7:])
	return true
}

// proxyTo sends r on to host (the path after /proxy and the query kept, the
// caller's Authorization not passed on), as kube-apiserver's proxy does.
func proxyTo(w http.ResponseWriter, r *http.Request, host string, after []string) {
	rest := "/" + strings.Join(after, "/")
	if strings.HasSuffix(r.URL.Path, "/") && rest != "/" {
		rest += "/"
	}
	target := &url.URL{Scheme: "http", Host: host}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = target.Scheme, target.Host
			pr.Out.URL.Path, pr.Out.URL.RawPath = rest, ""
			pr.Out.URL.RawQuery = r.URL.RawQuery
			pr.Out.Host = target.Host
			pr.Out.Header.Del("Authorization")
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			writeError(w, apierrors.NewServiceUnavailable("error trying to reach service: "+err.Error()))
		},
	}
	rp.ServeHTTP(w, r)
}
