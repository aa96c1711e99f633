/*
 * Hot: a Java method the JVM compiles, allocating arrays that are kept, for
 * checking that memtrace names JIT-compiled frames from the perf map that
 * `jcmd PID Compiler.perfmap` has the JVM write.
 *
 *   java -cp DIR Hot [HOLD_MS]
 *
 * Warms up (200,000 arrays of 64 longs, through Hot.hot and Hot.round, so
 * both are compiled), prints {"event":"warm","pid":P}, and waits for a line
 * on stdin (the time to run jcmd). Then it allocates 400,000 more, prints
 * {"event":"done","arrays":N}, and exits after HOLD_MS milliseconds (1500).
 */
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.util.ArrayList;

public class Hot {
    static final ArrayList<long[]> kept = new ArrayList<>();

    static long[] hot(int n) {
        long[] values = new long[n];
        for (int i = 0; i < n; i++) {
            values[i] = i;
        }
        return values;
    }

    static void round(int count) {
        for (int i = 0; i < count; i++) {
            kept.add(hot(64));
        }
    }

    public static void main(String[] args) throws Exception {
        long holdMs = args.length > 0 ? Long.parseLong(args[0]) : 1500;
        round(200_000);
        System.out.println("{\"event\":\"warm\",\"pid\":" + ProcessHandle.current().pid() + "}");
        new BufferedReader(new InputStreamReader(System.in)).readLine();
        round(400_000);
        System.out.println("{\"event\":\"done\",\"arrays\":" + kept.size() + "}");
        Thread.sleep(holdMs);
    }
}
