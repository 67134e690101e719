#!/bin/sh
# Render the broker definitions with the users' passwords, then run the given command, if any.
#
# Every ${NAME} in the template becomes the value of the variable NAME, or the content of the file
# named by NAME_FILE (docker secrets, Kubernetes Secret volumes), JSON-escaped, with surrounding
# whitespace dropped as the services drop it from RABBITMQ_PASSWORD_FILE. A missing or empty value
# stops the broker from starting: better than a user without a password.
#
# RabbitMQ ignores RABBITMQ_DEFAULT_USER/PASS once load_definitions is set, and its definitions
# import hashes a plain `password` field itself, so this is all it takes to keep passwords out of
# git. POSIX sh and awk only: it runs in the official rabbitmq image as its entrypoint (compose)
# and as an init container (Kubernetes).
#
#   CALC_DEFINITIONS_TEMPLATE  template to read  (default /etc/rabbitmq/calc/definitions.template.json)
#   CALC_DEFINITIONS_FILE      file to write     (default /tmp/calc-definitions.json; rabbitmq.conf
#                                                 loads it from there)
set -eu

template=${CALC_DEFINITIONS_TEMPLATE:-/etc/rabbitmq/calc/definitions.template.json}
out=${CALC_DEFINITIONS_FILE:-/tmp/calc-definitions.json}

umask 077
awk '
function fail(message) { print "render-definitions: " message > "/dev/stderr"; failed = 1; exit 1 }
function value_of(name,   file, line, value, n) {
    file = ENVIRON[name "_FILE"]
    if (file == "") return ENVIRON[name]
    value = ""; n = 0
    while ((status = (getline line < file)) > 0) value = value (n++ ? "\n" : "") line
    if (status < 0) fail("cannot read " name "_FILE=" file)
    close(file)
    return value
}
function json_escape(s,   out, i, c) {
    out = ""
    for (i = 1; i <= length(s); i++) {
        c = substr(s, i, 1)
        if (c == "\\") out = out "\\\\"
        else if (c == "\"") out = out "\\\""
        else if (c == "\n") out = out "\\n"
        else if (c == "\r") out = out "\\r"
        else if (c == "\t") out = out "\\t"
        else out = out c
    }
    return out
}
{
    line = $0; rendered = ""
    while ((start = index(line, "${")) > 0) {
        rest = substr(line, start + 2)
        stop = index(rest, "}")
        name = substr(rest, 1, stop - 1)
        if (stop == 0 || name !~ /^[A-Z][A-Z0-9_]*$/) {   # not a placeholder: keep it
            rendered = rendered substr(line, 1, start + 1); line = rest; continue
        }
        value = value_of(name)
        sub(/^[ \t\r\n]+/, "", value); sub(/[ \t\r\n]+$/, "", value)
        if (value == "") fail(name " is empty or not set (set it, or " name "_FILE)")
        rendered = rendered substr(line, 1, start - 1) json_escape(value)
        line = substr(rest, stop + 1)
    }
    print rendered line
}
END { if (failed) exit 1 }
' "$template" >"$out.tmp"
mv "$out.tmp" "$out"
# The image's entrypoint drops from root to rabbitmq, which must still read the file.
if [ "$(id -u)" = 0 ] && id rabbitmq >/dev/null 2>&1; then
  chown rabbitmq:rabbitmq "$out"
fi
echo "render-definitions: wrote $out from $template" >&2

if [ "$#" -gt 0 ]; then
  exec "$@"
fi
