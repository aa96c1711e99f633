// Package workload holds what memtrace's Go test workloads share: JSON-line
// output, memory statistics, a loopback-only HTTP listener serving
// net/http/pprof, and the stdin handshake that lets a test attach a tracer
// before the interesting part starts.
package workload

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof/ on http.DefaultServeMux
	"os"
	"runtime"
	"sync"
	"time"
)

// PageSize is the base page size; writing one byte per page makes memory resident.
const PageSize = 4096

var emitMu sync.Mutex

// Emit writes v as one JSON line to stdout. Stdout is unbuffered, so the line
// is visible to the test at once; the mutex keeps lines from interleaving.
func Emit(v any) {
	line, err := json.Marshal(v)
	if err != nil {
		Fatal(fmt.Errorf("encoding %T: %w", v, err))
	}
	emitMu.Lock()
	defer emitMu.Unlock()
	os.Stdout.Write(append(line, '\n'))
}

// Fatal reports err on stderr and exits with status 1.
func Fatal(err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", os.Args[0], err)
	os.Exit(1)
}

// Stats is the memory snapshot every workload prints. Programs embed it in
// their own event structs to add fields.
type Stats struct {
	Event        string `json:"event"`
	Pid          int    `json:"pid"`
	HeapAlloc    uint64
	HeapInuse    uint64
	HeapIdle     uint64
	HeapReleased uint64
	HeapSys      uint64
	Sys          uint64
	NumGC        uint32
	Goroutines   int `json:"goroutines"`
}

// ReadStats takes a snapshot labelled with event.
func ReadStats(event string) Stats {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return Stats{
		Event:        event,
		Pid:          os.Getpid(),
		HeapAlloc:    m.HeapAlloc,
		HeapInuse:    m.HeapInuse,
		HeapIdle:     m.HeapIdle,
		HeapReleased: m.HeapReleased,
		HeapSys:      m.HeapSys,
		Sys:          m.Sys,
		NumGC:        m.NumGC,
		Goroutines:   runtime.NumGoroutine(),
	}
}

// EmitEverySecond calls snapshot once a second, for as long as the process
// lives, and emits what it returns.
func EmitEverySecond(snapshot func() any) {
	go func() {
		for range time.Tick(time.Second) {
			Emit(snapshot())
		}
	}()
}

// Serve listens on addr, which must be a loopback address ("127.0.0.1:0"
// picks a free port), and serves http.DefaultServeMux there, including
// net/http/pprof. It emits {"event":"pprof","addr":...} and returns the
// address actually bound.
func Serve(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		Fatal(fmt.Errorf("listen address %q: %w", addr, err))
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		Fatal(fmt.Errorf("listen address %q: only loopback IP addresses are allowed", addr))
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		Fatal(err)
	}
	go func() { Fatal(http.Serve(ln, nil)) }()
	bound := ln.Addr().String()
	Emit(struct {
		Event string `json:"event"`
		Addr  string `json:"addr"`
	}{"pprof", bound})
	return bound
}

// WaitForGo prints {"event":"ready"} and blocks until stdin yields a line or EOF.
func WaitForGo() {
	Emit(struct {
		Event string `json:"event"`
	}{"ready"})
	bufio.NewReader(os.Stdin).ReadString('\n')
}
