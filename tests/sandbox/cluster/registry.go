package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/validation/path"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// resource describes one served resource type and its server-side rules.
type resource struct {
	group, version, kind, plural, singular string
	namespaced                             bool
	shortNames, categories                 []string
	newObj                                 func() runtime.Object
	hasStatus                              bool // status is written only through /status
	hasScale                               bool
	specGeneration                         bool // metadata.generation counts spec changes
	fields                                 func(runtime.Object) fields.Set
	defaults                               func(runtime.Object)
	validate                               func(runtime.Object) field.ErrorList
	// A view of another resource's objects (events.k8s.io/v1 Events are
	// core/v1 Events): stored as backing, converted both ways.
	backing                *resource
	toBacking, fromBacking func(runtime.Object) runtime.Object
}

func (r *resource) gr() schema.GroupResource {
	return schema.GroupResource{Group: r.group, Resource: r.plural}
}
func (r *resource) gvk() schema.GroupVersionKind {
	return schema.GroupVersionKind{Group: r.group, Version: r.version, Kind: r.kind}
}
func (r *resource) apiVersion() string {
	if r.group == "" {
		return r.version
	}
	return r.group + "/" + r.version
}

var (
	resNamespaces = &resource{version: "v1", kind: "Namespace", plural: "namespaces", singular: "namespace",
		shortNames: []string{"ns"}, hasStatus: true,
		newObj: func() runtime.Object { return &corev1.Namespace{} },
		fields: func(o runtime.Object) fields.Set {
			return fields.Set{"status.phase": string(o.(*corev1.Namespace).Status.Phase)}
		},
		defaults: func(o runtime.Object) {
			n := o.(*corev1.Namespace)
			if n.Status.Phase == "" {
				n.Status.Phase = corev1.NamespaceActive
			}
			if n.Labels == nil {
				n.Labels = map[string]string{}
			}
			n.Labels["kubernetes.io/metadata.name"] = n.Name
			if len(n.Spec.Finalizers) == 0 {
				n.Spec.Finalizers = []corev1.FinalizerName{corev1.FinalizerKubernetes}
			}
		}}
	resPods = &resource{version: "v1", kind: "Pod", plural: "pods", singular: "pod", namespaced: true,
		shortNames: []string{"po"}, categories: []string{"all"}, hasStatus: true,
		newObj: func() runtime.Object { return &corev1.Pod{} },
		fields: func(o runtime.Object) fields.Set {
			p := o.(*corev1.Pod)
			return fields.Set{"status.phase": string(p.Status.Phase), "spec.nodeName": p.Spec.NodeName,
				"spec.restartPolicy": string(p.Spec.RestartPolicy), "spec.schedulerName": p.Spec.SchedulerName,
				"spec.serviceAccountName": p.Spec.ServiceAccountName, "status.podIP": p.Status.PodIP,
				"status.nominatedNodeName": p.Status.NominatedNodeName}
		},
		defaults: func(o runtime.Object) {
			p := o.(*corev1.Pod)
			defaultPodSpec(&p.Spec)
			if p.Spec.NodeName == "" {
				p.Spec.NodeName = nodeName // the scheduler's choice: there is one node
			}
			if p.Status.Phase == "" {
				p.Status.Phase = corev1.PodPending
				p.Status.QOSClass = corev1.PodQOSBestEffort
			}
		},
		validate: func(o runtime.Object) field.ErrorList {
			return validatePodSpec(&o.(*corev1.Pod).Spec, field.NewPath("spec"))
		}}
	resServices = &resource{version: "v1", kind: "Service", plural: "services", singular: "service", namespaced: true,
		shortNames: []string{"svc"}, categories: []string{"all"}, hasStatus: true,
		newObj:   func() runtime.Object { return &corev1.Service{} },
		defaults: func(o runtime.Object) { defaultService(o.(*corev1.Service)) },
		validate: func(o runtime.Object) field.ErrorList { return validateService(o.(*corev1.Service)) }}
	resEndpoints = &resource{version: "v1", kind: "Endpoints", plural: "endpoints", singular: "endpoints", namespaced: true,
		shortNames: []string{"ep"},
		newObj:     func() runtime.Object { return &corev1.Endpoints{} }}
	resConfigMaps = &resource{version: "v1", kind: "ConfigMap", plural: "configmaps", singular: "configmap", namespaced: true,
		shortNames: []string{"cm"},
		newObj:     func() runtime.Object { return &corev1.ConfigMap{} }}
	resSecrets = &resource{version: "v1", kind: "Secret", plural: "secrets", singular: "secret", namespaced: true,
		newObj: func() runtime.Object { return &corev1.Secret{} },
		fields: func(o runtime.Object) fields.Set { return fields.Set{"type": string(o.(*corev1.Secret).Type)} },
		defaults: func(o runtime.Object) {
			s := o.(*corev1.Secret)
			if s.Type == "" {
				s.Type = corev1.SecretTypeOpaque
			}
			// stringData is write-only: it is merged into data.
			for k, v := range s.StringData {
				if s.Data == nil {
					s.Data = map[string][]byte{}
				}
				s.Data[k] = []byte(v)
			}
			s.StringData = nil
		}}
	resEvents = &resource{version: "v1", kind: "Event", plural: "events", singular: "event", namespaced: true,
		shortNames: []string{"ev"},
		newObj:     func() runtime.Object { return &corev1.Event{} },
		fields: func(o runtime.Object) fields.Set {
			e := o.(*corev1.Event)
			return fields.Set{"involvedObject.kind": e.InvolvedObject.Kind, "involvedObject.namespace": e.InvolvedObject.Namespace,
				"involvedObject.name": e.InvolvedObject.Name, "involvedObject.uid": string(e.InvolvedObject.UID),
				"involvedObject.apiVersion": e.InvolvedObject.APIVersion, "involvedObject.resourceVersion": e.InvolvedObject.ResourceVersion,
				"involvedObject.fieldPath": e.InvolvedObject.FieldPath, "reason": e.Reason, "reportingComponent": e.ReportingController,
				"source": e.Source.Component, "type": e.Type}
		}}
	resDeployments = &resource{group: "apps", version: "v1", kind: "Deployment", plural: "deployments", singular: "deployment",
		namespaced: true, shortNames: []string{"deploy"}, categories: []string{"all"}, hasStatus: true, hasScale: true,
		specGeneration: true,
		newObj:         func() runtime.Object { return &appsv1.Deployment{} },
		defaults:       func(o runtime.Object) { defaultDeployment(o.(*appsv1.Deployment)) },
		validate:       func(o runtime.Object) field.ErrorList { return validateDeployment(o.(*appsv1.Deployment)) }}
	resReplicaSets = &resource{group: "apps", version: "v1", kind: "ReplicaSet", plural: "replicasets", singular: "replicaset",
		namespaced: true, shortNames: []string{"rs"}, categories: []string{"all"}, hasStatus: true, hasScale: true,
		specGeneration: true,
		newObj:         func() runtime.Object { return &appsv1.ReplicaSet{} },
		fields: func(o runtime.Object) fields.Set {
			return fields.Set{"status.replicas": strconv.Itoa(int(o.(*appsv1.ReplicaSet).Status.Replicas))}
		},
		defaults: func(o runtime.Object) {
			rs := o.(*appsv1.ReplicaSet)
			if rs.Spec.Replicas == nil {
				rs.Spec.Replicas = ptr(int32(1))
			}
			defaultPodSpec(&rs.Spec.Template.Spec)
		},
		validate: func(o runtime.Object) field.ErrorList {
			rs := o.(*appsv1.ReplicaSet)
			return validateSelector(rs.Spec.Selector, rs.Spec.Template.Labels, &rs.Spec.Template.Spec)
		}}
	resEndpointSlices = &resource{group: "discovery.k8s.io", version: "v1", kind: "EndpointSlice", plural: "endpointslices",
		singular: "endpointslice", namespaced: true,
		newObj: func() runtime.Object { return &discoveryv1.EndpointSlice{} }}
	resLeases = &resource{group: "coordination.k8s.io", version: "v1", kind: "Lease", plural: "leases", singular: "lease",
		namespaced: true,
		newObj:     func() runtime.Object { return &coordv1.Lease{} }}
	resEventsV1 = &resource{group: "events.k8s.io", version: "v1", kind: "Event", plural: "events", singular: "event",
		namespaced: true, shortNames: []string{"ev"},
		newObj:      func() runtime.Object { return &eventsv1.Event{} },
		toBacking:   func(o runtime.Object) runtime.Object { return eventToCore(o.(*eventsv1.Event)) },
		fromBacking: func(o runtime.Object) runtime.Object { return eventFromCore(o.(*corev1.Event)) },
		fields: func(o runtime.Object) fields.Set {
			e := o.(*eventsv1.Event)
			return fields.Set{"regarding.kind": e.Regarding.Kind, "regarding.namespace": e.Regarding.Namespace,
				"regarding.name": e.Regarding.Name, "regarding.uid": string(e.Regarding.UID),
				"regarding.apiVersion": e.Regarding.APIVersion, "regarding.resourceVersion": e.Regarding.ResourceVersion,
				"regarding.fieldPath": e.Regarding.FieldPath, "reason": e.Reason, "reportingController": e.ReportingController,
				"type": e.Type}
		},
		validate: func(o runtime.Object) field.ErrorList {
			if o.(*eventsv1.Event).EventTime.IsZero() {
				return field.ErrorList{field.Required(field.NewPath("eventTime"), "")}
			}
			return nil
		}}
	resServiceAccounts = &resource{version: "v1", kind: "ServiceAccount", plural: "serviceaccounts", singular: "serviceaccount",
		namespaced: true, shortNames: []string{"sa"},
		newObj: func() runtime.Object { return &corev1.ServiceAccount{} }}
	resNodes = &resource{version: "v1", kind: "Node", plural: "nodes", singular: "node", shortNames: []string{"no"}, hasStatus: true,
		newObj: func() runtime.Object { return &corev1.Node{} }}
)

// nodeName is the sandbox's single node, where every pod runs.
const nodeName = "sandbox"

func init() { resEventsV1.backing = resEvents }

// eventToCore and eventFromCore convert between the two Event APIs, as
// the API server's conversion does.
func eventToCore(e *eventsv1.Event) *corev1.Event {
	out := &corev1.Event{ObjectMeta: *e.ObjectMeta.DeepCopy(), InvolvedObject: e.Regarding, Reason: e.Reason, Message: e.Note,
		Type: e.Type, EventTime: e.EventTime, Action: e.Action, ReportingController: e.ReportingController,
		ReportingInstance: e.ReportingInstance, Source: e.DeprecatedSource, FirstTimestamp: e.DeprecatedFirstTimestamp,
		LastTimestamp: e.DeprecatedLastTimestamp, Count: e.DeprecatedCount}
	out.TypeMeta = metav1.TypeMeta{Kind: "Event", APIVersion: "v1"}
	if e.Related != nil {
		out.Related = e.Related.DeepCopy()
	}
	if e.Series != nil {
		out.Series = &corev1.EventSeries{Count: e.Series.Count, LastObservedTime: e.Series.LastObservedTime}
	}
	return out
}

func eventFromCore(e *corev1.Event) *eventsv1.Event {
	out := &eventsv1.Event{ObjectMeta: *e.ObjectMeta.DeepCopy(), Regarding: e.InvolvedObject, Reason: e.Reason, Note: e.Message,
		Type: e.Type, EventTime: e.EventTime, Action: e.Action, ReportingController: e.ReportingController,
		ReportingInstance: e.ReportingInstance, DeprecatedSource: e.Source, DeprecatedFirstTimestamp: e.FirstTimestamp,
		DeprecatedLastTimestamp: e.LastTimestamp, DeprecatedCount: e.Count}
	out.TypeMeta = metav1.TypeMeta{Kind: "Event", APIVersion: "events.k8s.io/v1"}
	if e.Related != nil {
		out.Related = e.Related.DeepCopy()
	}
	if e.Series != nil {
		out.Series = &eventsv1.EventSeries{Count: e.Series.Count, LastObservedTime: e.Series.LastObservedTime}
	}
	return out
}

var allResources = []*resource{resNamespaces, resNodes, resServiceAccounts, resPods, resServices, resEndpoints, resConfigMaps, resSecrets, resEvents,
	resDeployments, resReplicaSets, resEndpointSlices, resLeases, resEventsV1}

func findResource(group, version, plural string) *resource {
	for _, r := range allResources {
		if r.group == group && r.version == version && r.plural == plural {
			return r
		}
	}
	return nil
}

// objectFields is the field set a fieldSelector is matched against.
func objectFields(res *resource, obj runtime.Object) fields.Set {
	m := metaOf(obj)
	set := fields.Set{"metadata.name": m.GetName()}
	if res.namespaced {
		set["metadata.namespace"] = m.GetNamespace()
	}
	if res.fields != nil {
		for k, v := range res.fields(obj) {
			set[k] = v
		}
	}
	return set
}

func ptr[T any](v T) *T { return &v }

// encodeObj renders an object as the API server does (apiVersion and kind
// set).
func encodeObj(res *resource, obj runtime.Object) []byte {
	obj.GetObjectKind().SetGroupVersionKind(res.gvk())
	b, err := json.Marshal(obj)
	if err != nil {
		panic(err)
	}
	return b
}

func decodeObj(res *resource, data []byte) (runtime.Object, error) {
	obj := res.newObj()
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(obj); err != nil {
		return nil, err
	}
	obj.GetObjectKind().SetGroupVersionKind(res.gvk())
	return obj, nil
}

func sameObject(a, b runtime.Object) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// ---- defaults (the subset of pkg/apis/*/v1/defaults.go a reader sees) ----

func defaultPodSpec(s *corev1.PodSpec) {
	if s.RestartPolicy == "" {
		s.RestartPolicy = corev1.RestartPolicyAlways
	}
	if s.DNSPolicy == "" {
		s.DNSPolicy = corev1.DNSClusterFirst
	}
	if s.SchedulerName == "" {
		s.SchedulerName = corev1.DefaultSchedulerName
	}
	if s.TerminationGracePeriodSeconds == nil {
		s.TerminationGracePeriodSeconds = ptr(int64(30))
	}
	if s.SecurityContext == nil {
		s.SecurityContext = &corev1.PodSecurityContext{}
	}
	for _, list := range [][]corev1.Container{s.InitContainers, s.Containers} {
		for i := range list {
			defaultContainer(&list[i])
		}
	}
}

func defaultContainer(c *corev1.Container) {
	if c.TerminationMessagePath == "" {
		c.TerminationMessagePath = corev1.TerminationMessagePathDefault
	}
	if c.TerminationMessagePolicy == "" {
		c.TerminationMessagePolicy = corev1.TerminationMessageReadFile
	}
	if c.ImagePullPolicy == "" {
		_, tag := splitImage(c.Image)
		if tag == "latest" || tag == "" {
			c.ImagePullPolicy = corev1.PullAlways
		} else {
			c.ImagePullPolicy = corev1.PullIfNotPresent
		}
	}
	for i := range c.Ports {
		if c.Ports[i].Protocol == "" {
			c.Ports[i].Protocol = corev1.ProtocolTCP
		}
	}
	for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe, c.StartupProbe} {
		if p == nil {
			continue
		}
		if p.TimeoutSeconds == 0 {
			p.TimeoutSeconds = 1
		}
		if p.PeriodSeconds == 0 {
			p.PeriodSeconds = 10
		}
		if p.SuccessThreshold == 0 {
			p.SuccessThreshold = 1
		}
		if p.FailureThreshold == 0 {
			p.FailureThreshold = 3
		}
		if p.HTTPGet != nil {
			if p.HTTPGet.Scheme == "" {
				p.HTTPGet.Scheme = corev1.URISchemeHTTP
			}
			if p.HTTPGet.Path == "" {
				p.HTTPGet.Path = "/"
			}
		}
	}
}

// splitImage returns the repository and tag of an image reference.
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

func defaultDeployment(d *appsv1.Deployment) {
	if d.Spec.Replicas == nil {
		d.Spec.Replicas = ptr(int32(1))
	}
	if d.Spec.Strategy.Type == "" {
		d.Spec.Strategy.Type = appsv1.RollingUpdateDeploymentStrategyType
	}
	if d.Spec.Strategy.Type == appsv1.RollingUpdateDeploymentStrategyType {
		if d.Spec.Strategy.RollingUpdate == nil {
			d.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{}
		}
		if d.Spec.Strategy.RollingUpdate.MaxUnavailable == nil {
			d.Spec.Strategy.RollingUpdate.MaxUnavailable = ptr(intstr.FromString("25%"))
		}
		if d.Spec.Strategy.RollingUpdate.MaxSurge == nil {
			d.Spec.Strategy.RollingUpdate.MaxSurge = ptr(intstr.FromString("25%"))
		}
	}
	if d.Spec.RevisionHistoryLimit == nil {
		d.Spec.RevisionHistoryLimit = ptr(int32(10))
	}
	if d.Spec.ProgressDeadlineSeconds == nil {
		d.Spec.ProgressDeadlineSeconds = ptr(int32(600))
	}
	defaultPodSpec(&d.Spec.Template.Spec)
}

func defaultService(s *corev1.Service) {
	if s.Spec.Type == "" {
		s.Spec.Type = corev1.ServiceTypeClusterIP
	}
	if s.Spec.SessionAffinity == "" {
		s.Spec.SessionAffinity = corev1.ServiceAffinityNone
	}
	for i := range s.Spec.Ports {
		p := &s.Spec.Ports[i]
		if p.Protocol == "" {
			p.Protocol = corev1.ProtocolTCP
		}
		if p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal == 0 && p.TargetPort.StrVal == "" {
			p.TargetPort = intstr.FromInt32(p.Port)
		}
	}
	if s.Spec.Type != corev1.ServiceTypeExternalName {
		if len(s.Spec.IPFamilies) == 0 {
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
		}
		if s.Spec.IPFamilyPolicy == nil {
			s.Spec.IPFamilyPolicy = ptr(corev1.IPFamilyPolicySingleStack)
		}
		if s.Spec.InternalTrafficPolicy == nil {
			s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyCluster)
		}
	}
}

// ---- validation (enough to give the 422 shapes real clients see) ----

func validateName(res *resource, name string) field.ErrorList {
	p := field.NewPath("metadata", "name")
	if name == "" {
		return field.ErrorList{field.Required(p, "name or generateName is required")}
	}
	var msgs []string
	if res == resNamespaces || res == resServices {
		msgs = validation.IsDNS1123Label(name)
	} else if res.group == rbacGroup {
		msgs = path.IsValidPathSegmentName(name) // ValidateRBACName: "system:discovery" is a name
	} else {
		msgs = validation.IsDNS1123Subdomain(name)
	}
	var errs field.ErrorList
	for _, m := range msgs {
		errs = append(errs, field.Invalid(p, name, m))
	}
	return errs
}

func validateLabels(m metav1.Object) field.ErrorList {
	var errs field.ErrorList
	p := field.NewPath("metadata", "labels")
	for k, v := range m.GetLabels() {
		for _, msg := range validation.IsQualifiedName(k) {
			errs = append(errs, field.Invalid(p, k, msg))
		}
		for _, msg := range validation.IsValidLabelValue(v) {
			errs = append(errs, field.Invalid(p.Key(k), v, msg))
		}
	}
	return errs
}

func validatePodSpec(s *corev1.PodSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(s.Containers) == 0 {
		errs = append(errs, field.Required(p.Child("containers"), ""))
	}
	seen := map[string]bool{}
	for i, c := range s.Containers {
		cp := p.Child("containers").Index(i)
		if c.Name == "" {
			errs = append(errs, field.Required(cp.Child("name"), ""))
		} else if seen[c.Name] {
			errs = append(errs, field.Duplicate(cp.Child("name"), c.Name))
		}
		seen[c.Name] = true
		if c.Image == "" {
			errs = append(errs, field.Required(cp.Child("image"), ""))
		}
		for j, port := range c.Ports {
			if port.ContainerPort < 1 || port.ContainerPort > 65535 {
				errs = append(errs, field.Invalid(cp.Child("ports").Index(j).Child("containerPort"), port.ContainerPort,
					"must be between 1 and 65535, inclusive"))
			}
		}
	}
	return errs
}

func validateSelector(sel *metav1.LabelSelector, tmplLabels map[string]string, spec *corev1.PodSpec) field.ErrorList {
	var errs field.ErrorList
	p := field.NewPath("spec")
	if sel == nil {
		errs = append(errs, field.Required(p.Child("selector"), ""))
	} else {
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			errs = append(errs, field.Invalid(p.Child("selector"), sel, err.Error()))
		} else if s.Empty() {
			errs = append(errs, field.Invalid(p.Child("selector"), sel, "empty selector is invalid for deployment"))
		} else if !s.Matches(labelsSet(tmplLabels)) {
			errs = append(errs, field.Invalid(p.Child("template", "metadata", "labels"), tmplLabels,
				"`selector` does not match template `labels`"))
		}
	}
	errs = append(errs, validatePodSpec(spec, p.Child("template", "spec"))...)
	return errs
}

func validateDeployment(d *appsv1.Deployment) field.ErrorList {
	errs := validateSelector(d.Spec.Selector, d.Spec.Template.Labels, &d.Spec.Template.Spec)
	if d.Spec.Replicas != nil && *d.Spec.Replicas < 0 {
		errs = append(errs, field.Invalid(field.NewPath("spec", "replicas"), *d.Spec.Replicas,
			"must be greater than or equal to 0"))
	}
	if d.Spec.Strategy.Type == appsv1.RollingUpdateDeploymentStrategyType && d.Spec.Strategy.RollingUpdate != nil {
		ru := d.Spec.Strategy.RollingUpdate
		surge, unavail, err := resolveFenceposts(ru.MaxSurge, ru.MaxUnavailable, 100)
		if err != nil {
			errs = append(errs, field.Invalid(field.NewPath("spec", "strategy", "rollingUpdate"), "", err.Error()))
		} else if surge == 0 && unavail == 0 && isZero(ru.MaxSurge) && isZero(ru.MaxUnavailable) {
			errs = append(errs, field.Invalid(field.NewPath("spec", "strategy", "rollingUpdate", "maxUnavailable"),
				ru.MaxUnavailable.String(), "may not be 0 when `maxSurge` is 0"))
		}
	} else if d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType && d.Spec.Strategy.RollingUpdate != nil {
		errs = append(errs, field.Forbidden(field.NewPath("spec", "strategy", "rollingUpdate"),
			"may not be specified when strategy `type` is 'Recreate'"))
	}
	if d.Spec.ProgressDeadlineSeconds != nil && *d.Spec.ProgressDeadlineSeconds <= d.Spec.MinReadySeconds {
		errs = append(errs, field.Invalid(field.NewPath("spec", "progressDeadlineSeconds"), *d.Spec.ProgressDeadlineSeconds,
			"must be greater than minReadySeconds"))
	}
	return errs
}

func isZero(v *intstr.IntOrString) bool {
	if v == nil {
		return true
	}
	if v.Type == intstr.Int {
		return v.IntVal == 0
	}
	return strings.TrimSuffix(v.StrVal, "%") == "0"
}

func validateService(s *corev1.Service) field.ErrorList {
	var errs field.ErrorList
	p := field.NewPath("spec")
	if s.Spec.Type != corev1.ServiceTypeExternalName && len(s.Spec.Ports) == 0 && s.Spec.ClusterIP != corev1.ClusterIPNone {
		errs = append(errs, field.Required(p.Child("ports"), ""))
	}
	names := map[string]bool{}
	for i, port := range s.Spec.Ports {
		pp := p.Child("ports").Index(i)
		if port.Port < 1 || port.Port > 65535 {
			errs = append(errs, field.Invalid(pp.Child("port"), port.Port, "must be between 1 and 65535, inclusive"))
		}
		if len(s.Spec.Ports) > 1 && port.Name == "" {
			errs = append(errs, field.Required(pp.Child("name"), ""))
		}
		if names[port.Name] {
			errs = append(errs, field.Duplicate(pp.Child("name"), port.Name))
		}
		names[port.Name] = true
	}
	if ip := s.Spec.ClusterIP; ip != "" && ip != corev1.ClusterIPNone && !strings.HasPrefix(ip, "127.20.") {
		errs = append(errs, field.Invalid(p.Child("clusterIPs").Index(0), ip,
			fmt.Sprintf("failed to allocate IP %s: the provided IP (%s) is not in the valid range. The range of valid IPs is 127.20.0.0/16", ip, ip)))
	}
	return errs
}
