#!/usr/bin/env sh
# Checks the import contracts in .importlinter. Like mypy (tools/typecheck.sh), import-linter's
# grimp does not follow the editable install's package-dir mapping, and lint-imports puts its
# working directory first on sys.path: so it runs inside a symlink farm that lays providers/,
# metrics/ and notifiers/ out as flaggerpy.providers, flaggerpy.metrics, flaggerpy.notifiers.
# SRC (default: this checkout) is the tree to check, FARM where the farm is built.
set -eu
lint_imports="${LINT_IMPORTS:-lint-imports}"
case "$lint_imports" in */*) lint_imports="$(cd "$(dirname "$lint_imports")" && pwd)/${lint_imports##*/}";; esac
cd "$(dirname "$0")/.."
root="$PWD"
src="${SRC:-$root}"
farm="${FARM:-$root/build/importlinter}"
rm -rf "$farm" && mkdir -p "$farm/flaggerpy"
for f in "$src"/flaggerpy/*; do ln -s "$f" "$farm/flaggerpy/"; done
for d in providers metrics notifiers; do ln -s "$src/$d" "$farm/flaggerpy/$d"; done
cd "$farm"
exec "$lint_imports" "$root/.importlinter" --no-cache --no-logo "$@"
