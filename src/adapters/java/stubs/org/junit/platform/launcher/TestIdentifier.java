// Compile-only stub of the JUnit Platform 1.x API (not packaged): only what nettrap's listener
// uses, with the real signatures (checked by tests/maven.rs, which compiles the listener against
// the real jars too).
package org.junit.platform.launcher;

import java.util.Optional;
import org.junit.platform.engine.TestSource;

public final class TestIdentifier {
    public String getUniqueId() {
        throw new UnsupportedOperationException();
    }

    public String getLegacyReportingName() {
        throw new UnsupportedOperationException();
    }

    public boolean isTest() {
        throw new UnsupportedOperationException();
    }

    public Optional<TestSource> getSource() {
        throw new UnsupportedOperationException();
    }
}
