package cluster

// networking.k8s.io/v1 Ingresses: stored as kube-apiserver stores them
// (pathType required on every path), so manifests that carry an Ingress
// can be applied. No ingress controller runs: status stays empty.

import (
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

var resIngresses = &resource{group: "networking.k8s.io", version: "v1", kind: "Ingress", plural: "ingresses",
	singular: "ingress", namespaced: true, shortNames: []string{"ing"}, hasStatus: true, specGeneration: true,
	newObj: func() runtime.Object { return &networkingv1.Ingress{} },
	validate: func(o runtime.Object) field.ErrorList {
		var errs field.ErrorList
		for i, r := range o.(*networkingv1.Ingress).Spec.Rules {
			if r.HTTP == nil {
				continue
			}
			for j, p := range r.HTTP.Paths {
				if p.PathType == nil {
					errs = append(errs, field.Required(field.NewPath("spec", "rules").Index(i).Child("http", "paths").Index(j).Child("pathType"),
						"pathType must be specified"))
				}
			}
		}
		return errs
	}}

func init() { allResources = append(allResources, resIngresses) }
