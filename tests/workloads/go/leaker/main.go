// leaker grows its Go heap a chunk at a time and never lets go, until
// something kills it: the OOM killer, under a container's memory limit.
//
//	leaker [-chunk-kib 1024] [-every 10ms] [-max-mib 4096] [-wait-usr1]
//
// With -wait-usr1 it emits {"event":"waiting"} and starts only on SIGUSR1,
// so a tracer can attach to a program that runs as a container's first
// process (stdin is not at hand there). It then emits
// {"event":"grown","bytes":B} after every 16 MiB. -max-mib guards runs
// without a limit: past it the program exits 4.
//
// Every page is written by main.retain, called from main.grow: the stack
// that holds the memory is main.retain ← main.grow ← main.main ←
// runtime.main ← runtime.goexit.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"memtrace.test/workloads/internal/workload"
)

// kept holds every chunk, so none is ever collected.
var kept [][]byte

type grown struct {
	Event string `json:"event"`
	Bytes int    `json:"bytes"`
}

func main() {
	chunkKiB := flag.Int("chunk-kib", 1024, "size of each allocation in KiB")
	every := flag.Duration("every", 10*time.Millisecond, "pause between allocations")
	maxMiB := flag.Int("max-mib", 4096, "exit 4 after growing this much")
	waitUsr1 := flag.Bool("wait-usr1", false, "start growing on SIGUSR1")
	flag.Parse()
	if *chunkKiB <= 0 || *maxMiB <= 0 {
		workload.Fatal(fmt.Errorf("-chunk-kib and -max-mib must be positive"))
	}
	if *waitUsr1 {
		start := make(chan os.Signal, 1)
		signal.Notify(start, syscall.SIGUSR1)
		workload.Emit(struct {
			Event string `json:"event"`
		}{"waiting"})
		<-start
	}
	grow(*chunkKiB<<10, *maxMiB<<20, *every)
	fmt.Fprintf(os.Stderr, "leaker: grew %d MiB and nothing stopped it\n", *maxMiB)
	os.Exit(4)
}

// grow retains chunk bytes every pause until max bytes are held.
//
//go:noinline
func grow(chunk, max int, pause time.Duration) {
	for held := chunk; held <= max; held += chunk {
		retain(chunk)
		if held%(16<<20) < chunk {
			workload.Emit(grown{"grown", held})
		}
		time.Sleep(pause)
	}
}

// retain allocates size bytes and writes one byte per page: a large
// allocation comes from fresh, already zero spans, so the writes are what
// makes it resident.
//
//go:noinline
func retain(size int) {
	b := make([]byte, size)
	for i := 0; i < size; i += workload.PageSize {
		b[i] = 1
	}
	kept = append(kept, b)
}
