package cluster

// batch/v1 Jobs and CronJobs: stored with the API server's defaults and
// validated as kube-apiserver does (a Job's pods restart OnFailure or
// Never; a CronJob's schedule is a standard cron line, parsed by the same
// robfig/cron the CronJob controller uses), so `kubectl apply
// --dry-run=server` of a manifest gives the answers a real cluster gives.
// No Job controller runs them: the sandbox's kubelet runs only the demo
// app's image.

import (
	"time"

	"github.com/robfig/cron/v3"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

var (
	resJobs = &resource{group: "batch", version: "v1", kind: "Job", plural: "jobs", singular: "job", namespaced: true,
		categories: []string{"all"}, hasStatus: true,
		newObj: func() runtime.Object { return &batchv1.Job{} },
		defaults: func(o runtime.Object) {
			j := o.(*batchv1.Job)
			defaultJobSpec(&j.Spec)
			if j.Name != "" {
				if j.Spec.Template.Labels == nil {
					j.Spec.Template.Labels = map[string]string{}
				}
				j.Spec.Template.Labels["batch.kubernetes.io/job-name"] = j.Name
				j.Spec.Template.Labels["job-name"] = j.Name
			}
		},
		validate: func(o runtime.Object) field.ErrorList {
			return validateJobSpec(&o.(*batchv1.Job).Spec, field.NewPath("spec"))
		}}
	resCronJobs = &resource{group: "batch", version: "v1", kind: "CronJob", plural: "cronjobs", singular: "cronjob",
		namespaced: true, shortNames: []string{"cj"}, categories: []string{"all"}, hasStatus: true,
		newObj: func() runtime.Object { return &batchv1.CronJob{} },
		defaults: func(o runtime.Object) {
			cj := o.(*batchv1.CronJob)
			if cj.Spec.ConcurrencyPolicy == "" {
				cj.Spec.ConcurrencyPolicy = batchv1.AllowConcurrent
			}
			if cj.Spec.Suspend == nil {
				cj.Spec.Suspend = ptr(false)
			}
			if cj.Spec.SuccessfulJobsHistoryLimit == nil {
				cj.Spec.SuccessfulJobsHistoryLimit = ptr(int32(3))
			}
			if cj.Spec.FailedJobsHistoryLimit == nil {
				cj.Spec.FailedJobsHistoryLimit = ptr(int32(1))
			}
			defaultJobSpec(&cj.Spec.JobTemplate.Spec)
		},
		validate: func(o runtime.Object) field.ErrorList {
			cj := o.(*batchv1.CronJob)
			p := field.NewPath("spec")
			var errs field.ErrorList
			if cj.Spec.Schedule == "" {
				errs = append(errs, field.Required(p.Child("schedule"), ""))
			} else if _, err := cron.ParseStandard(cj.Spec.Schedule); err != nil {
				errs = append(errs, field.Invalid(p.Child("schedule"), cj.Spec.Schedule, err.Error()))
			}
			if tz := cj.Spec.TimeZone; tz != nil {
				if _, err := time.LoadLocation(*tz); err != nil || *tz == "" || *tz == "Local" {
					errs = append(errs, field.Invalid(p.Child("timeZone"), *tz, "unknown time zone "+*tz))
				}
			}
			switch cj.Spec.ConcurrencyPolicy {
			case batchv1.AllowConcurrent, batchv1.ForbidConcurrent, batchv1.ReplaceConcurrent:
			default:
				errs = append(errs, field.NotSupported(p.Child("concurrencyPolicy"), cj.Spec.ConcurrencyPolicy,
					[]string{string(batchv1.AllowConcurrent), string(batchv1.ForbidConcurrent), string(batchv1.ReplaceConcurrent)}))
			}
			return append(errs, validateJobSpec(&cj.Spec.JobTemplate.Spec, p.Child("jobTemplate", "spec"))...)
		}}
)

func init() { allResources = append(allResources, resJobs, resCronJobs) }

// defaultJobSpec is SetDefaults_Job's subset: one completion at a time,
// six retries, the pod template defaulted as a Pod's.
func defaultJobSpec(s *batchv1.JobSpec) {
	if s.Completions == nil && s.Parallelism == nil {
		s.Completions, s.Parallelism = ptr(int32(1)), ptr(int32(1))
	}
	if s.Parallelism == nil {
		s.Parallelism = ptr(int32(1))
	}
	if s.BackoffLimit == nil {
		s.BackoffLimit = ptr(int32(6))
	}
	if s.CompletionMode == nil {
		s.CompletionMode = ptr(batchv1.NonIndexedCompletion)
	}
	if s.Suspend == nil {
		s.Suspend = ptr(false)
	}
	defaultPodSpec(&s.Template.Spec)
}

func validateJobSpec(s *batchv1.JobSpec, p *field.Path) field.ErrorList {
	errs := validatePodSpec(&s.Template.Spec, p.Child("template", "spec"))
	if rp := s.Template.Spec.RestartPolicy; rp != corev1.RestartPolicyOnFailure && rp != corev1.RestartPolicyNever {
		errs = append(errs, field.NotSupported(p.Child("template", "spec", "restartPolicy"), rp,
			[]string{string(corev1.RestartPolicyOnFailure), string(corev1.RestartPolicyNever)}))
	}
	if s.BackoffLimit != nil && *s.BackoffLimit < 0 {
		errs = append(errs, field.Invalid(p.Child("backoffLimit"), *s.BackoffLimit, "must be greater than or equal to 0"))
	}
	if s.ActiveDeadlineSeconds != nil && *s.ActiveDeadlineSeconds <= 0 {
		errs = append(errs, field.Invalid(p.Child("activeDeadlineSeconds"), *s.ActiveDeadlineSeconds, "must be greater than 0"))
	}
	return errs
}
