#!/bin/bash
# mixed.sh MODE LOOP SECONDS: churn (Connection: close) + keep-alive + bulk through the repro relay at once
mode=$1; loop=${2:-uvloop}; secs=${3:-30}; port=$((20000 + RANDOM % 10000))
here=$(dirname "$0"); python=${PYTHON:-python3}
$python "$here/relay_repro.py" "$mode" "$port" 18090 "$loop" > "/tmp/mixed_${mode}_$loop.log" 2>&1 &
pid=$!
bport=$((port + 1))
$python "$here/relay_repro.py" "$mode" "$bport" 15201 "$loop" > "/tmp/mixedb_${mode}_$loop.log" 2>&1 &
bpid=$!
iperf3 -s -p 15201 -1 > /dev/null 2>&1 &
sleep 1
wrk -t1 -c50 -d${secs}s -H "Connection: close" "http://127.0.0.1:$port/" > /tmp/mixed_wrk1.txt 2>&1 &
wrk -t1 -c20 -d${secs}s "http://127.0.0.1:$port/" > /tmp/mixed_wrk2.txt 2>&1 &
iperf3 -c 127.0.0.1 -p $bport -t $secs -P 4 --bidir 2>&1 | tail -4 | head -2
wait %4 %5 2>/dev/null; sleep 1
grep -h "Requests/sec" /tmp/mixed_wrk1.txt /tmp/mixed_wrk2.txt
for p in $pid $bpid; do if kill -0 $p 2>/dev/null; then echo "$mode $loop $p: ALIVE"; kill $p; else wait $p; echo "$mode $loop $p: DIED rc=$?"; fi; done
tail -n 3 /tmp/mixed_${mode}_$loop.log /tmp/mixedb_${mode}_$loop.log
