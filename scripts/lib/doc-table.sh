# shellcheck shell=bash
# write_doc_table DOC MARKER TABLE: replaces what stands between `<!-- MARKER:begin -->` and
# `<!-- MARKER:end -->` in DOC with TABLE, so benchmark scripts keep docs/benchmarks.md current.
# Does nothing when DOC is empty or lacks the markers.
write_doc_table() {
  local doc=$1 marker=$2 table=$3
  [ -n "$doc" ] && grep -q "<!-- $marker:begin -->" "$doc" || return 0
  python3 - "$doc" "$marker" "$table" <<'PY'
import re, sys
path, marker, table = sys.argv[1:4]
doc = open(path).read()
pattern = r"(<!-- %s:begin -->\n).*?(<!-- %s:end -->)" % (re.escape(marker), re.escape(marker))
doc = re.sub(pattern, lambda m: m.group(1) + table + "\n" + m.group(2), doc, flags=re.S)
open(path, "w").write(doc)
PY
  printf '[bench] table written to %s\n' "$doc" >&2
}
