#!/usr/bin/env bash
# A continuous job: prints a heartbeat every few seconds and exits cleanly when the
# host asks it to stop (the shutdown file appears, or SIGTERM arrives).
trap 'echo "SIGTERM received, exiting"; exit 0' TERM
echo "heartbeat job started as $WEBJOBS_NAME (run $WEBJOBS_RUN_ID)"
n=0
while true; do
    if [ -f "$WEBJOBS_SHUTDOWN_FILE" ]; then
        echo "shutdown file seen, exiting"
        exit 0
    fi
    n=$((n + 1))
    echo "beat $n at $(date -u +%H:%M:%S)"
    sleep 3 &
    wait $!
done
