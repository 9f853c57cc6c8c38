#!/bin/bash
# churn.sh MODE LOOP SECONDS BACKEND_PORT : run the repro relay under wrk Connection: close churn; report survival
mode=$1; loop=${2:-uvloop}; secs=${3:-30}; backend=${4:-18090}; port=$((20000 + RANDOM % 10000))
here=$(dirname "$0")
python=${PYTHON:-python3}
$python "$here/relay_repro.py" "$mode" "$port" "$backend" "$loop" > "/tmp/churn_${mode}_${loop}.${port}.log" 2>&1 &
pid=$!
sleep 1
wrk -t2 -c50 -d${secs}s -H "Connection: close" "http://127.0.0.1:$port/" 2>&1 | grep -E "Requests/sec|errors"
if kill -0 $pid 2>/dev/null; then echo "$mode $loop: ALIVE"; kill $pid; else wait $pid; echo "$mode $loop: DIED rc=$?"; fi
tail -n 3 "/tmp/churn_${mode}_${loop}.${port}.log"
