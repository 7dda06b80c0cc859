#!/bin/bash
# The sandbox cluster driven by the real kubectl (1.32): discovery, CRUD,
# the three patch types, scale, set image, rollout status (success and
# ProgressDeadlineExceeded), logs, errors, watches, client certificates,
# injected faults, pod restarts and a blue/green selector flip under load;
# plus the cluster package's Go unit tests.
#
# Uses the sandbox named by KUBECONFIG + SANDBOX_ADMIN_URL when both are
# set; otherwise starts one (`sandbox up` in a temporary directory).
set -u

here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
passed=0
failed=0
started=""  # sandbox dir we brought up
devpid=""   # devserver pid

ok() { echo "ok - $1"; passed=$((passed + 1)); }
notok() {
	echo "not ok - $1"
	[ $# -ge 2 ] && printf '%s\n' "$2" | tail -n 15 | sed 's/^/#   /'
	failed=$((failed + 1))
}
# check NAME COMMAND...: the command's exit status decides.
check() {
	local name=$1 out
	shift
	if out=$("$@" 2>&1); then ok "$name"; else notok "$name" "$out"; fi
}
finish() {
	[ -n "$devpid" ] && kill "$devpid" 2>/dev/null && wait "$devpid" 2>/dev/null
	[ -n "$started" ] && "$here/sandbox" down "$started" >/dev/null 2>&1
	if [ -n "${NS:-}" ] && [ -z "$started" ] && [ -z "$devpid" ]; then
		kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1
	fi
	rm -rf "$work"
	echo "sandbox-kubectl: $passed passed, $failed failed"
	[ "$failed" -eq 0 ]
}
trap 'finish; exit $?' EXIT
trap 'exit 130' INT TERM

# ---- a sandbox to talk to ----------------------------------------------

if [ -n "${KUBECONFIG:-}" ] && [ -n "${SANDBOX_ADMIN_URL:-}" ]; then
	ok "using the running sandbox ($SANDBOX_ADMIN_URL)"
else
	if ! out=$("$here/build.sh" 2>&1); then
		notok "build.sh builds the sandbox" "$out"
		exit 1
	fi
	if ! out=$("$here/sandbox" up "$work/sb" 2>&1); then
		notok "sandbox up" "$out"
		exit 1
	fi
	started=$work/sb
	eval "$(printf '%s\n' "$out" | grep '^export ')"
	ok "sandbox up"
fi
check "go test ./cluster/ (the front proxy's faults and identities, the kubelet's log server)" \
	sh -c "cd '$here' && go test -count=1 ./cluster/"
export KUBECACHEDIR=$work/kubecache
NS=kt-$$-$RANDOM
K() { kubectl -n "$NS" "$@"; }

# Misbehaving app versions for this run, merged into the sandbox's
# behaviours file (the demo app reads it when a pod starts).
if [ -n "${SANDBOX_BEHAVIORS:-}" ]; then
	python3 - "$SANDBOX_BEHAVIORS" <<'EOF'
import json, sys
path = sys.argv[1]
try:
    data = json.load(open(path))
except Exception:
    data = {}
data["crashy"] = {"crash_after_s": 0.3, "exit_code": 3}
data["slowready"] = {"ready_after_s": 1.5}
json.dump(data, open(path, "w"))
EOF
fi

# wait_until SECONDS COMMAND...: poll until the command succeeds.
wait_until() {
	local deadline=$(($(date +%s) + $1))
	shift
	until "$@" >/dev/null 2>&1; do
		[ "$(date +%s)" -ge "$deadline" ] && return 1
		sleep 0.2
	done
}

# deployment NAME COLOUR TAG [REPLICAS] [EXTRA SPEC YAML]: a demo-app
# Deployment manifest.
deployment() {
	cat <<EOF
apiVersion: apps/v1
kind: Deployment
metadata:
  name: $1
  labels: {app: $1}
spec:
  replicas: ${4:-2}
${5:-}
  selector:
    matchLabels: {app: ${1%%-*}, version: $2}
  template:
    metadata:
      labels: {app: ${1%%-*}, version: $2}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: api
        image: registry.local/physioflow-api:$3
        ports: [{containerPort: 8080, name: http}]
        env:
        - {name: POD_NAME_FROM_FIELD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        readinessProbe:
          httpGet: {path: /ready, port: http}
          periodSeconds: 2
EOF
}
service() { # service NAME APP COLOUR
	cat <<EOF
apiVersion: v1
kind: Service
metadata:
  name: $1
  labels: {app: $2}
spec:
  selector: {app: $2, version: $3}
  ports: [{name: http, port: 80, targetPort: http}]
EOF
}

# ---- discovery, namespaces, auth ----------------------------------------

check "kubectl version: the client is 1.32, the server kube-apiserver v1.37.2" sh -c '
	v=$(kubectl version -o json 2>/dev/null) &&
	[ "$(echo "$v" | jq -r .clientVersion.gitVersion | cut -c1-5)" = v1.32 ] &&
	[ "$(echo "$v" | jq -r .serverVersion.gitVersion)" = v1.37.2 ] &&
	[ "$(echo "$v" | jq -r .serverVersion.minor)" = 37 ]'
check "/livez?verbose lists etcd, and passes" sh -c '
	out=$(kubectl get --raw "/livez?verbose") && echo "$out" | grep -q "^\[+\]etcd ok" && echo "$out" | grep -q "^livez check passed"'
check "/openapi/v2 and /openapi/v3 are served" sh -c '
	kubectl get --raw /openapi/v3 | jq -e ".paths | has(\"apis/apps/v1\")" >/dev/null &&
	kubectl get --raw /openapi/v2 | jq -e ".definitions | has(\"io.k8s.api.apps.v1.Deployment\")" >/dev/null'
check "RBAC denies the no-permission ServiceAccount (kubeconfig-noperm)" sh -c '
	out=$(kubectl --kubeconfig "$SANDBOX_KUBECONFIG_NOPERM" -n physioflow get pods 2>&1); rc=$?
	[ $rc -eq 1 ] && echo "$out" | grep -q "pods is forbidden: User \"system:serviceaccount:physioflow:bgrun-noperm\" cannot list resource \"pods\" in API group \"\" in the namespace \"physioflow\"" &&
	[ "$(kubectl --kubeconfig "$SANDBOX_KUBECONFIG_NOPERM" auth can-i get pods -n physioflow 2>/dev/null)" = no ]'
check "kubectl api-resources lists deployments, leases, endpointslices" sh -c '
	out=$(kubectl api-resources) &&
	echo "$out" | grep -q "^deployments .*apps/v1 .*true .*Deployment" &&
	echo "$out" | grep -q "^leases .*coordination.k8s.io/v1" &&
	echo "$out" | grep -q "^endpointslices .*discovery.k8s.io/v1"'
check "namespaces physioflow and default exist" sh -c 'kubectl get ns physioflow default -o name | grep -c namespace/ | grep -qx 2'
check "create namespace" kubectl create namespace "$NS"

check "a new namespace gets a default ServiceAccount" sh -c "
	for i in \$(seq 25); do kubectl -n $NS get serviceaccount default -o name 2>/dev/null | grep -qx serviceaccount/default && exit 0; sleep 0.2; done; exit 1"
tok=$(kubectl config view --raw -o jsonpath='{.users[0].user.token}')
kubectl config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d >"$work/ca.crt"
server=$(kubectl config view --raw -o jsonpath='{.clusters[0].cluster.server}')
kdir=$(dirname "$KUBECONFIG")
check "client certificate signed by the sandbox CA is accepted" sh -c "
	kubectl config --kubeconfig='$work/cert.kubeconfig' set-cluster sb --server='$server' --certificate-authority='$work/ca.crt' --embed-certs >/dev/null &&
	kubectl config --kubeconfig='$work/cert.kubeconfig' set-credentials me --client-certificate='$kdir/client.crt' --client-key='$kdir/client.key' --embed-certs >/dev/null &&
	kubectl config --kubeconfig='$work/cert.kubeconfig' set-context sb --cluster=sb --user=me >/dev/null &&
	kubectl config --kubeconfig='$work/cert.kubeconfig' use-context sb >/dev/null &&
	kubectl --kubeconfig='$work/cert.kubeconfig' get ns '$NS' -o name | grep -qx 'namespace/$NS'"
check "a wrong token gets 401 Unauthorized" sh -c "
	out=\$(kubectl --token=wrong get ns 2>&1); rc=\$?
	[ \$rc -eq 1 ] && echo \"\$out\" | grep -q 'Unauthorized'"
check "no credentials: system:anonymous is forbidden (403 Status body)" sh -c "
	curl -sS --cacert '$work/ca.crt' '$server/api/v1/namespaces' -o '$work/anon.json' -w '%{http_code}' | grep -qx 403 &&
	jq -e '.reason == \"Forbidden\" and (.message | contains(\"User \\\"system:anonymous\\\" cannot list resource \\\"namespaces\\\"\"))' '$work/anon.json' >/dev/null"

# ---- create, get, list ------------------------------------------------------

{ deployment web-blue blue v1; echo ---; service web web blue; } >"$work/web.yaml"
check "apply (validated against the OpenAPI schema) creates a Deployment and a Service" sh -c "
	kubectl -n $NS apply -f '$work/web.yaml' | tr '\n' ' ' |
	grep -q 'deployment.apps/web-blue created service/web created'"
check "field validation: an unknown field is refused (strict)" sh -c "
	out=\$(printf 'apiVersion: v1\\nkind: ConfigMap\\nmetadata: {name: strict}\\ndata: {a: b}\\nbogus: 1\\n' | kubectl -n $NS apply -f - 2>&1); rc=\$?
	[ \$rc -eq 1 ] && echo \"\$out\" | grep -q 'unknown field \"bogus\"'"
check "server-side apply: created, owned by its field manager, a second manager conflicts" sh -c "
	printf 'apiVersion: v1\\nkind: ConfigMap\\nmetadata: {name: ssa}\\ndata: {k: one}\\n' >'$work/ssa1.yaml' &&
	printf 'apiVersion: v1\\nkind: ConfigMap\\nmetadata: {name: ssa}\\ndata: {k: two}\\n' >'$work/ssa2.yaml' &&
	kubectl -n $NS apply --server-side --field-manager=first -f '$work/ssa1.yaml' | grep -q 'configmap/ssa serverside-applied' &&
	kubectl -n $NS get cm ssa -o jsonpath='{.metadata.managedFields[*].manager}' | grep -qw first &&
	out=\$(kubectl -n $NS apply --server-side --field-manager=second -f '$work/ssa2.yaml' 2>&1); rc=\$?
	[ \$rc -eq 1 ] && echo \"\$out\" | grep -q 'conflict with \"first\"' &&
	kubectl -n $NS apply --server-side --field-manager=second --force-conflicts -f '$work/ssa2.yaml' >/dev/null &&
	[ \"\$(kubectl -n $NS get cm ssa -o jsonpath='{.data.k}')\" = two ]"
check "Deployment defaults are set" sh -c "
	[ \"\$(kubectl -n $NS get deploy web-blue -o jsonpath='{.spec.strategy.rollingUpdate.maxSurge} {.spec.strategy.rollingUpdate.maxUnavailable} {.spec.progressDeadlineSeconds} {.spec.revisionHistoryLimit} {.metadata.generation}')\" = '25% 25% 600 10 1' ]"
check "rollout status succeeds" K rollout status deploy/web-blue --timeout=60s
check "Deployment status and conditions" sh -c "
	[ \"\$(kubectl -n $NS get deploy web-blue -o jsonpath='{.status.readyReplicas}/{.status.availableReplicas}/{.status.updatedReplicas} {.status.conditions[?(@.type==\"Available\")].status} {.status.conditions[?(@.type==\"Progressing\")].reason}')\" = '2/2/2 True NewReplicaSetAvailable' ]"
check "ReplicaSet has pod-template-hash and revision 1" sh -c "
	kubectl -n $NS get rs -l app=web,version=blue -o jsonpath='{.items[0].metadata.labels.pod-template-hash} {.items[0].metadata.annotations.deployment\.kubernetes\.io/revision}' |
	grep -Eq '^[a-z0-9]+ 1\$'"
check "list pods by label selector" sh -c "[ \"\$(kubectl -n $NS get pods -l 'app=web,version in (blue)' -o name | wc -l)\" -eq 2 ]"
check "list pods by field selector status.phase" sh -c "[ \"\$(kubectl -n $NS get pods --field-selector status.phase=Running -o name | wc -l)\" -eq 2 ]"
check "pods are Ready with their own address in the pod range (198.18/16)" sh -c "
	kubectl -n $NS get pods -l app=web -o jsonpath='{range .items[*]}{.status.podIP} {.status.conditions[?(@.type==\"Ready\")].status}{\"\n\"}{end}' |
	awk '\$1 ~ /^198\.18\./ && \$2 == \"True\" {n++} END {exit n != 2}'"
check "Service got a cluster IP in 198.19/16 (--service-cluster-ip-range)" sh -c "K() { kubectl -n $NS \"\$@\"; }; K get svc web -o jsonpath='{.spec.clusterIP}' | grep -Eq '^198\.19\.'"
svcip=$(K get svc web -o jsonpath='{.spec.clusterIP}')
check "requests through the Service reach the pods" sh -c "curl -sf --max-time 5 http://$svcip/health | grep -q '\"version\":\"v1\"'"
check "Endpoints list the ready pods" sh -c "[ \"\$(kubectl -n $NS get endpoints web -o jsonpath='{.subsets[0].addresses[*].ip}' | wc -w)\" -eq 2 ]"
check "EndpointSlice labelled with the service name" sh -c "
	[ \"\$(kubectl -n $NS get endpointslices -l kubernetes.io/service-name=web -o jsonpath='{.items[0].endpoints[*].conditions.ready}')\" = 'true true' ]"
check "kubectl get prints server-side table columns" sh -c "
	kubectl -n $NS get pods -l app=web | head -1 | grep -Eq '^NAME +READY +STATUS +RESTARTS +AGE\$' &&
	kubectl -n $NS get deploy web-blue | tail -1 | grep -Eq '^web-blue +2/2 +2 +2 +'"
check "the pods run on the sandbox node" sh -c "
	kubectl get nodes -o name | grep -qx node/sandbox &&
	[ \"\$(kubectl -n $NS get pods -l app=web -o jsonpath='{.items[*].spec.nodeName}')\" = 'sandbox sandbox' ]"
check "list with limit pages with continue" sh -c "
	for i in 1 2 3; do kubectl -n $NS create configmap page-\$i --from-literal=i=\$i >/dev/null || exit 1; done
	[ \"\$(kubectl -n $NS get configmaps --chunk-size=1 -o name | grep -c configmap/page-)\" -eq 3 ]"

# ---- errors -------------------------------------------------------------

check "get of a missing object: exit 1 and the NotFound message" sh -c "
	out=\$(kubectl -n $NS get deploy nope 2>&1); rc=\$?
	[ \$rc -eq 1 ] && [ \"\$out\" = 'Error from server (NotFound): deployments.apps \"nope\" not found' ]"
check "create of an existing object: AlreadyExists" sh -c "
	out=\$(kubectl -n $NS create configmap page-1 2>&1); rc=\$?
	[ \$rc -eq 1 ] && echo \"\$out\" | grep -q 'configmaps \"page-1\" already exists' &&
	curl -s --cacert '$work/ca.crt' -H 'Authorization: Bearer $tok' -H 'Content-Type: application/json' \
		-d '{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"page-1\"}}' '$server/api/v1/namespaces/$NS/configmaps' -w ' %{http_code}' |
	tr -d '\n ' | sed 's/}\([0-9]*\)\$/} \1/' | grep -q '\"reason\":\"AlreadyExists\".* 409\$'"
check "replace with a stale resourceVersion: 409 Conflict" sh -c "
	kubectl -n $NS create configmap cas --from-literal=k=v1 >/dev/null &&
	kubectl -n $NS get configmap cas -o json >'$work/cas.json' &&
	kubectl -n $NS patch configmap cas --type=merge -p '{\"data\":{\"k\":\"v2\"}}' >/dev/null &&
	out=\$(kubectl -n $NS replace --validate=false -f '$work/cas.json' 2>&1); rc=\$?
	[ \$rc -eq 1 ] && echo \"\$out\" | grep -q 'Operation cannot be fulfilled on configmaps \"cas\": the object has been modified; please apply your changes to the latest version and try again'"
check "invalid Deployment: 422 Invalid" sh -c "
	out=\$(kubectl -n $NS create deployment bad --image=registry.local/physioflow-api:v1 --replicas=-1 2>&1); rc=\$?
	[ \$rc -eq 1 ] && echo \"\$out\" | grep -q 'is invalid'"
check "server-side dry run stores nothing" sh -c "
	kubectl -n $NS create configmap dry --from-literal=a=b --dry-run=server -o name | grep -qx configmap/dry &&
	! kubectl -n $NS get configmap dry >/dev/null 2>&1"

# ---- patch, scale, set image ----------------------------------------------

check "merge patch of the Service selector" sh -c "
	kubectl -n $NS patch svc web --type=merge -p '{\"spec\":{\"selector\":{\"version\":\"green\"}}}' >/dev/null &&
	[ \"\$(kubectl -n $NS get svc web -o jsonpath='{.spec.selector.app}/{.spec.selector.version}')\" = web/green ]"
check "strategic merge patch of the Service selector" sh -c "
	kubectl -n $NS patch svc web -p '{\"spec\":{\"selector\":{\"version\":\"blue\"}}}' >/dev/null &&
	[ \"\$(kubectl -n $NS get svc web -o jsonpath='{.spec.selector.app}/{.spec.selector.version}')\" = web/blue ]"
check "JSON patch replaces the selector map" sh -c "
	kubectl -n $NS patch svc web --type=json -p '[{\"op\":\"replace\",\"path\":\"/spec/selector\",\"value\":{\"app\":\"web\",\"version\":\"blue\"}}]' >/dev/null &&
	[ \"\$(kubectl -n $NS get svc web -o jsonpath='{.spec.selector}')\" = '{\"app\":\"web\",\"version\":\"blue\"}' ]"
check "an unknown patch type: 415 UnsupportedMediaType" sh -c "
	curl -s --cacert '$work/ca.crt' -H 'Authorization: Bearer $tok' -X PATCH -H 'Content-Type: application/xml' -d '<x/>' \
		'$server/api/v1/namespaces/$NS/services/web' -w ' %{http_code}' |
	tr -d '\n ' | sed 's/}\([0-9]*\)\$/} \1/' | grep -q '\"reason\":\"UnsupportedMediaType\".* 415\$'"
check "a no-op patch reports (no change)" sh -c "
	kubectl -n $NS patch svc web -p '{\"spec\":{\"selector\":{\"version\":\"blue\"}}}' | grep -q 'patched (no change)'"
check "scale to 3 and roll out" sh -c "
	kubectl -n $NS scale deploy web-blue --replicas=3 >/dev/null &&
	kubectl -n $NS rollout status deploy/web-blue --timeout=60s >/dev/null &&
	[ \"\$(kubectl -n $NS get deploy web-blue -o jsonpath='{.status.readyReplicas} {.metadata.generation} {.status.observedGeneration}')\" = '3 2 2' ]"
check "PUT /scale with a stale resourceVersion: 409 Conflict" sh -c "
	curl -s --cacert '$work/ca.crt' -H 'Authorization: Bearer $tok' -H 'Content-Type: application/json' -X PUT \
		-d '{\"apiVersion\":\"autoscaling/v1\",\"kind\":\"Scale\",\"metadata\":{\"name\":\"web-blue\",\"resourceVersion\":\"1\"},\"spec\":{\"replicas\":2}}' \
		'$server/apis/apps/v1/namespaces/$NS/deployments/web-blue/scale' -w ' %{http_code}' |
	tr -d '\n' | sed 's/} *\([0-9]*\)\$/} \1/' | grep -q 'Operation cannot be fulfilled on deployments.apps \\\\\"web-blue\\\\\": the object has been modified.* 409\$'"
check "scale with --current-replicas (PUT /scale)" sh -c "
	kubectl -n $NS scale deploy web-blue --current-replicas=3 --replicas=2 >/dev/null &&
	[ \"\$(kubectl -n $NS get deploy web-blue -o jsonpath='{.spec.replicas}')\" = 2 ]"
check "set image rolls out revision 2" sh -c "
	kubectl -n $NS set image deploy/web-blue api=registry.local/physioflow-api:v2 >/dev/null &&
	kubectl -n $NS rollout status deploy/web-blue --timeout=60s >/dev/null &&
	[ \"\$(kubectl -n $NS get deploy web-blue -o jsonpath='{.metadata.annotations.deployment\.kubernetes\.io/revision} {.status.updatedReplicas} {.status.replicas}')\" = '2 2 2' ] &&
	curl -sf --max-time 5 http://$svcip/health | grep -q '\"version\":\"v2\"'"
check "old ReplicaSet scaled to 0 and kept" sh -c "
	out=\$(kubectl -n $NS get rs -l app=web -o jsonpath='{range .items[*]}{.spec.replicas}{\"\\n\"}{end}' | sort -n | tr '\n' ' ')
	echo \"\$out\"; [ \"\$out\" = '0 2 ' ]"
check "rollout undo goes back to v1 as revision 3" sh -c "
	kubectl -n $NS rollout undo deploy/web-blue >/dev/null &&
	kubectl -n $NS rollout status deploy/web-blue --timeout=60s >/dev/null &&
	[ \"\$(kubectl -n $NS get deploy web-blue -o jsonpath='{.metadata.annotations.deployment\.kubernetes\.io/revision} {.spec.template.spec.containers[0].image}')\" = '3 registry.local/physioflow-api:v1' ]"

check "old ReplicaSets beyond revisionHistoryLimit are pruned" sh -c "
	kubectl -n $NS create deployment hist --image=registry.local/physioflow-api:h1 >/dev/null &&
	kubectl -n $NS patch deploy hist --type=merge -p '{\"spec\":{\"revisionHistoryLimit\":1}}' >/dev/null &&
	for t in h2 h3 h4; do
		kubectl -n $NS set image deploy/hist physioflow-api=registry.local/physioflow-api:\$t >/dev/null &&
		kubectl -n $NS rollout status deploy/hist --timeout=60s >/dev/null || exit 1
	done
	for i in \$(seq 25); do
		[ \"\$(kubectl -n $NS get rs -l app=hist -o name | wc -l)\" -eq 2 ] && exit 0; sleep 0.2
	done; kubectl -n $NS get rs -l app=hist; exit 1"
kubectl -n "$NS" delete deployment hist >/dev/null 2>&1

# ---- rollout failure -------------------------------------------------------

deployment stuck-blue blue v1 1 "  progressDeadlineSeconds: 3" |
	sed 's#registry.local/physioflow-api:v1#registry.local/no-such-image:v1#' >"$work/stuck.yaml"
check "rollout status fails on ProgressDeadlineExceeded" sh -c "
	kubectl -n $NS apply --validate=false -f '$work/stuck.yaml' >/dev/null &&
	out=\$(kubectl -n $NS rollout status deploy/stuck-blue --timeout=60s 2>&1); rc=\$?
	[ \$rc -eq 1 ] && echo \"\$out\" | grep -q 'error: deployment \"stuck-blue\" exceeded its progress deadline'"
check "the stuck pod waits in ErrImagePull/ImagePullBackOff, not ready" sh -c "
	kubectl -n $NS get pods -l app=stuck -o jsonpath='{.items[0].status.containerStatuses[0].state.waiting.reason} {.items[0].status.containerStatuses[0].ready} {.items[0].status.phase}' |
	grep -Eq '^(ErrImagePull|ImagePullBackOff) false Pending\$'"
check "Progressing condition is False/ProgressDeadlineExceeded" sh -c "
	[ \"\$(kubectl -n $NS get deploy stuck-blue -o jsonpath='{.status.conditions[?(@.type==\"Progressing\")].status}/{.status.conditions[?(@.type==\"Progressing\")].reason}')\" = False/ProgressDeadlineExceeded ]"
check "logs of a pod that cannot pull: 400 waiting to start" sh -c "
	p=\$(kubectl -n $NS get pods -l app=stuck -o jsonpath='{.items[0].metadata.name}')
	out=\$(kubectl -n $NS logs \$p 2>&1); rc=\$?
	[ \$rc -eq 1 ] && echo \"\$out\" | grep -q 'is waiting to start'"
check "deleting a Deployment deletes its ReplicaSets and pods" sh -c "
	kubectl -n $NS delete deploy stuck-blue >/dev/null &&
	for i in \$(seq 50); do
		[ -z \"\$(kubectl -n $NS get rs,pods -l app=stuck -o name)\" ] && exit 0; sleep 0.2
	done; exit 1"

# ---- logs, restarts ---------------------------------------------------------

pod=$(K get pods -l app=web,version=blue --field-selector status.phase=Running -o jsonpath='{.items[0].metadata.name}')
check "logs --tail and --timestamps" sh -c "
	out=\$(kubectl -n $NS logs $pod --tail=1 --timestamps) &&
	[ \"\$(echo \"\$out\" | wc -l)\" -eq 1 ] && echo \"\$out\" | grep -Eq '^20[0-9-]+T[0-9:.]+Z '"
check "logs via deploy/NAME" sh -c "kubectl -n $NS logs deploy/web-blue --since=1h >/dev/null"
check "logs -f follows new output" sh -c "
	kubectl -n $NS logs -f $pod >'$work/follow.out' 2>&1 &
	f=\$!
	sleep 1
	ip=\$(kubectl -n $NS get pod $pod -o jsonpath='{.status.podIP}')
	for i in 1 2 3; do curl -s --max-time 2 http://\$ip:8080/no-such-path-\$i >/dev/null; done
	for i in \$(seq 20); do grep -q no-such-path-3 '$work/follow.out' && break; sleep 0.2; done
	kill \$f
	grep -q no-such-path-3 '$work/follow.out'"
check "admin kill restarts the pod's process" sh -c "
	curl -sf -X POST '$SANDBOX_ADMIN_URL/pods/$NS/$pod/kill' >/dev/null &&
	for i in \$(seq 50); do
		s=\$(kubectl -n $NS get pod $pod -o jsonpath='{.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].lastState.terminated.exitCode}')
		[ \"\$s\" = '1 137' ] && exit 0; sleep 0.2
	done; echo \"\$s\"; exit 1"
check "logs --previous shows the killed run" sh -c "
	wait() { kubectl -n $NS get pod $pod -o jsonpath='{.status.containerStatuses[0].ready}' | grep -qx true; }
	for i in \$(seq 50); do wait && break; sleep 0.2; done
	kubectl -n $NS logs $pod --previous >/dev/null"
check "set image on a pod restarts its container with the new version" sh -c "
	kubectl -n $NS run solo --image=registry.local/physioflow-api:s1 --port=8080 >/dev/null &&
	kubectl -n $NS wait --for=condition=Ready pod/solo --timeout=30s >/dev/null &&
	kubectl -n $NS set image pod/solo solo=registry.local/physioflow-api:s2 >/dev/null &&
	ip=\$(kubectl -n $NS get pod solo -o jsonpath='{.status.podIP}')
	for i in \$(seq 50); do
		curl -sf --max-time 1 http://\$ip:8080/health 2>/dev/null | grep -q '\"version\":\"s2\"' &&
		[ \"\$(kubectl -n $NS get pod solo -o jsonpath='{.status.containerStatuses[0].restartCount}')\" = 1 ] && exit 0
		sleep 0.2
	done; exit 1"
kubectl -n "$NS" delete pod solo --wait=false >/dev/null 2>&1
if [ -n "${SANDBOX_BEHAVIORS:-}" ]; then
	check "a crashing container goes into CrashLoopBackOff with restarts" sh -c "
		kubectl -n $NS create deployment crashy --image=registry.local/physioflow-api:crashy >/dev/null &&
		for i in \$(seq 100); do
			s=\$(kubectl -n $NS get pods -l app=crashy -o jsonpath='{.items[0].status.containerStatuses[0].state.waiting.reason} {.items[0].status.containerStatuses[0].lastState.terminated.exitCode}')
			r=\$(kubectl -n $NS get pods -l app=crashy -o jsonpath='{.items[0].status.containerStatuses[0].restartCount}')
			[ \"\$s\" = 'CrashLoopBackOff 3' ] && [ \"\${r:-0}\" -ge 2 ] && exit 0; sleep 0.2
		done; echo \"\$s \$r\"; exit 1"
	kubectl -n "$NS" delete deployment crashy >/dev/null 2>&1
fi

# ---- watch ------------------------------------------------------------------

check "kubectl get -w sees a new object" sh -c "
	kubectl -n $NS get configmaps -w -o name >'$work/watch.out' 2>&1 &
	w=\$!
	sleep 1
	kubectl -n $NS create configmap watched >/dev/null
	for i in \$(seq 25); do grep -q configmap/watched '$work/watch.out' && break; sleep 0.2; done
	kill \$w; grep -q configmap/watched '$work/watch.out'"
# podtemplates skip the watch cache (--watch-cache-sizes=podtemplates#0):
# their watches read etcd, whose history the admin API compacts (as
# kube-apiserver does every 5 minutes).
for n in 1 2; do
	printf 'apiVersion: v1\nkind: PodTemplate\nmetadata: {name: pt-%s}\ntemplate:\n  spec:\n    containers: [{name: c, image: busybox}]\n' "$n" >"$work/pt$n.yaml"
done
check "watch from a compacted resourceVersion: ERROR 410 Expired" sh -c "
	kubectl -n $NS apply -f '$work/pt1.yaml' >/dev/null || exit 1
	rv=\$(kubectl -n $NS get podtemplate pt-1 -o jsonpath='{.metadata.resourceVersion}')
	kubectl -n $NS apply -f '$work/pt2.yaml' >/dev/null || exit 1
	kubectl -n $NS label podtemplate pt-2 round=2 >/dev/null || exit 1
	curl -sf -X POST '$SANDBOX_ADMIN_URL/compact' | grep -q '\"compacted\":[0-9]' || exit 1
	out=\$(curl -s --max-time 5 --cacert '$work/ca.crt' -H 'Authorization: Bearer $tok' '$server/api/v1/namespaces/$NS/podtemplates?watch=true&resourceVersion='\$rv)
	echo \"\$out\" | grep -q '\"type\":\"ERROR\".*\"reason\":\"Expired\".*\"code\":410'"

check "with expired_as_http the too-old watch is an HTTP 410" sh -c "
	curl -sf -X PUT '$SANDBOX_ADMIN_URL/settings' -d '{\"expired_as_http\":true}' >/dev/null || exit 1
	out=\$(curl -s --max-time 5 --cacert '$work/ca.crt' -H 'Authorization: Bearer $tok' -w ' %{http_code}' \
		'$server/api/v1/namespaces/$NS/podtemplates?watch=true&resourceVersion=2')
	curl -sf -X PUT '$SANDBOX_ADMIN_URL/settings' -d '{\"expired_as_http\":false}' >/dev/null
	out=\$(echo \"\$out\" | tr -d '\\n')
	echo \"\$out\" | grep -q '^{\"kind\":\"Status\".*\"reason\":\"Expired\".*\"code\":410} 410\$'"

# ---- faults -----------------------------------------------------------------

fault() { curl -sf -X POST "$SANDBOX_ADMIN_URL/faults" -d "$1" >/dev/null; }
check "injected 500 reaches kubectl as InternalError, once" sh -c "
	curl -sf -X POST '$SANDBOX_ADMIN_URL/faults' -d '{\"method\":\"GET\",\"path\":\"/namespaces/$NS/configmaps/cas\$\",\"status\":500,\"count\":1}' >/dev/null &&
	out=\$(kubectl -n $NS get configmap cas 2>&1); rc=\$?
	[ \$rc -eq 1 ] && echo \"\$out\" | grep -q 'Error from server (InternalError)' &&
	kubectl -n $NS get configmap cas -o name | grep -qx configmap/cas"
check "injected 429 with Retry-After is retried by kubectl" sh -c "
	curl -sf -X POST '$SANDBOX_ADMIN_URL/faults' -d '{\"method\":\"GET\",\"path\":\"/namespaces/$NS/configmaps/cas\$\",\"status\":429,\"count\":2}' >/dev/null &&
	kubectl -n $NS get configmap cas -o name | grep -qx configmap/cas"
check "a watch cut mid-stream: rollout status still completes" sh -c "
	curl -sf -X DELETE '$SANDBOX_ADMIN_URL/stats' &&
	curl -sf -X POST '$SANDBOX_ADMIN_URL/faults' -d '{\"method\":\"GET\",\"path\":\"/namespaces/$NS/deployments\\\\?.*watch=true\",\"reset\":true,\"delay_ms\":300,\"count\":1}' >/dev/null &&
	kubectl -n $NS set image deploy/web-blue api=registry.local/physioflow-api:slowready >/dev/null &&
	kubectl -n $NS rollout status deploy/web-blue --timeout=60s >/dev/null &&
	[ \"\$(curl -sf '$SANDBOX_ADMIN_URL/faults')\" = '[]' ] &&
	curl -sf '$SANDBOX_ADMIN_URL/stats' | grep -Eq '\"GET /apis/apps/v1/namespaces/$NS/deployments\":([3-9]|[1-9][0-9])'"
check "injected HTTP 410 on a watch: kubectl re-lists and completes" sh -c "
	curl -sf -X POST '$SANDBOX_ADMIN_URL/faults' -d '{\"method\":\"GET\",\"path\":\"/namespaces/$NS/deployments\\\\?.*watch=true\",\"status\":410,\"count\":1}' >/dev/null &&
	kubectl -n $NS set image deploy/web-blue api=registry.local/physioflow-api:v5 >/dev/null &&
	kubectl -n $NS rollout status deploy/web-blue --timeout=60s >/dev/null &&
	[ \"\$(curl -sf '$SANDBOX_ADMIN_URL/faults')\" = '[]' ]"
check "watch-list: initial events, then the initial-events-end BOOKMARK; ends cleanly at timeoutSeconds" sh -c "
	out=\$(curl -sS --max-time 10 --cacert '$work/ca.crt' -H 'Authorization: Bearer $tok' \
		'$server/api/v1/namespaces/$NS/configmaps?watch=1&allowWatchBookmarks=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=3') &&
	echo \"\$out\" | grep -q '^{\"type\":\"ADDED\",\"object\":{\"kind\":\"ConfigMap\"' &&
	echo \"\$out\" | tail -n 1 | grep -q '^{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"ConfigMap\",\"apiVersion\":\"v1\",\"metadata\":{\"resourceVersion\":\"[0-9]*\",\"annotations\":{\"k8s.io/initial-events-end\":\"true\"}}}}\$'"
check "admin stats count API requests by method and path" sh -c "
	curl -sf -X DELETE '$SANDBOX_ADMIN_URL/stats' &&
	kubectl -n $NS get svc web >/dev/null &&
	curl -sf '$SANDBOX_ADMIN_URL/stats' | grep -q '\"GET /api/v1/namespaces/$NS/services/web\":1'"
curl -sf -X DELETE "$SANDBOX_ADMIN_URL/faults" >/dev/null

# ---- leases and events --------------------------------------------------------

cat >"$work/lease.yaml" <<EOF
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: bgrun-lock-web}
spec: {holderIdentity: host-1, leaseDurationSeconds: 30, acquireTime: "2026-01-02T03:04:05.000000Z", renewTime: "2026-01-02T03:04:05.000000Z", leaseTransitions: 0}
EOF
check "create and read a Lease (MicroTime kept)" sh -c "
	kubectl -n $NS create --validate=false -f '$work/lease.yaml' >/dev/null &&
	[ \"\$(kubectl -n $NS get lease bgrun-lock-web -o jsonpath='{.spec.holderIdentity} {.spec.renewTime}')\" = 'host-1 2026-01-02T03:04:05.000000Z' ]"
check "events record the deployment controller's scaling" sh -c "
	kubectl -n $NS get events --field-selector involvedObject.kind=Deployment,involvedObject.name=web-blue,reason=ScalingReplicaSet -o name | grep -q ."

# ---- blue/green under load -----------------------------------------------------

deployment web-green green v9 >"$work/green.yaml"
K apply --validate=false -f "$work/green.yaml" >/dev/null
check "green rolls out next to blue" K rollout status deploy/web-green --timeout=60s
K rollout status deploy/web-blue --timeout=60s >/dev/null 2>&1
check "selector flips under load lose no request (200 requests, 10 flips)" sh -c "
	(
		for i in \$(seq 10); do
			c=green; [ \$((i % 2)) -eq 0 ] && c=blue
			kubectl -n $NS patch svc web --type=merge -p \"{\\\"spec\\\":{\\\"selector\\\":{\\\"version\\\":\\\"\$c\\\"}}}\" >/dev/null
			sleep 0.3
		done
	) &
	flipper=\$!
	fails=0
	for i in \$(seq 200); do
		out=\$(curl -sf --max-time 5 http://$svcip/health) || { fails=\$((fails + 1)); continue; }
		echo \"\$out\" >>'$work/bg.out'
	done
	wait \$flipper
	echo \"failures=\$fails\"
	[ \$fails -eq 0 ] && grep -q '\"version\":\"v9\"' '$work/bg.out' && grep -Eq '\"version\":\"(v[1-5]|slowready)\"' '$work/bg.out'"
check "after the last flip only blue pods are endpoints" sh -c "
	want=\$(kubectl -n $NS get pods -l app=web,version=blue -o jsonpath='{.items[*].status.podIP}' | tr ' ' '\n' | sort | tr '\n' ' ')
	for i in \$(seq 25); do
		got=\$(kubectl -n $NS get endpoints web -o jsonpath='{.subsets[0].addresses[*].ip}' | tr ' ' '\n' | sort | tr '\n' ' ')
		[ \"\$got\" = \"\$want\" ] && exit 0; sleep 0.2
	done; exit 1"
check "scale to 0 terminates the pods" sh -c "
	kubectl -n $NS scale deploy web-green --replicas=0 >/dev/null &&
	for i in \$(seq 50); do
		[ -z \"\$(kubectl -n $NS get pods -l app=web,version=green -o name)\" ] && exit 0; sleep 0.2
	done; exit 1"
check "delete --cascade=foreground waits for the ReplicaSets and pods" sh -c "
	kubectl -n $NS delete deploy web-green --cascade=foreground --timeout=30s >/dev/null &&
	[ -z \"\$(kubectl -n $NS get rs,pods -l app=web,version=green -o name)\" ]"
check "namespace deletion removes everything in it" sh -c "
	kubectl delete namespace $NS --timeout=30s >/dev/null &&
	! kubectl get namespace $NS >/dev/null 2>&1"
