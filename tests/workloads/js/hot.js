// hot.js: a JavaScript function that V8 compiles, allocating arrays that are
// kept, for checking that memtrace names JIT-compiled frames from the perf
// map Node writes (`node --perf-basic-prof`).
//
//   node [--perf-basic-prof] hot.js [ROUNDS] [HOLD_MS]
//
// `hot` builds ROUNDS (default 100) arrays of 100,000 doubles and every one
// is kept. Then it prints {"pid":P,"arrays":ROUNDS} and `ready`, and exits
// after HOLD_MS milliseconds (default 1000).
"use strict";

const kept = [];

function hot(n) {
  const values = new Array(n);
  for (let i = 0; i < n; i++) values[i] = i * 1.5;
  return values;
}

const rounds = Number(process.argv[2] || 100);
const holdMs = Number(process.argv[3] || 1000);
for (let round = 0; round < rounds; round++) kept.push(hot(100000));
console.log(JSON.stringify({ pid: process.pid, arrays: kept.length }));
console.log("ready");
setTimeout(() => {}, holdMs);
