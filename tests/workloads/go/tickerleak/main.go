// tickerleak reproduces a goroutine leak from a real incident: every request
// starts a heartbeat goroutine around a time.Ticker that is never stopped and
// never told to quit, so each request leaks a goroutine, its stack and a
// runtime timer.
//
//	tickerleak [-requests 2000] [-concurrency 4] [-interval 0s] [-hold 30s]
//
// The server listens on 127.0.0.1 (random port) and also serves
// net/http/pprof; a built-in client sends -requests requests to it over
// loopback, then the process holds for -hold.
//
// Output, one JSON object per line: {"event":"pprof","addr":...}, memory
// snapshots with event "memstats" once a second (they include "goroutines"),
// and {"event":"requests_done",...snapshot...,"requests":N,"errors":N} when
// the client loop ends.
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"memtrace.test/workloads/internal/workload"
)

const heartbeatPeriod = time.Second

var heartbeats atomic.Uint64

type requestsDone struct {
	workload.Stats
	Requests uint64 `json:"requests"`
	Errors   uint64 `json:"errors"`
}

func main() {
	// Each leaked ticker is a few hundred bytes; at Go's default of one heap
	// profile sample per 512 KiB a few thousand of them may get no sample at
	// all. Sample finer, so the heap profile reliably shows time.NewTicker.
	runtime.MemProfileRate = 16 << 10
	requests := flag.Uint64("requests", 2000, "requests the built-in client sends")
	concurrency := flag.Int("concurrency", 4, "client connections sending in parallel")
	interval := flag.Duration("interval", 0, "pause between requests on each connection")
	hold := flag.Duration("hold", 30*time.Second, "how long to stay alive after the requests")
	wait := flag.Bool("wait", false, "wait for a line on stdin before sending requests (so a tracer can attach)")
	flag.Parse()
	if *concurrency <= 0 {
		workload.Fatal(fmt.Errorf("-concurrency must be positive"))
	}

	http.HandleFunc("/subscribe", subscribe)
	addr := workload.Serve("127.0.0.1:0")
	workload.EmitEverySecond(func() any { return workload.ReadStats("memstats") })

	if *wait {
		workload.WaitForGo()
	}
	sent, failed := sendRequests("http://"+addr+"/subscribe", *requests, *concurrency, *interval)
	workload.Emit(requestsDone{workload.ReadStats("requests_done"), sent, failed})
	time.Sleep(*hold)
}

func subscribe(w http.ResponseWriter, r *http.Request) {
	startHeartbeat()
	io.WriteString(w, "subscribed\n")
}

// startHeartbeat is the bug: nothing stops the ticker and nothing ends the
// goroutine once the request that started it is over.
//
//go:noinline
func startHeartbeat() {
	ticker := time.NewTicker(heartbeatPeriod)
	go func() {
		for range ticker.C {
			heartbeats.Add(1)
		}
	}()
}

// sendRequests sends count GET requests from concurrency workers and returns
// how many were sent and how many failed.
func sendRequests(url string, count uint64, concurrency int, interval time.Duration) (sent, failed uint64) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: concurrency}}
	var next, errors atomic.Uint64
	var wg sync.WaitGroup
	for i := 0; i < concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= count {
				if err := get(client, url); err != nil {
					errors.Add(1)
				}
				time.Sleep(interval)
			}
		}()
	}
	wg.Wait()
	return count, errors.Load()
}

func get(client *http.Client, url string) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return err
}
