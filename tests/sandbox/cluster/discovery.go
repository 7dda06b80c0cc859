package cluster

import (
	"encoding/json"
	"net/http"
	"strings"

	apidiscoveryv2 "k8s.io/api/apidiscovery/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const aggregatedDiscoveryType = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"

var allVerbs = []string{"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}

// groupVersions lists the served group/versions, core first.
func groupVersions() [][2]string {
	var out [][2]string
	seen := map[[2]string]bool{}
	for _, r := range allResources {
		gv := [2]string{r.group, r.version}
		if !seen[gv] {
			seen[gv] = true
			out = append(out, gv)
		}
	}
	return out
}

func writeJSONType(w http.ResponseWriter, status int, ctype string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	w.Header().Set("Content-Type", ctype)
	w.WriteHeader(status)
	w.Write(b)
}

func wantsAggregated(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "as=APIGroupDiscoveryList")
}

// serveDiscovery answers /api, /apis, /api/v1 and /apis/<g>/<v>; it
// returns false for any other path. Aggregated (v2) discovery is served to
// clients that ask for it, legacy discovery to the rest, as the real API
// server does.
func (c *Cluster) serveDiscovery(w http.ResponseWriter, r *http.Request, parts []string) bool {
	switch {
	case len(parts) == 1 && parts[0] == "api":
		if wantsAggregated(r) {
			writeJSONType(w, 200, aggregatedDiscoveryType, c.aggregated(true))
			return true
		}
		writeJSON(w, 200, map[string]any{"kind": "APIVersions", "versions": []string{"v1"},
			"serverAddressByClientCIDRs": []map[string]string{{"clientCIDR": "0.0.0.0/0", "serverAddress": c.apiLn.Addr().String()}}})
		return true
	case len(parts) == 1 && parts[0] == "apis":
		if wantsAggregated(r) {
			writeJSONType(w, 200, aggregatedDiscoveryType, c.aggregated(false))
			return true
		}
		var groups []metav1.APIGroup
		for _, gv := range groupVersions() {
			if gv[0] == "" {
				continue
			}
			v := metav1.GroupVersionForDiscovery{GroupVersion: gv[0] + "/" + gv[1], Version: gv[1]}
			groups = append(groups, metav1.APIGroup{Name: gv[0], Versions: []metav1.GroupVersionForDiscovery{v}, PreferredVersion: v})
		}
		writeJSON(w, 200, metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}, Groups: groups})
		return true
	case len(parts) == 2 && parts[0] == "api" && parts[1] == "v1":
		writeJSON(w, 200, resourceList("", "v1"))
		return true
	case len(parts) == 2 && parts[0] == "apis":
		for _, gv := range groupVersions() {
			if gv[0] == parts[1] {
				v := metav1.GroupVersionForDiscovery{GroupVersion: gv[0] + "/" + gv[1], Version: gv[1]}
				writeJSON(w, 200, metav1.APIGroup{TypeMeta: metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"},
					Name: gv[0], Versions: []metav1.GroupVersionForDiscovery{v}, PreferredVersion: v})
				return true
			}
		}
	case len(parts) == 3 && parts[0] == "apis":
		for _, gv := range groupVersions() {
			if gv[0] == parts[1] && gv[1] == parts[2] {
				writeJSON(w, 200, resourceList(gv[0], gv[1]))
				return true
			}
		}
	}
	return false
}

func subresources(r *resource) []string {
	var subs []string
	if r.hasStatus {
		subs = append(subs, "status")
	}
	if r.hasScale {
		subs = append(subs, "scale")
	}
	if r == resPods {
		subs = append(subs, "log")
	}
	return subs
}

func resourceList(group, version string) metav1.APIResourceList {
	gv := version
	if group != "" {
		gv = group + "/" + version
	}
	out := metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: gv}
	for _, r := range allResources {
		if r.group != group || r.version != version {
			continue
		}
		out.APIResources = append(out.APIResources, metav1.APIResource{Name: r.plural, SingularName: r.singular,
			Namespaced: r.namespaced, Kind: r.kind, Verbs: allVerbs, ShortNames: r.shortNames, Categories: r.categories})
		for _, sub := range subresources(r) {
			ar := metav1.APIResource{Name: r.plural + "/" + sub, Namespaced: r.namespaced, Kind: r.kind,
				Verbs: []string{"get", "patch", "update"}}
			switch sub {
			case "scale":
				ar.Group, ar.Version, ar.Kind = "autoscaling", "v1", "Scale"
			case "log":
				ar.Verbs = []string{"get"}
			}
			out.APIResources = append(out.APIResources, ar)
		}
	}
	return out
}

func (c *Cluster) aggregated(core bool) apidiscoveryv2.APIGroupDiscoveryList {
	out := apidiscoveryv2.APIGroupDiscoveryList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupDiscoveryList", APIVersion: "apidiscovery.k8s.io/v2"}}
	for _, gv := range groupVersions() {
		if (gv[0] == "") != core {
			continue
		}
		ver := apidiscoveryv2.APIVersionDiscovery{Version: gv[1], Freshness: apidiscoveryv2.DiscoveryFreshnessCurrent}
		for _, r := range allResources {
			if r.group != gv[0] || r.version != gv[1] {
				continue
			}
			scope := apidiscoveryv2.ScopeCluster
			if r.namespaced {
				scope = apidiscoveryv2.ScopeNamespace
			}
			rd := apidiscoveryv2.APIResourceDiscovery{Resource: r.plural, SingularResource: r.singular, Scope: scope,
				ResponseKind: &metav1.GroupVersionKind{Group: r.group, Version: r.version, Kind: r.kind},
				Verbs:        allVerbs, ShortNames: r.shortNames, Categories: r.categories}
			for _, sub := range subresources(r) {
				sd := apidiscoveryv2.APISubresourceDiscovery{Subresource: sub,
					ResponseKind: &metav1.GroupVersionKind{Group: r.group, Version: r.version, Kind: r.kind},
					Verbs:        []string{"get", "patch", "update"}}
				switch sub {
				case "scale":
					sd.ResponseKind = &metav1.GroupVersionKind{Group: "autoscaling", Version: "v1", Kind: "Scale"}
				case "log":
					sd.ResponseKind = &metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}
					sd.Verbs = []string{"get"}
				}
				rd.Subresources = append(rd.Subresources, sd)
			}
			ver.Resources = append(ver.Resources, rd)
		}
		item := apidiscoveryv2.APIGroupDiscovery{Versions: []apidiscoveryv2.APIVersionDiscovery{ver}}
		item.Name = gv[0]
		out.Items = append(out.Items, item)
	}
	return out
}
