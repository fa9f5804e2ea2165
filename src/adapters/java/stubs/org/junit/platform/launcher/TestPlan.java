// Compile-only stub of the JUnit Platform 1.x API (not packaged): only what nettrap's listener
// uses, with the real signatures (checked by tests/maven.rs, which compiles the listener against
// the real jars too).
package org.junit.platform.launcher;

import java.util.Set;
import org.junit.platform.engine.ConfigurationParameters;

public class TestPlan {
    public Set<TestIdentifier> getDescendants(TestIdentifier parent) {
        throw new UnsupportedOperationException();
    }

    public ConfigurationParameters getConfigurationParameters() {
        throw new UnsupportedOperationException();
    }
}
