# The tiny test guest's reader of a NoCloud `network-config` (version 2), in busybox awk.
#
# It understands the subset a lab needs, in block or flow style: under `ethernets:`, per
# entry `match: macaddress:`, `set-name:`, `addresses:`, `dhcp4:`, `gateway4:`,
# `routes:` (items with `to:` and `via:`) and `nameservers: addresses:`; an optional
# top-level `network:` wrapper. Format: https://cloudinit.readthedocs.io/en/latest/reference/network-config-format-v2.html
# It prints one line per fact, which /init runs as commands of its own:
#   nic MAC NAME        addr NAME CIDR        dhcp NAME
#   route NAME TO VIA   dns ADDRESS
# all nics (with their addresses) before any route, so every gateway is on-link first.

function unquote(s) {
    sub(/^[ \t]+/, "", s); sub(/[ \t]+$/, "", s)
    if (s ~ /^".*"$/ || s ~ /^'.*'$/) s = substr(s, 2, length(s) - 2)
    return s
}

# A flow map `{k: v, k: [a, b]}`: each entry as if it were a line nested in `key`.
function flowmap(key, v,    saved, k) {
    saved = parent; parent = key; v = substr(v, 2, length(v) - 2)
    while (match(v, /[A-Za-z0-9_-]+:[ \t]*(\[[^]]*\]|[^,}]*)/)) {
        k = substr(v, RSTART, RLENGTH); v = substr(v, RSTART + RLENGTH)
        values(substr(k, 1, index(k, ":") - 1), unquote(substr(k, index(k, ":") + 1)))
    }
    parent = saved
}

# A value, or each element of a flow list `[a, b]`, handed to take().
function values(key, v,    n, parts, i) {
    if (v ~ /^\{.*\}$/) flowmap(key, v)
    else if (v ~ /^\[.*\]$/) {
        n = split(substr(v, 2, length(v) - 2), parts, ",")
        for (i = 1; i <= n; i++) if (unquote(parts[i]) != "") take(key, unquote(parts[i]))
    } else if (v != "") take(key, unquote(v))
}

function take(key, v) {
    if (eth == "") return
    if (key == "macaddress") mac[eth] = tolower(v)
    else if (key == "set-name") name[eth] = v
    else if (key == "dhcp4") dhcp[eth] = (v == "true" || v == "yes")
    else if (key == "gateway4") out_routes = out_routes "route " eth " default " v "\n"
    else if (key == "addresses" && (parent == "nameservers" || grand == "nameservers")) dns = dns "dns " v "\n"
    else if (key == "addresses") addrs[eth] = addrs[eth] " " v
    else if (key == "to") rto = (v == "0.0.0.0/0") ? "default" : v
    else if (key == "via") rvia = v
}

function flush_route() {
    if (eth != "" && rto != "" && rvia != "") out_routes = out_routes "route " eth " " rto " " rvia "\n"
    rto = ""; rvia = ""
}

{
    sub(/[ \t]+#.*$/, ""); sub(/\r$/, "")
    if ($0 ~ /^[ \t]*(#.*)?$/) next
    match($0, /^ */); indent = RLENGTH; line = substr($0, indent + 1)
    item = (line ~ /^-( |$)/)
    if (item) { line = substr(line, 2); match(line, /^ */); indent += 1 + RLENGTH; line = substr(line, RLENGTH + 1) }
    # Leave the keys this line is not nested in.
    while (depth > 0 && at[depth] >= indent) {
        if (key_[depth] == "routes") flush_route()
        depth--
    }
    if (item && key_[depth] == "routes") flush_route()
    parent = key_[depth]; grand = depth > 1 ? key_[depth - 1] : ""
    if (item && line !~ /^[A-Za-z0-9_-]+:/) { values(parent, line); next }  # `- 10.0.0.2/24`
    key = line; sub(/:.*/, "", key); key = unquote(key)
    value = line; sub(/^[^:]*:/, "", value); value = unquote(value)
    if (parent == "ethernets") { flush_route(); eth = key; order[++count] = key }
    if (value == "") { depth++; at[depth] = indent; key_[depth] = key; next }
    values(key, value)
}

END {
    flush_route()
    for (i = 1; i <= count; i++) {
        e = order[i]; nicname = (e in name) ? name[e] : e
        if (!(e in mac)) continue
        print "nic " mac[e] " " nicname
        n = split(addrs[e], list, " ")
        for (j = 1; j <= n; j++) print "addr " nicname " " list[j]
        if (dhcp[e]) print "dhcp " nicname
    }
    # Routes name the nic by its entry's id; print them with its final name.
    n = split(out_routes, lines, "\n")
    for (j = 1; j <= n; j++) {
        if (split(lines[j], f, " ") < 4) continue
        nicname = (f[2] in name) ? name[f[2]] : f[2]
        print "route " nicname " " f[3] " " f[4]
    }
    printf "%s", dns
}
