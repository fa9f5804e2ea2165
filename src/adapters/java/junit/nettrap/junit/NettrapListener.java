// nettrap's JUnit Platform listener: writes each test's start and end (outcome, duration) and
// skipped tests into nettrap's attribution timeline (see nettrap.agent.Timeline), and the
// process's role. JUnit Platform finds it through META-INF/services (auto-registered
// TestExecutionListener) once nettrap's agent has put this jar on the system class path.
//
// Scope of an interval: tests run one at a time (JUnit's default), a start/end without `tid`
// covers the whole process, so calls from threads a test starts (executors, HTTP clients) and
// from child processes (which take their parent's test) are the test's. With Jupiter's parallel
// execution (`junit.jupiter.execution.parallel.enabled`), each start/end carries the kernel id
// of the thread that runs the test: only calls on that thread are the test's.
//
// Test ids join with Surefire's JUnit XML (`target/surefire-reports/TEST-*.xml`): the method's
// class name (nested classes with `$`), a dot, and the name Surefire gives the case: the
// method name for a plain test, JUnit's legacy reporting name otherwise (`pages(int)[1]` for a
// parameterized invocation). Tests without a method source use their legacy reporting name.
//
// Class containers are written as fixtures (`com.example.SearchTest (class)`), so calls of
// @BeforeAll/@AfterAll methods are named in the report when tests run one at a time.
// Java cannot set environment variables in its own process: NETTRAP_TEST is not set.
package nettrap.junit;

import java.util.ArrayDeque;
import java.util.Deque;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.ConcurrentHashMap;
import nettrap.agent.Timeline;
import org.junit.platform.engine.TestExecutionResult;
import org.junit.platform.engine.TestSource;
import org.junit.platform.engine.support.descriptor.ClassSource;
import org.junit.platform.engine.support.descriptor.MethodSource;
import org.junit.platform.launcher.TestExecutionListener;
import org.junit.platform.launcher.TestIdentifier;
import org.junit.platform.launcher.TestPlan;

public final class NettrapListener implements TestExecutionListener {
    private static final String PARALLEL = "junit.jupiter.execution.parallel.enabled";
    private static volatile boolean roleWritten;

    private final boolean on = Timeline.enabled();
    private final String runner;
    private final Map<String, Long> started = new ConcurrentHashMap<String, Long>();
    private volatile boolean perThread;
    private volatile TestPlan plan;
    /** Class containers running (tests one at a time only), innermost first. */
    private final Deque<String> classes = new ArrayDeque<String>();
    /** The class whose fixture interval is open: outside its tests. */
    private String openFixture;

    public NettrapListener() {
        String command = System.getProperty("sun.java.command", "");
        runner = command.contains("surefire") ? "maven" : "junit-platform";
    }

    @Override
    public void testPlanExecutionStarted(TestPlan testPlan) {
        if (!on) {
            return;
        }
        try {
            plan = testPlan;
            perThread = parallel(testPlan);
            if (!roleWritten) {
                roleWritten = true;
                String fork = forkNumber();
                String role = runner.equals("maven")
                        ? (fork != null ? "surefire fork " + fork : "surefire fork")
                        : "junit-platform";
                Timeline.emit("process", System.nanoTime(),
                        ",\"runner\":" + Timeline.str(runner) + ",\"role\":" + Timeline.str(role));
            }
        } catch (Throwable e) {
            Timeline.failed("testPlanExecutionStarted: " + e);
        }
    }

    /**
     * Surefire's fork number: its booter's arguments name the fork `...-jvmRun<N>` (Surefire
     * 2.x and 3.x); it sets no property with it.
     */
    private static String forkNumber() {
        String command = System.getProperty("sun.java.command", "");
        int i = command.indexOf("-jvmRun");
        if (i < 0) {
            return null;
        }
        int j = i + "-jvmRun".length();
        int k = j;
        while (k < command.length() && Character.isDigit(command.charAt(k))) {
            k++;
        }
        return k > j ? command.substring(j, k) : null;
    }

    private static boolean parallel(TestPlan testPlan) {
        try {
            Optional<Boolean> p = testPlan.getConfigurationParameters().getBoolean(PARALLEL);
            return p.isPresent() && p.get();
        } catch (Throwable e) {
            // JUnit Platform before 1.8 has no TestPlan#getConfigurationParameters
            return Boolean.parseBoolean(System.getProperty(PARALLEL));
        }
    }

    @Override
    public void executionStarted(TestIdentifier id) {
        long t = System.nanoTime();
        if (!on) {
            return;
        }
        try {
            if (id.isTest()) {
                if (!perThread) {
                    synchronized (classes) {
                        fixture(null, t);
                    }
                }
                started.put(id.getUniqueId(), t);
                Timeline.emit("start", t, ",\"test\":" + Timeline.str(testId(id))
                        + ",\"runner\":" + Timeline.str(runner) + thread());
            } else if (!perThread) {
                String c = className(id);
                if (c != null) {
                    synchronized (classes) {
                        classes.push(c);
                        fixture(c, t);
                    }
                }
            }
        } catch (Throwable e) {
            Timeline.failed("executionStarted: " + e);
        }
    }

    @Override
    public void executionFinished(TestIdentifier id, TestExecutionResult result) {
        long t = System.nanoTime();
        if (!on) {
            return;
        }
        try {
            if (id.isTest()) {
                Long start = started.remove(id.getUniqueId());
                String outcome;
                switch (result.getStatus().name()) {
                    case "SUCCESSFUL": outcome = "passed"; break;
                    case "ABORTED": outcome = "skipped"; break; // a failed assumption
                    default: outcome = "failed";
                }
                String duration = start == null ? "" : ",\"duration_s\":" + ((t - start) / 1e9);
                Timeline.emit("end", t, ",\"test\":" + Timeline.str(testId(id))
                        + ",\"outcome\":\"" + outcome + "\"" + duration + thread());
                if (!perThread) {
                    synchronized (classes) {
                        fixture(classes.peek(), t);
                    }
                }
            } else if (!perThread && className(id) != null) {
                synchronized (classes) {
                    classes.poll();
                    fixture(classes.peek(), t);
                }
            }
        } catch (Throwable e) {
            Timeline.failed("executionFinished: " + e);
        }
    }

    @Override
    public void executionSkipped(TestIdentifier id, String reason) {
        long t = System.nanoTime();
        if (!on) {
            return;
        }
        try {
            if (id.isTest()) {
                skipped(id, t);
                return;
            }
            // A disabled class: its tests never start.
            TestPlan p = plan;
            if (p != null) {
                for (TestIdentifier d : p.getDescendants(id)) {
                    if (d.isTest()) {
                        skipped(d, t);
                    }
                }
            }
        } catch (Throwable e) {
            Timeline.failed("executionSkipped: " + e);
        }
    }

    /**
     * Closes the open class fixture interval and opens `c`'s (none if null): calls outside tests
     * (@BeforeAll, @AfterAll, between tests) carry the class that runs them.
     */
    private void fixture(String c, long t) {
        if (openFixture != null && !openFixture.equals(c)) {
            Timeline.emit("fixture", t, ",\"state\":\"end\",\"name\":" + Timeline.str(openFixture)
                    + ",\"scope\":\"class\"");
            openFixture = null;
        }
        if (c != null && openFixture == null) {
            Timeline.emit("fixture", t, ",\"state\":\"start\",\"name\":" + Timeline.str(c)
                    + ",\"scope\":\"class\"");
            openFixture = c;
        }
    }

    private void skipped(TestIdentifier id, long t) {
        String test = ",\"test\":" + Timeline.str(testId(id));
        Timeline.emit("start", t, test + ",\"runner\":" + Timeline.str(runner) + thread());
        Timeline.emit("end", t, test + ",\"outcome\":\"skipped\",\"duration_s\":0" + thread());
    }

    private String thread() {
        return perThread ? ",\"tid\":" + Timeline.tid() : "";
    }

    private static String className(TestIdentifier id) {
        Optional<TestSource> s = id.getSource();
        if (s.isPresent() && s.get() instanceof ClassSource) {
            return ((ClassSource) s.get()).getClassName();
        }
        return null;
    }

    /** The test's id, as Surefire names its case: `<class>.<name>`. */
    static String testId(TestIdentifier id) {
        String legacy = id.getLegacyReportingName();
        Optional<TestSource> s = id.getSource();
        if (s.isPresent() && s.get() instanceof MethodSource) {
            MethodSource m = (MethodSource) s.get();
            String method = m.getMethodName();
            String name = legacy.equals(method + "()") ? method : legacy;
            return m.getClassName() + "." + name;
        }
        return legacy;
    }
}
