module memtrace.test/workloads

go 1.19
