#!/usr/bin/env bash
# Start and stop private Prosody and ejabberd instances for stratus tests and the demo.
#
#   scripts/xmpp-server.sh install
#   scripts/xmpp-server.sh start prosody  DIR C2S_PORT COMPONENT_PORT [--pep] [--tls-required] [--multicast] [FEDERATION] [--watch-pid PID]
#   scripts/xmpp-server.sh start ejabberd DIR C2S_PORT COMPONENT_PORT DIST_PORT [--pep] [--multicast] [FEDERATION] [--watch-pid PID]
#   scripts/xmpp-server.sh stop DIR
#   scripts/xmpp-server.sh register DIR USER PASSWORD     (user@DOMAIN, localhost unless --domain)
#   scripts/xmpp-server.sh eval DIR 'ERLANG EXPRESSIONS.' (ejabberd: evaluated on its node, result printed)
#   scripts/xmpp-server.sh ctl DIR COMMAND ARGS...        (ejabberd: an ejabberdctl command)
#   scripts/xmpp-server.sh rosters DIR FILE               (roster entries into the server's storage)
#
# Everything lives in DIR (config, data, logs, pid); nothing touches the system instances.
# --watch-pid stops the server when that process exits (used by tests that start servers).
# --builtin-pubsub (ejabberd) adds mod_pubsub on pubsub-builtin.localhost (Prosody always has it)
#   for side-by-side benchmarks.
# --builtin-pep keeps the server's own PEP for its users (Prosody mod_pep; ejabberd mod_pubsub with
#   its pep plugin, and contrib/ejabberd/mod_stratus_pep_export loaded): the migration tests make
#   data there, export it (prosody-migrator; `ctl DIR stratus_export_pep localhost OUT`) and import
#   it into stratus.
# --tls-required (Prosody) makes c2s require STARTTLS, with a self-signed certificate for localhost.
# --multicast loads the project's XEP-0033 module for the server's components on localhost, as the
#   README shows: Prosody contrib/prosody/mod_stratus_multicast.lua; ejabberd
#   contrib/ejabberd/mod_stratus_multicast.erl, compiled here (ejabberd always has its own
#   mod_multicast on multicast.localhost besides).
# --pep delegates the pubsub namespaces of localhost's users to pubsub.localhost (XEP-0355) and
# grants it roster, message and presence privileges (XEP-0356), as the README's PEP snippets do.
# Both servers get the component domains pubsub.localhost and ps01..ps16.localhost, secret "secret";
# ejabberd also nomulticast.localhost, which its mod_multicast refuses (XEP-0033 fallback tests).
# FEDERATION (two servers on one machine, dialback without TLS over loopback):
#   --domain D       the server's domain instead of localhost (component domains become pubsub.D,
#                    psNN.D; a server of another domain is started without --pep or --multicast)
#   --s2s-port P     listens for server-to-server streams on 127.0.0.1:P (localhost's side on 5269:
#                    ejabberd reaches localhost on the default port without asking DNS)
#   --resolv FILE    runs the server in a private mount namespace whose /etc/resolv.conf is FILE,
#                    naming a test DNS responder with the SRV records (nothing else is touched)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

die() { echo "xmpp-server.sh: $*" >&2; exit 1; }

install() {
  local need=()
  command -v prosody >/dev/null || need+=(prosody)
  [ -d /usr/lib/prosody/modules/mod_privilege ] || need+=(prosody-modules)
  [ -d /usr/lib/x86_64-linux-gnu/ejabberd ] || ls -d /usr/lib/*/ejabberd-* >/dev/null 2>&1 || need+=(ejabberd)
  command -v erlc >/dev/null || need+=(erlang-base)  # compiles contrib/ejabberd's module (--multicast)
  command -v openssl >/dev/null || need+=(openssl)  # certificates for --tls-required
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # Keep the packaged daemons from starting: we run private instances only.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
}

wait_port() { # PORT SECONDS
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

ejabberd_env() { # DIR
  export EJABBERD_CONFIG_PATH=$1/ejabberd.yml EJABBERD_LOG_PATH=$1/logs/ejabberd.log \
    EJABBERD_PID_PATH=$1/ejabberd.pid ERL_CRASH_DUMP=$1/logs/erl_crash.dump HOME=$1
  ERL_LIBS=$(ls -d /usr/lib/*/ejabberd-* 2>/dev/null | head -1 | xargs dirname)
  export ERL_LIBS
}

ejabberd_ctl() { # DIR ARGS...
  local d=$1; shift
  ejabberd_env "$d"
  local node dist
  node=$(cat "$d/node") dist=$(cat "$d/dist_port")
  erl -sname "ctl$$-$node" -setcookie stratus-test -erl_epmd_port "$dist" -start_epmd false \
    -dist_listen false -hidden -noinput -s ejabberd_ctl -extra "$node@localhost" "$@"
}

watch() { # DIR PID
  setsid bash -c "while kill -0 $2 2>/dev/null && [ -f '$1/server.pid' ]; do sleep 1; done; '$here/xmpp-server.sh' stop '$1'" \
    </dev/null >/dev/null 2>&1 &
}

start() {
  local kind=$1 dir=$2 c2s=$3 comp=$4; shift 4
  local dist="" watch_pid="" pep=0 builtin=0 tls=0 multicast="" code_path=() domain=localhost s2s="" resolv="" builtin_pep=0
  if [ "$kind" = ejabberd ]; then dist=${1:?DIST_PORT required for ejabberd}; shift; fi
  while [ $# -gt 0 ]; do
    case $1 in
      --pep) pep=1; shift ;;
      --builtin-pubsub) builtin=1; shift ;;
      --builtin-pep) builtin_pep=1; shift ;;
      --tls-required) tls=1; shift ;;
      --multicast) multicast=1; shift ;;
      --watch-pid) watch_pid=$2; shift 2 ;;
      --domain) domain=$2; shift 2 ;;
      --s2s-port) s2s=$2; shift 2 ;;
      --resolv) resolv=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift 2 ;;
      *) die "unknown option $1" ;;
    esac
  done
  install
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ -f "$dir/server.pid" ] && kill -0 "$(cat "$dir/server.pid")" 2>/dev/null && die "a server already runs in $dir"
  echo "$kind" > "$dir/kind"
  echo "$domain" > "$dir/domain"
  # The server's own name service: a private mount namespace with its own resolv.conf.
  local ns=()
  [ -n "$resolv" ] && ns=(unshare -m sh -c 'mount --bind "$0" /etc/resolv.conf && exec "$@"' "$resolv")
  case $kind in
    prosody)
      mkdir -p "$dir/data" "$dir/certs"
      cp "$here/templates/prosody.cfg.lua" "$dir/prosody.cfg.lua"
      if [ "$tls" = 1 ]; then
        # A self-signed certificate for localhost: clients must accept it explicitly.
        openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj /CN=localhost \
          -addext subjectAltName=DNS:localhost -keyout "$dir/certs/localhost.key" \
          -out "$dir/certs/localhost.crt" 2>/dev/null
      fi
      PROSODY_DIR=$dir PROSODY_C2S_PORT=$c2s PROSODY_COMPONENT_PORT=$comp PROSODY_PEP=$pep PROSODY_TLS=$tls \
        PROSODY_MULTICAST=${multicast:+$(cd "$here/../contrib/prosody" && pwd)} \
        PROSODY_DOMAIN=$domain PROSODY_S2S_PORT=$s2s PROSODY_BUILTIN_PEP=$builtin_pep \
        setsid "${ns[@]}" prosody --config "$dir/prosody.cfg.lua" -F </dev/null >"$dir/stdout.log" 2>&1 &
      echo $! > "$dir/server.pid"
      ;;
    ejabberd)
      mkdir -p "$dir/logs" "$dir/db"
      local hosts="      pubsub.$domain: {password: secret}"
      for i in $(seq -w 1 16); do hosts+=$'\n'"      ps$i.$domain: {password: secret}"; done
      hosts+=$'\n'"      nomulticast.$domain: {password: secret}"
      local pep_modules=""
      [ "$pep" = 1 ] && pep_modules=$(cat "$here/templates/ejabberd-pep.yml")$'\n'
      [ "$builtin" = 1 ] && pep_modules+=$'\n'"  mod_pubsub: {hosts: [pubsub-builtin.localhost], plugins: [flat], access_createnode: all}"
      local s2s_conf="" s2s_options=""
      if [ -n "$s2s" ]; then
        s2s_conf="  - {port: $s2s, ip: \"127.0.0.1\", module: ejabberd_s2s_in}"
        s2s_options="# Server-to-server streams (--s2s-port): dialback without TLS on loopback."$'\n'"s2s_use_starttls: false"
        pep_modules+="  mod_s2s_dialback: {}"$'\n'
      fi
      local contrib=()
      if [ -n "$multicast" ]; then
        contrib+=(mod_stratus_multicast)
        pep_modules+=$'\n'"  mod_stratus_multicast: {}"
      fi
      if [ "$builtin_pep" = 1 ]; then
        contrib+=(mod_stratus_pep_export)
        # ignore_pep_from_offline: false sends the last items of contacts who are offline too
        # (ejabberd's default sends only online contacts'), as XEP-0163 and stratus do.
        pep_modules+=$'\n'"  mod_pubsub: {hosts: [pubsub-pep.localhost], plugins: [flat, pep], access_createnode: all, ignore_pep_from_offline: false}"
        pep_modules+=$'\n'"  mod_stratus_pep_export: {}"
      fi
      if [ ${#contrib[@]} -gt 0 ]; then
        # On ejabberd's code path with -pa, as the README's ERL_OPTIONS line does.
        local ebin="$dir/ebin" xmpp_include ejd_include m
        xmpp_include=$(ls -d /usr/lib/erlang/lib/p1_xmpp-*/include /usr/lib/erlang/lib/xmpp-*/include 2>/dev/null | head -1 || true)
        ejd_include=$(ls -d /usr/lib/*/ejabberd-*/include | head -1)
        mkdir -p "$ebin"
        for m in "${contrib[@]}"; do
          erlc -pa "$(ls -d /usr/lib/*/ejabberd-*/ebin | head -1)" -I "$xmpp_include" -I "$ejd_include" \
            -o "$ebin" "$here/../contrib/ejabberd/$m.erl"
        done
        code_path=(-pa "$ebin")
      fi
      sed -e "s/@C2S_PORT@/$c2s/" -e "s/@COMPONENT_PORT@/$comp/" -e "s/@DOMAIN@/$domain/g" \
        "$here/templates/ejabberd.yml" \
        | awk -v h="$hosts" -v p="$pep_modules" -v s="$s2s_conf" -v o="$s2s_options" '{ if ($0 == "@COMPONENT_HOSTS@") print h; else if ($0 == "@PEP_MODULES@") print p; else if ($0 == "@S2S_LISTEN@") print s; else if ($0 == "@S2S_OPTIONS@") print o; else print }' > "$dir/ejabberd.yml"
      echo "ejd$c2s" > "$dir/node"; echo "$dist" > "$dir/dist_port"
      ejabberd_env "$dir"
      setsid "${ns[@]}" erl -sname "ejd$c2s@localhost" -setcookie stratus-test -erl_epmd_port "$dist" -start_epmd false \
        -kernel inet_dist_use_interface "{127,0,0,1}" +K true +P 250000 -noinput "${code_path[@]}" \
        -mnesia dir "\"$dir/db\"" -s ejabberd </dev/null >"$dir/stdout.log" 2>&1 &
      echo $! > "$dir/server.pid"
      ;;
    *) die "unknown server kind $kind (prosody or ejabberd)" ;;
  esac
  if ! wait_port "$c2s" 30 || ! wait_port "$comp" 10; then
    tail -20 "$dir"/*.log "$dir"/logs/*.log 2>/dev/null >&2 || true
    stop "$dir"
    die "$kind did not open ports $c2s/$comp within 40 s (logs above, in $dir)"
  fi
  [ -n "$watch_pid" ] && watch "$dir" "$watch_pid"
  echo "$kind ready in $dir: c2s 127.0.0.1:$c2s, component 127.0.0.1:$comp" >&2
}

stop() {
  local dir=$1 pid i
  [ -f "$dir/server.pid" ] || return 0
  pid=$(cat "$dir/server.pid")
  rm -f "$dir/server.pid"
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

register() {
  local dir=$1 user=$2 pass=$3 domain
  domain=$(cat "$dir/domain" 2>/dev/null || echo localhost)
  case $(cat "$dir/kind") in
    prosody) PROSODY_DIR=$dir PROSODY_PEP=0 PROSODY_DOMAIN=$domain prosodyctl --config "$dir/prosody.cfg.lua" register "$user" "$domain" "$pass" ;;
    ejabberd) ejabberd_ctl "$dir" register "$user" "$domain" "$pass" ;;
  esac
}

# Writes roster entries into a server's own storage, as its roster code keeps them: each line of
# FILE is "account@domain contact@domain", an entry with subscription "both" (RFC 6121 section
# 2.1.2.5) in the account's roster. For large benchmark setups (stratus-load --mode storm
# --print-rosters), where making 50,000 subscriptions through c2s takes Prosody hours. Run it
# before those accounts log in: Prosody keeps offline users' rosters in a cache once read.
#   Prosody: the internal storage's roster files (DIR/data/HOST/roster/USER.dat), rewritten whole.
#   ejabberd: mod_admin_extra's add_rosteritem on the server's node, one call per line.
rosters() {
  local dir=$1 file
  file=$(realpath "$2")
  case $(cat "$dir/kind") in
    prosody)
      python3 - "$dir/data" "$file" <<'PY'
import collections, os, re, sys
data, file = sys.argv[1:]
# Prosody's datamanager: every non-alphanumeric byte of a host or user name as %xx.
enc = lambda s: re.sub(rb"[^A-Za-z0-9]", lambda m: b"%%%02x" % m.group()[0], s.encode()).decode()
lua = lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
rosters = collections.defaultdict(list)
for line in open(file):
    if line.strip():
        account, contact = line.split()
        rosters[account].append(contact)
for account, contacts in rosters.items():
    user, host = account.split("@", 1)
    path = os.path.join(data, enc(host), "roster")
    os.makedirs(path, exist_ok=True)
    body = "".join(f'\t[{lua(c)}] = {{\n\t\t["subscription"] = "both";\n\t\t["groups"] = {{}};\n\t}};\n'
                   for c in contacts)
    with open(os.path.join(path, enc(user) + ".dat"), "w") as f:
        f.write('return {\n\t[false] = {\n\t\t["version"] = 1;\n\t};\n' + body + "};\n")
print(sum(map(len, rosters.values())))
PY
      ;;
    ejabberd)
      local added
      added=$(eval_on "$dir" "{ok, B} = file:read_file(\"$file\"),
        Pairs = [binary:split(L, <<\" \">>) || L <- binary:split(B, <<\"\\n\">>, [global, trim_all])],
        Done = [mod_admin_extra:add_rosteritem(U1, S1, U2, S2, <<\"\">>, <<\"storm\">>, <<\"both\">>)
                || [A, C] <- Pairs, [U1, S1] <- [binary:split(A, <<\"@\">>)],
                   [U2, S2] <- [binary:split(C, <<\"@\">>)]],
        case lists:usort(Done) of [ok] -> length(Done); [] -> 0; Other -> {failed, Other} end.")
      [[ $added =~ ^[0-9]+$ ]] || die "rosters: ejabberd refused some entries: $added"
      echo "$added"
      ;;
  esac
}

# Evaluates Erlang expressions on a private ejabberd's node (as a local service of the server
# would act: tests use it to send stanzas from the server's own services) and prints the value.
eval_on() {
  local dir=$1 exprs=$2 node dist
  [ "$(cat "$dir/kind")" = ejabberd ] || die "eval: $dir is not an ejabberd instance"
  ejabberd_env "$dir"
  node=$(cat "$dir/node") dist=$(cat "$dir/dist_port")
  STRATUS_EVAL=$exprs erl -sname "eval$$-$node" -setcookie stratus-test -erl_epmd_port "$dist" \
    -start_epmd false -dist_listen false -hidden -noinput -eval "
      {ok, Tokens, _} = erl_scan:string(os:getenv(\"STRATUS_EVAL\")),
      {ok, Exprs} = erl_parse:parse_exprs(Tokens),
      case rpc:call('$node@localhost', erl_eval, exprs, [Exprs, []]) of
        {value, Value, _} -> io:format(\"~p~n\", [Value]), halt(0);
        Other -> io:format(standard_error, \"~p~n\", [Other]), halt(1)
      end."
}

cmd=${1:-}; shift || true
case $cmd in
  install) install ;;
  start) start "$@" ;;
  stop) stop "$@" ;;
  register) register "$@" ;;
  eval) eval_on "$@" ;;
  rosters) rosters "$@" ;;
  ctl) d=$1; shift; ejabberd_ctl "$d" "$@" ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac
