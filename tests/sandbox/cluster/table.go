package cluster

import (
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
)

// Server-side printing: `kubectl get` asks for a meta.k8s.io Table and
// prints the columns the server chooses, as with a real API server.

func wantsTable(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "as=Table")
}

type column struct {
	name, typ, format string
	priority          int32
}

func col(name, typ string) column { return column{name: name, typ: typ} }

var nameCol = column{name: "Name", typ: "string", format: "name"}

func age(m metav1.Object) string {
	ts := m.GetCreationTimestamp()
	if ts.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(time.Since(ts.Time))
}

// tableColumns returns the columns of a resource and a function giving
// one object's cells.
func tableColumns(res *resource) ([]column, func(runtime.Object) []any) {
	switch res {
	case resPods:
		return []column{nameCol, col("Ready", "string"), col("Status", "string"), col("Restarts", "string"), col("Age", "string"),
				{name: "IP", typ: "string", priority: 1}, {name: "Node", typ: "string", priority: 1}},
			func(o runtime.Object) []any {
				p := o.(*corev1.Pod)
				ready, restarts := 0, int32(0)
				var lastRestart time.Time
				reason := string(p.Status.Phase)
				for _, cs := range p.Status.ContainerStatuses {
					if cs.Ready {
						ready++
					}
					restarts += cs.RestartCount
					if t := cs.LastTerminationState.Terminated; t != nil && t.FinishedAt.After(lastRestart) {
						lastRestart = t.FinishedAt.Time
					}
					if w := cs.State.Waiting; w != nil && w.Reason != "" {
						reason = w.Reason
					} else if t := cs.State.Terminated; t != nil && t.Reason != "" {
						reason = t.Reason
					}
				}
				if p.DeletionTimestamp != nil {
					reason = "Terminating"
				}
				r := strconv.Itoa(int(restarts))
				if !lastRestart.IsZero() {
					r = fmt.Sprintf("%d (%s ago)", restarts, duration.HumanDuration(time.Since(lastRestart)))
				}
				ip := p.Status.PodIP
				if ip == "" {
					ip = "<none>"
				}
				node := p.Spec.NodeName
				if node == "" {
					node = "<none>"
				}
				return []any{p.Name, fmt.Sprintf("%d/%d", ready, len(p.Spec.Containers)), reason, r, age(p), ip, node}
			}
	case resDeployments:
		return []column{nameCol, col("Ready", "string"), col("Up-to-date", "integer"), col("Available", "integer"), col("Age", "string"),
				{name: "Containers", typ: "string", priority: 1}, {name: "Images", typ: "string", priority: 1}, {name: "Selector", typ: "string", priority: 1}},
			func(o runtime.Object) []any {
				d := o.(*appsv1.Deployment)
				names, images := containersOf(&d.Spec.Template.Spec)
				sel, _ := metav1.LabelSelectorAsSelector(d.Spec.Selector)
				return []any{d.Name, fmt.Sprintf("%d/%d", d.Status.ReadyReplicas, *d.Spec.Replicas), d.Status.UpdatedReplicas,
					d.Status.AvailableReplicas, age(d), names, images, sel.String()}
			}
	case resReplicaSets:
		return []column{nameCol, col("Desired", "integer"), col("Current", "integer"), col("Ready", "integer"), col("Age", "string"),
				{name: "Containers", typ: "string", priority: 1}, {name: "Images", typ: "string", priority: 1}, {name: "Selector", typ: "string", priority: 1}},
			func(o runtime.Object) []any {
				rs := o.(*appsv1.ReplicaSet)
				names, images := containersOf(&rs.Spec.Template.Spec)
				sel, _ := metav1.LabelSelectorAsSelector(rs.Spec.Selector)
				return []any{rs.Name, *rs.Spec.Replicas, rs.Status.Replicas, rs.Status.ReadyReplicas, age(rs), names, images, sel.String()}
			}
	case resServices:
		return []column{nameCol, col("Type", "string"), col("Cluster-IP", "string"), col("External-IP", "string"), col("Port(s)", "string"),
				col("Age", "string"), {name: "Selector", typ: "string", priority: 1}},
			func(o runtime.Object) []any {
				s := o.(*corev1.Service)
				var ports []string
				for _, p := range s.Spec.Ports {
					v := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
					if p.NodePort != 0 {
						v = fmt.Sprintf("%d:%d/%s", p.Port, p.NodePort, p.Protocol)
					}
					ports = append(ports, v)
				}
				pstr := strings.Join(ports, ",")
				if pstr == "" {
					pstr = "<none>"
				}
				ext := "<none>"
				if s.Spec.Type == corev1.ServiceTypeLoadBalancer {
					ext = "<pending>"
				}
				cip := s.Spec.ClusterIP
				if cip == "" {
					cip = "<none>"
				}
				return []any{s.Name, string(s.Spec.Type), cip, ext, pstr, age(s), selectorString(s.Spec.Selector)}
			}
	case resEndpoints:
		return []column{nameCol, col("Endpoints", "string"), col("Age", "string")},
			func(o runtime.Object) []any {
				e := o.(*corev1.Endpoints)
				var list []string
				for _, ss := range e.Subsets {
					for _, a := range ss.Addresses {
						for _, p := range ss.Ports {
							list = append(list, fmt.Sprintf("%s:%d", a.IP, p.Port))
						}
					}
				}
				s := "<none>"
				if len(list) > 3 {
					s = strings.Join(list[:3], ",") + fmt.Sprintf(" + %d more...", len(list)-3)
				} else if len(list) > 0 {
					s = strings.Join(list, ",")
				}
				return []any{e.Name, s, age(e)}
			}
	case resNodes:
		return []column{nameCol, col("Status", "string"), col("Roles", "string"), col("Age", "string"), col("Version", "string"),
				{name: "Internal-IP", typ: "string", priority: 1}, {name: "OS-Image", typ: "string", priority: 1},
				{name: "Container-Runtime", typ: "string", priority: 1}},
			func(o runtime.Object) []any {
				n := o.(*corev1.Node)
				status := "Unknown"
				for _, c := range n.Status.Conditions {
					if c.Type == corev1.NodeReady {
						status = map[corev1.ConditionStatus]string{corev1.ConditionTrue: "Ready", corev1.ConditionFalse: "NotReady"}[c.Status]
					}
				}
				var roles []string
				for k := range n.Labels {
					if r, ok := strings.CutPrefix(k, "node-role.kubernetes.io/"); ok {
						roles = append(roles, r)
					}
				}
				sort.Strings(roles)
				role := strings.Join(roles, ",")
				if role == "" {
					role = "<none>"
				}
				ip := "<none>"
				for _, a := range n.Status.Addresses {
					if a.Type == corev1.NodeInternalIP {
						ip = a.Address
					}
				}
				return []any{n.Name, status, role, age(n), n.Status.NodeInfo.KubeletVersion, ip, n.Status.NodeInfo.OSImage,
					n.Status.NodeInfo.ContainerRuntimeVersion}
			}
	case resNamespaces:
		return []column{nameCol, col("Status", "string"), col("Age", "string")},
			func(o runtime.Object) []any {
				n := o.(*corev1.Namespace)
				return []any{n.Name, string(n.Status.Phase), age(n)}
			}
	case resConfigMaps:
		return []column{nameCol, col("Data", "integer"), col("Age", "string")},
			func(o runtime.Object) []any {
				c := o.(*corev1.ConfigMap)
				return []any{c.Name, len(c.Data) + len(c.BinaryData), age(c)}
			}
	case resSecrets:
		return []column{nameCol, col("Type", "string"), col("Data", "integer"), col("Age", "string")},
			func(o runtime.Object) []any {
				s := o.(*corev1.Secret)
				return []any{s.Name, string(s.Type), len(s.Data), age(s)}
			}
	case resEvents:
		return []column{col("Last Seen", "string"), col("Type", "string"), col("Reason", "string"), col("Object", "string"),
				col("Message", "string")},
			func(o runtime.Object) []any {
				e := o.(*corev1.Event)
				last := e.LastTimestamp.Time
				if last.IsZero() {
					last = e.EventTime.Time
				}
				seen := "<unknown>"
				if !last.IsZero() {
					seen = duration.HumanDuration(time.Since(last))
				}
				return []any{seen, e.Type, e.Reason, strings.ToLower(e.InvolvedObject.Kind) + "/" + e.InvolvedObject.Name, e.Message}
			}
	}
	return []column{nameCol, col("Age", "string")}, func(o runtime.Object) []any {
		m := metaOf(o)
		return []any{m.GetName(), age(m)}
	}
}

func containersOf(s *corev1.PodSpec) (string, string) {
	var names, images []string
	for _, c := range s.Containers {
		names = append(names, c.Name)
		images = append(images, c.Image)
	}
	return strings.Join(names, ","), strings.Join(images, ",")
}

func selectorString(m map[string]string) string {
	if len(m) == 0 {
		return "<none>"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

// toTable renders objects as a meta.k8s.io/v1 Table; rows carry the
// object's metadata (PartialObjectMetadata), or the whole object when the
// client asked for includeObject=Object.
func toTable(res *resource, objs []runtime.Object, rv, cont string, includeObject string, headers bool) *metav1.Table {
	cols, cells := tableColumns(res)
	t := &metav1.Table{TypeMeta: metav1.TypeMeta{Kind: "Table", APIVersion: "meta.k8s.io/v1"}}
	t.ResourceVersion, t.Continue = rv, cont
	if headers {
		for _, c := range cols {
			desc := ""
			if c.name == "Name" {
				desc = "Name must be unique within a namespace."
			}
			t.ColumnDefinitions = append(t.ColumnDefinitions, metav1.TableColumnDefinition{Name: c.name, Type: c.typ,
				Format: c.format, Priority: c.priority, Description: desc})
		}
	}
	t.Rows = []metav1.TableRow{}
	for _, o := range objs {
		row := metav1.TableRow{Cells: cells(o)}
		switch includeObject {
		case "None":
		case "Object":
			row.Object = runtime.RawExtension{Raw: encodeObj(res, o.DeepCopyObject())}
		default:
			m := metaOf(o)
			pm := metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{Kind: "PartialObjectMetadata", APIVersion: "meta.k8s.io/v1"}}
			pm.ObjectMeta = metav1.ObjectMeta{Name: m.GetName(), Namespace: m.GetNamespace(), UID: m.GetUID(),
				ResourceVersion: m.GetResourceVersion(), Generation: m.GetGeneration(), CreationTimestamp: m.GetCreationTimestamp(),
				DeletionTimestamp: m.GetDeletionTimestamp(), Labels: m.GetLabels(), Annotations: m.GetAnnotations(),
				OwnerReferences: m.GetOwnerReferences(), Finalizers: m.GetFinalizers()}
			row.Object = runtime.RawExtension{Object: &pm}
		}
		t.Rows = append(t.Rows, row)
	}
	return t
}
