// Appends events to nettrap's attribution timeline ($NETTRAP_RUN_DIR/timeline.jsonl; format:
// src/attribution/SPEC.md): one JSON object per line, one write() per line, the file opened by
// path in append mode. Never throws into the program: a timeline that cannot be written is
// given up silently. `t` is System.nanoTime(), which HotSpot takes from
// clock_gettime(CLOCK_MONOTONIC) on Linux, the clock of nettrap's call records.
package nettrap.agent;

import java.io.FileOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;

public final class Timeline {
    private static final String DIR = System.getenv("NETTRAP_RUN_DIR");
    private static final int MAX_STR = 1000; // keeps a line well under 4 KiB
    private static final long PID = readId("/proc/self", 0);
    private static final ThreadLocal<Long> TID = new ThreadLocal<Long>();
    private static FileOutputStream out;
    private static boolean broken;
    private static boolean failedOnce;

    private Timeline() {}

    public static boolean enabled() {
        return DIR != null && !DIR.isEmpty() && PID > 0;
    }

    public static long pid() {
        return PID;
    }

    /** The calling thread's kernel thread id, from the /proc/thread-self link (pid if none). */
    public static long tid() {
        Long t = TID.get();
        if (t == null) {
            t = readId("/proc/thread-self", PID);
            TID.set(t);
        }
        return t;
    }

    /** The last path component of a /proc link's target, as a number. */
    private static long readId(String link, long fallback) {
        try {
            Path target = Files.readSymbolicLink(Paths.get(link));
            return Long.parseLong(target.getFileName().toString());
        } catch (Throwable e) {
            return fallback;
        }
    }

    /** A JSON string, cut to MAX_STR characters. */
    public static String str(String s) {
        if (s == null) {
            return "null";
        }
        if (s.length() > MAX_STR) {
            s = s.substring(0, MAX_STR) + "...";
        }
        StringBuilder b = new StringBuilder(s.length() + 2).append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"': b.append("\\\""); break;
                case '\\': b.append("\\\\"); break;
                case '\n': b.append("\\n"); break;
                case '\r': b.append("\\r"); break;
                case '\t': b.append("\\t"); break;
                default:
                    if (c < 0x20 || Character.isSurrogate(c)) {
                        // lone or paired surrogates: escaped, so a cut pair stays valid JSON
                        b.append(String.format("\\u%04x", (int) c));
                    } else {
                        b.append(c);
                    }
            }
        }
        return b.append('"').toString();
    }

    /** One event: `fields` is the rest of the JSON object (",\"k\":v..."), already encoded. */
    public static synchronized void emit(String ev, long t, String fields) {
        if (broken || !enabled()) {
            return;
        }
        byte[] line = ("{\"ev\":" + str(ev) + ",\"t\":" + t + ",\"pid\":" + PID + fields + "}\n")
                .getBytes(StandardCharsets.UTF_8);
        try {
            if (out == null) {
                out = new FileOutputStream(DIR + "/timeline.jsonl", true);
            }
            try {
                out.write(line);
            } catch (IOException e) {
                out = new FileOutputStream(DIR + "/timeline.jsonl", true); // reopen once
                out.write(line);
            }
        } catch (Throwable e) {
            broken = true;
        }
    }

    /** Says once that the adapter could not do its job: nettrap prints it in one line. */
    public static synchronized void failed(String why) {
        if (failedOnce) {
            return;
        }
        failedOnce = true;
        emit("adapter", System.nanoTime(),
                ",\"runner\":\"maven\",\"status\":\"failed\",\"why\":" + str(why));
    }
}
