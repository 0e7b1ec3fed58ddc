#!/bin/sh
# test_key_cli.sh - `triage key` end to end: add prints a key once and stores only its
# hash (file 0600), list/hash/remove agree with the file, a broken file is refused.
# usage: test_key_cli.sh PATH-TO-triage
set -eu
T=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
f=$dir/keys
fail() { echo "FAIL: $*" >&2; exit 1; }

k1=$("$T" key add --file "$f" alice 2>/dev/null)
case $k1 in sk-triage-*) ;; *) fail "key format: $k1" ;; esac
[ ${#k1} -eq 53 ] || fail "key length ${#k1}"
[ "$(stat -c %a "$f")" = 600 ] || fail "mode $(stat -c %a "$f")"
grep -q -- "$k1" "$f" && fail "plain key stored in the file"
line=$(printf '%s\n' "$k1" | "$T" key hash alice)
[ "$(cat "$f")" = "$line" ] || fail "file '$(cat "$f")' vs hash '$line'"
[ "$line" = "alice $(printf %s "$k1" | sha256sum | cut -d' ' -f1)" ] || fail "hash differs from sha256sum"

k2=$("$T" key add --file "$f" bob 2>/dev/null)
[ "$k1" != "$k2" ] || fail "same key twice"
"$T" key add -f "$f" alice >/dev/null 2>&1
[ "$("$T" key list --file "$f" | tr '\n' ' ')" = "alice bob alice " ] || fail "list"

"$T" key remove --file "$f" alice 2>/dev/null
[ "$("$T" key list --file "$f")" = bob ] || fail "remove"
[ "$(stat -c %a "$f")" = 600 ] || fail "mode after remove"
"$T" key remove --file "$f" alice 2>/dev/null && fail "removing a missing name succeeded"

# An unterminated last line gets its newline before the appended entry.
printf '%s' "$(cat "$f")" > "$f.new" && mv "$f.new" "$f"
"$T" key add --file "$f" carol >/dev/null 2>&1
[ "$("$T" key list --file "$f" | tr '\n' ' ')" = "bob carol " ] || fail "append after unterminated line"

# A broken file is reported with its line and never appended to.
echo "mallory not-a-hash" >> "$f"
before=$(cat "$f")
err=$("$T" key add --file "$f" dave 2>&1 >/dev/null) && fail "appended to a broken file"
case $err in *"keys:3: expected a SHA-256 hash"*) ;; *) fail "error message: $err" ;; esac
[ "$(cat "$f")" = "$before" ] || fail "broken file changed"

"$T" key add --file "$f" 'bad name' 2>/dev/null && fail "bad name accepted"
"$T" key list 2>/dev/null && fail "list without --file accepted"
"$T" key --help | grep -q 'triage key add' || fail "--help"
echo "ok"
