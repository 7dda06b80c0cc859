#!/bin/bash
# The GitHub Actions example, linted with actionlint (built once into the
# bgrun cache by tools/actionlint.sh) and with shellcheck on its run:
# scripts, the way GitHub runs them. A copy with a known mistake must fail,
# so the lint is known to look. The GitLab example and the real execution
# of both against the sandbox are in tests/integration/ci_examples_spec.lua.
set -u

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=$(mktemp -d -t bgrun-actionlint-XXXXXX)
passed=0
failed=0

ok() { echo "ok - $1"; passed=$((passed + 1)); }
notok() {
	echo "not ok - $1"
	[ $# -ge 2 ] && printf '%s\n' "$2" | tail -n 20 | sed 's/^/#   /'
	failed=$((failed + 1))
}
finish() {
	rm -rf "$work"
	echo "actionlint: $passed passed, $failed failed"
	[ "$failed" -eq 0 ]
}
trap 'finish; exit $?' EXIT
trap 'exit 130' INT TERM

if actionlint=$("$repo/tools/actionlint.sh" 2>"$work/build.log") && [ -x "$actionlint" ]; then
	ok "tools/actionlint.sh gives actionlint $("$actionlint" -version | head -n 1)"
else
	notok "tools/actionlint.sh gives actionlint" "$(cat "$work/build.log")"
	exit 1
fi
if shellcheck=$(command -v shellcheck); then
	ok "shellcheck is there for the run: scripts ($(shellcheck --version | sed -n 's/^version: //p'))"
else
	notok "shellcheck is there for the run: scripts (tools/deps.sh installs it)"
	exit 1
fi

workflows=("$repo"/examples/ci/github/*.yml)
[ -e "${workflows[0]}" ] || { notok "examples/ci/github holds a workflow"; exit 1; }
for wf in "${workflows[@]}"; do
	rel=${wf#"$repo"/}
	if out=$("$actionlint" -no-color -shellcheck="$shellcheck" -pyflakes= "$wf" 2>&1); then
		ok "actionlint $rel: no problem"
	else
		notok "actionlint $rel: no problem" "$out"
	fi
done

# Known mistakes the lint must catch (so a clean result means something):
# a context the job's env cannot see, an unquoted variable in a script, an
# input that does not exist.
wf=$repo/examples/ci/github/deploy.yml
mistake() { # mistake NAME EXPECTED-IN-OUTPUT SED-SCRIPT
	local name=$1 want=$2 out
	sed -e "$3" "$wf" >"$work/mistake.yml"
	if cmp -s "$wf" "$work/mistake.yml"; then
		notok "actionlint catches $name" "the edit did not apply to $wf"
	elif out=$("$actionlint" -no-color -shellcheck="$shellcheck" -pyflakes= "$work/mistake.yml" 2>&1); then
		notok "actionlint catches $name" "actionlint passed it"
	elif printf '%s\n' "$out" | grep -q -- "$want"; then
		ok "actionlint catches $name"
	else
		notok "actionlint catches $name" "$out"
	fi
}
mistake "the runner context in the job's env" 'context "runner" is not allowed here' \
	's/^\(      BGRUN_ENV: \).*/\1${{ runner.temp }}/'
mistake "an unquoted variable in a run: script (shellcheck)" 'SC2086' \
	's/>>"\$GITHUB_ENV"/>>$GITHUB_ENV/'
mistake "an input the workflow does not declare" 'property "environment" is not defined' \
	's/inputs\.env }}/inputs.environment }}/'
