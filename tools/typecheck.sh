#!/usr/bin/env sh
# mypy cannot follow the editable install's package-dir mapping, so type-check
# through a symlink farm that lays providers/, metrics/, notifiers/ out as
# flaggerpy.providers, flaggerpy.metrics, flaggerpy.notifiers (style.md §8).
set -eu
cd "$(dirname "$0")/.."
rm -rf build/typecheck && mkdir -p build/typecheck/flaggerpy
for f in flaggerpy/*; do ln -s "$PWD/$f" build/typecheck/flaggerpy/; done
for d in providers metrics notifiers; do ln -s "$PWD/$d" "build/typecheck/flaggerpy/$d"; done
MYPYPATH=build/typecheck exec "${MYPY:-mypy}" -p flaggerpy "$@"
