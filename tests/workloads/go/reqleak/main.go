// reqleak reproduces a request-driven leak: the handler keeps every request
// body in a global slice that is never trimmed, so memory grows with traffic.
//
//	reqleak [-requests 1000] [-body-kib 64] [-rate 0] [-forever] [-hold 30s]
//
// The server listens on 127.0.0.1 (random port) and also serves
// net/http/pprof; a built-in client POSTs -requests bodies of -body-kib KiB
// to it over loopback at up to -rate requests per second ("100" or "100/s";
// 0 is unlimited), then the process holds for -hold. With -forever the
// client never stops, so under a memory limit the process is eventually
// OOM-killed.
//
// Output, one JSON object per line: {"event":"pprof","addr":...}, memory
// snapshots with event "memstats" once a second, and
// {"event":"requests_done",...} when a bounded client loop ends. Both add
// "requests", "errors" and "remembered_bytes" (body bytes retained so far).
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"memtrace.test/workloads/internal/workload"
)

var (
	rememberedMu sync.Mutex
	// remembered holds every request body ever received, back to back.
	remembered []byte

	rememberedBytes atomic.Int64
	sent, failed    atomic.Uint64
)

type snapshot struct {
	workload.Stats
	Requests        uint64 `json:"requests"`
	Errors          uint64 `json:"errors"`
	RememberedBytes int64  `json:"remembered_bytes"`
}

func takeSnapshot(event string) snapshot {
	return snapshot{workload.ReadStats(event), sent.Load(), failed.Load(), rememberedBytes.Load()}
}

// rate is a -rate value: requests per second, written "R" or "R/s".
type rate float64

func (r *rate) String() string { return strconv.FormatFloat(float64(*r), 'g', -1, 64) }

func (r *rate) Set(s string) error {
	v, err := strconv.ParseFloat(strings.TrimSuffix(s, "/s"), 64)
	if err != nil || v < 0 {
		return fmt.Errorf("want a non-negative number of requests per second, like 100/s")
	}
	*r = rate(v)
	return nil
}

func main() {
	requests := flag.Uint64("requests", 1000, "requests the built-in client sends")
	bodyKiB := flag.Int("body-kib", 64, "size of each request body in KiB")
	var perSecond rate
	flag.Var(&perSecond, "rate", "requests per second, 0 for as fast as possible")
	forever := flag.Bool("forever", false, "keep sending until killed")
	hold := flag.Duration("hold", 30*time.Second, "how long to stay alive after the requests")
	wait := flag.Bool("wait", false, "wait for a line on stdin before sending requests (so a tracer can attach)")
	flag.Parse()
	if *bodyKiB <= 0 {
		workload.Fatal(fmt.Errorf("-body-kib must be positive"))
	}

	http.HandleFunc("/upload", upload)
	addr := workload.Serve("127.0.0.1:0")
	workload.EmitEverySecond(func() any { return takeSnapshot("memstats") })

	if *wait {
		workload.WaitForGo()
	}
	body := bytes.Repeat([]byte{'x'}, *bodyKiB<<10)
	var gap time.Duration
	if perSecond > 0 {
		gap = time.Duration(float64(time.Second) / float64(perSecond))
	}
	url := "http://" + addr + "/upload"
	for start := time.Now(); *forever || sent.Load() < *requests; {
		if err := post(url, body); err != nil {
			failed.Add(1)
		}
		n := sent.Add(1)
		// Pace against the start time, so slow requests do not lower the rate.
		time.Sleep(time.Until(start.Add(time.Duration(n) * gap)))
	}
	workload.Emit(takeSnapshot("requests_done"))
	time.Sleep(*hold)
}

// upload reads the whole body into a buffer of exactly its size and keeps it.
func upload(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength <= 0 {
		http.Error(w, "need a body with Content-Length", http.StatusLengthRequired)
		return
	}
	body := make([]byte, r.ContentLength)
	if _, err := io.ReadFull(r.Body, body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	remember(body)
	w.WriteHeader(http.StatusNoContent)
}

// remember is the leak: every body is appended to one global slice that is
// never truncated, as a cache or an audit log that forgot its bound would.
//
//go:noinline
func remember(body []byte) {
	rememberedMu.Lock()
	remembered = append(remembered, body...)
	rememberedMu.Unlock()
	rememberedBytes.Add(int64(len(body)))
}

func post(url string, body []byte) error {
	resp, err := http.Post(url, "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}
