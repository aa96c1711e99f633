#!/bin/sh
# mix.sh [ROUNDS]: a container whose processes come and go, for tracing a
# whole container. Each round starts a static C workload holding 24 MiB and,
# a second later, a static Go workload holding 32 MiB of heap; each holds
# its memory for 3 s and exits. A round takes 5 s:
#
#   t=0 memops starts, 24 MiB     t=1 goheap starts, 32 MiB
#   t=3 memops exits              t=4 goheap exits            t=5 next round
#
# Four rounds (the default) take about 20 s. Prints "mix: round N" as each
# round starts and "mix: done" at the end; the workloads' own lines go to
# the same stdout. Exits 0 when every workload did.
rounds=${1:-4}
round=1
while [ "$round" -le "$rounds" ]; do
	echo "mix: round $round"
	/workloads/memops map A 24M \; touch A 0 24M \; hold 3 &
	c_workload=$!
	sleep 1
	/workloads/goheap -alloc-mib 32 -steps "" -hold 3s &
	go_workload=$!
	wait "$c_workload" || exit 1
	wait "$go_workload" || exit 1
	sleep 1
	round=$((round + 1))
done
echo "mix: done"
