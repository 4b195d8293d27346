#!/usr/bin/env bash
# Re-vendors GraphiQL's browser build and React's production UMD builds from the npm
# registry, pinned; npm checks each tarball against the registry's integrity hash.
# Bump the versions here and in ../graphiql.rs together (the asset paths carry them).
set -euo pipefail
GRAPHIQL=4.1.2   # the last major that ships a UMD build
REACT=18.3.1     # the last major that ships UMD builds
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "graphiql@$GRAPHIQL" "react@$REACT" "react-dom@$REACT" >/dev/null
for package in graphiql-$GRAPHIQL react-$REACT react-dom-$REACT; do
  mkdir "$package" && tar xzf "$package.tgz" -C "$package"
done
cp graphiql-$GRAPHIQL/package/graphiql.min.js graphiql-$GRAPHIQL/package/graphiql.min.css "$here/"
cp graphiql-$GRAPHIQL/package/LICENSE "$here/LICENSE-graphiql"
cp react-$REACT/package/umd/react.production.min.js "$here/"
cp react-dom-$REACT/package/umd/react-dom.production.min.js "$here/"
cp react-$REACT/package/LICENSE "$here/LICENSE-react"
cd "$here" && sha256sum graphiql.min.js graphiql.min.css react.production.min.js react-dom.production.min.js > SHA256SUMS
echo "vendored graphiql $GRAPHIQL and react $REACT into $here"
