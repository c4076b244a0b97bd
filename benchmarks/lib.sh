# Step timing shared by the benchmark scripts (sourced from the repository root, after the
# script has set C, its cache folder, and made $C/logs).

# timed NAME TIME_FILE CMD...: run CMD with its output in $C/logs/NAME.log and GNU time's
# wall, user time and peak memory in TIME_FILE; CMD's exit status.
timed() {
    local name=$1 time_file=$2; shift 2
    echo "[$(date +%T)] $name: $*"
    /usr/bin/time -f "%e s wall, %U s user, %M KB peak RSS" -o "$time_file" "$@" \
        > "$C/logs/$name.log" 2>&1
}

# run NAME CMD...: a resumable step, skipped when $C/logs/NAME.time exists (the step
# finished; the time is written to NAME.tmp and renamed when the command succeeds).
run() {
    local name=$1; shift
    if [ -f "$C/logs/$name.time" ]; then echo "[$(date +%T)] $name: done before"; return; fi
    # "|| return": set -e does not apply inside a function called as "run ... || ...".
    timed "$name" "$C/logs/$name.tmp" "$@" || return
    mv "$C/logs/$name.tmp" "$C/logs/$name.time"
    echo "[$(date +%T)] $name done: $(cat "$C/logs/$name.time")"
}
