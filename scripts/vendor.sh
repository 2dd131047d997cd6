#!/usr/bin/env bash
# Refreshes the third-party browser libraries of the demo page in
# static/vendor/. The page has no build step and must work offline, so the
# libraries are committed; this script is how they got there, and the only
# way they change: from the npm registry, at the versions pinned below, with
# their licences beside them. Run it after changing a version, then commit
# static/vendor/ (and the version list in README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

# package@version  file in the package  name under static/vendor/
LIBRARIES=(
    "marked@18.2.1     lib/marked.esm.js   marked.esm.js"
    "dompurify@3.5.0   dist/purify.es.mjs  purify.es.mjs"
)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out=static/vendor
mkdir -p "$out"

for entry in "${LIBRARIES[@]}"; do
    read -r spec file target <<<"$entry"
    name=${spec%@*}
    tarball=$(cd "$work" && npm pack --silent "$spec")
    mkdir -p "$work/$name"
    tar -xzf "$work/$tarball" -C "$work/$name"
    # The source map is not shipped, so its reference would only 404.
    sed '/^\/\/# sourceMappingURL=/d' "$work/$name/package/$file" >"$out/$target"
    for licence in "$work/$name/package"/LICENSE*; do
        cp "$licence" "$out/$name.$(basename "$licence")"
    done
    echo "vendored $spec as $out/$target"
done
