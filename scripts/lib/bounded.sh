# shellcheck shell=bash
# bounded.sh: sourced (not run) by scripts whose steps run under a deadline; defines bounded
# and stop_children.
#
# bounded SECONDS CMD [ARGS...]: runs CMD under `timeout -k 10 SECONDS` (SIGTERM to CMD's
# process group at the deadline, SIGKILL 10 s later) and returns its status (124: timed out).
# Plain `timeout` puts CMD in a process group of its own, so Ctrl-C at the terminal never
# reaches CMD, and the shell, which acts on a signal only once its foreground command is over,
# goes on with the next step after CMD has run to its end. Here the shell waits for timeout in
# the background, so SIGINT, SIGTERM or SIGHUP ends the wait at once: CMD's group gets SIGTERM
# (SIGKILL 10 s later), and once it is gone the shell (or the pipeline or $(...) subshell that
# called bounded) ends by the signal it got, running its own trap for it if it has one.
bounded() {
  local secs="$1" pid rc=0 sig="" saved
  shift
  saved="$(trap -p INT TERM HUP)"
  trap 'sig=INT' INT
  trap 'sig=TERM' TERM
  trap 'sig=HUP' HUP
  timeout -k 10 "$secs" "$@" &
  pid=$!
  wait "$pid" || rc=$?
  if [[ -n "$sig" ]]; then
    kill -TERM "$pid" 2>/dev/null # timeout passes it on to CMD's group
    wait "$pid" || true           # bounded by timeout's -k 10
  fi
  trap - INT TERM HUP
  eval "$saved"
  if [[ -n "$sig" ]]; then
    kill -s "$sig" "$BASHPID"
  fi
  return "$rc"
}

# stop_children: SIGTERM to the direct children of this shell. For an EXIT trap: a SIGTERM to
# the script's pid alone does not reach the pipeline and $(...) subshells it is waiting for;
# this passes it on (bounded in those subshells then stops its command's group).
stop_children() {
  local f stat
  for f in /proc/[0-9]*/stat; do
    { read -r stat <"$f"; } 2>/dev/null || continue
    stat="${stat##*) }" # "state ppid ...": the fields after "pid (comm) "
    stat="${stat#* }"
    if [[ "${stat%% *}" == "$$" ]]; then
      kill -TERM "${f//[^0-9]/}" 2>/dev/null || true
    fi
  done
  return 0
}
