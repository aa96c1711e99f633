// goheap allocates a known amount of Go heap, makes it resident, then drops
// it and asks the runtime to return it to the OS, so tests can follow Go's
// scavenger (MADV_DONTNEED or MADV_FREE, chosen by GODEBUG=madvdontneed).
//
//	goheap [-alloc-mib 256] [-chunk-kib 64] [-steps free] [-hold 30s]
//	       [-pprof 127.0.0.1:0] [-wait] [-wait-end]
//
// Output, one JSON object per line: {"event":"pprof","addr":...} (with
// -pprof), {"event":"ready"} (with -wait), then memory snapshots with event
// "allocated", "released" (unless -steps ""), and "memstats" once a second
// while holding. With -wait-end it holds until a line comes on stdin
// rather than for -hold, so a test decides when it has seen enough.
package main

import (
	"flag"
	"fmt"
	"runtime"
	"runtime/debug"
	"time"

	"memtrace.test/workloads/internal/workload"
)

// retained keeps the allocated chunks reachable until release.
var retained [][]byte

// allocated is the "allocated" event: a snapshot plus the bytes allocated.
type allocated struct {
	workload.Stats
	AllocBytes int `json:"alloc_bytes"`
}

func main() {
	allocMiB := flag.Int("alloc-mib", 256, "MiB of heap to allocate")
	chunkKiB := flag.Int("chunk-kib", 64, "size of each allocation in KiB")
	steps := flag.String("steps", "free", `what to do after allocating: "free" releases the memory, "" keeps it`)
	hold := flag.Duration("hold", 30*time.Second, "how long to stay alive at the end")
	pprofAddr := flag.String("pprof", "", "serve net/http/pprof on this loopback address")
	wait := flag.Bool("wait", false, "wait for a line on stdin before allocating")
	waitEnd := flag.Bool("wait-end", false, "hold until a line comes on stdin, not for -hold")
	flag.Parse()
	if *allocMiB <= 0 || *chunkKiB <= 0 {
		workload.Fatal(fmt.Errorf("-alloc-mib and -chunk-kib must be positive"))
	}
	if *steps != "free" && *steps != "" {
		workload.Fatal(fmt.Errorf(`-steps must be "free" or "", not %q`, *steps))
	}

	if *pprofAddr != "" {
		workload.Serve(*pprofAddr)
	}
	if *wait {
		workload.WaitForGo()
	}

	total := *allocMiB << 20
	allocate(total, *chunkKiB<<10)
	workload.Emit(allocated{workload.ReadStats("allocated"), total})

	if *steps == "free" {
		release()
		workload.Emit(workload.ReadStats("released"))
	}

	workload.EmitEverySecond(func() any { return workload.ReadStats("memstats") })
	if *waitEnd {
		workload.WaitForGo()
	} else {
		time.Sleep(*hold)
	}
}

// allocate allocates total bytes in chunk-sized slices and writes one byte
// per page: large allocations come from fresh, already zero spans that the
// runtime does not clear, so without the writes they would not be resident.
//
//go:noinline
func allocate(total, chunk int) {
	for done := 0; done < total; done += chunk {
		size := chunk
		if total-done < chunk {
			size = total - done
		}
		b := make([]byte, size)
		for i := 0; i < size; i += workload.PageSize {
			b[i] = 1
		}
		retained = append(retained, b)
	}
}

// release drops every reference, collects the garbage and returns the freed
// pages to the OS at once instead of waiting for the background scavenger.
//
//go:noinline
func release() {
	retained = nil
	runtime.GC()
	debug.FreeOSMemory()
}
