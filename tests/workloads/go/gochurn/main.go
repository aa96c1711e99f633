// gochurn is an allocation-churn benchmark: it allocates short-lived objects
// of mixed sizes in a loop, keeping only a small rolling window alive, so
// the garbage collector and the runtime's page allocator stay busy.
//
//	gochurn [-seconds 5 | -iterations N] [-warmup 100000] [-wait]
//
// With -iterations N it measures N allocations, otherwise as many as fit in
// -seconds. The warm-up allocations are not measured. With -wait it prints
// {"event":"ready"} after the warm-up and waits for a line on stdin.
//
// Last line: {"benchmark":"gochurn","seconds":S,"operations":ALLOCS,
// "bytes":B,"num_gc":N,"page_faults":F} where num_gc counts collections
// during the measured part, and page_faults is every page fault of the
// process since it started, as the kernel counts them (getrusage), read
// just before the line is printed.
package main

import (
	"flag"
	"fmt"
	"runtime"
	"syscall"
	"time"

	"memtrace.test/workloads/internal/workload"
)

// sizes mixes tiny, small and large (over 32 KiB, span-sized) objects.
var sizes = [...]int{16, 48, 128, 512, 2048, 8192, 40 << 10}

// window is the rolling set of live objects; older ones become garbage.
var window [1024][]byte

type result struct {
	Benchmark  string  `json:"benchmark"`
	Seconds    float64 `json:"seconds"`
	Operations uint64  `json:"operations"`
	Bytes      uint64  `json:"bytes"`
	NumGC      uint32  `json:"num_gc"`
	PageFaults int64   `json:"page_faults"`
}

func main() {
	seconds := flag.Float64("seconds", 5, "how long to measure, unless -iterations is given")
	iterations := flag.Uint64("iterations", 0, "allocations to measure; 0 means measure for -seconds")
	warmup := flag.Uint64("warmup", 100000, "unmeasured allocations before measuring")
	wait := flag.Bool("wait", false, "wait for a line on stdin before measuring")
	flag.Parse()
	if *iterations == 0 && *seconds <= 0 {
		workload.Fatal(fmt.Errorf("need -iterations or a positive -seconds"))
	}

	churn(0, *warmup)
	if *wait {
		workload.WaitForGo()
	}

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	var ops, bytes uint64
	if *iterations > 0 {
		ops, bytes = *iterations, churn(*warmup, *iterations)
	} else {
		deadline := start.Add(time.Duration(*seconds * float64(time.Second)))
		// Check the clock only every batch, so the loop measures allocation.
		const batch = 4096
		for time.Now().Before(deadline) {
			bytes += churn(*warmup+ops, batch)
			ops += batch
		}
	}
	elapsed := time.Since(start).Seconds()
	runtime.ReadMemStats(&after)
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		workload.Fatal(fmt.Errorf("getrusage: %w", err))
	}
	workload.Emit(result{"gochurn", elapsed, ops, bytes, after.NumGC - before.NumGC,
		usage.Minflt + usage.Majflt})
}

// churn makes count allocations, continuing the size pattern from allocation
// number first, and returns the bytes allocated.
//
//go:noinline
func churn(first, count uint64) uint64 {
	var total uint64
	for i := first; i < first+count; i++ {
		size := sizes[i%uint64(len(sizes))]
		b := make([]byte, size)
		b[0] = byte(i)
		window[i%uint64(len(window))] = b
		total += uint64(size)
	}
	return total
}
