// nettrap's Java agent (the `nettrap-agent.jar` that `JAVA_TOOL_OPTIONS=-javaagent:...` loads
// into every JVM of a `nettrap run` of Maven): makes JUnit Platform find nettrap's
// TestExecutionListener in the JVM that runs the tests (Surefire's fork), and does nothing
// anywhere else.
//
// The listener and its `META-INF/services` entry live in a second jar beside this one,
// `nettrap-junit.jar`, appended to the system class loader's search only when JUnit Platform's
// launcher is on the system class path: a services entry visible in Maven's own JVM, or in a
// JVM whose JUnit lives in a child class loader, would fail JUnit's ServiceLoader there
// (the listener could not see its interface). Cost in other JVMs: one resource lookup.
package nettrap.agent;

import java.io.File;
import java.lang.instrument.Instrumentation;
import java.util.jar.JarFile;

public final class Agent {
    private Agent() {}

    public static void premain(String args, Instrumentation inst) {
        if (!Timeline.enabled()) {
            return;
        }
        try {
            ClassLoader system = ClassLoader.getSystemClassLoader();
            if (system.getResource("org/junit/platform/launcher/TestExecutionListener.class") == null) {
                return; // Maven's own JVM, javac, a JVM without JUnit Platform
            }
            File self = new File(Agent.class.getProtectionDomain().getCodeSource().getLocation().toURI());
            File listener = new File(self.getParentFile(), "nettrap-junit.jar");
            inst.appendToSystemClassLoaderSearch(new JarFile(listener));
        } catch (Throwable e) {
            Timeline.failed("cannot load nettrap-junit.jar: " + e);
        }
    }
}
