// Compile-only stub of the JUnit Platform 1.x API (not packaged): only what nettrap's listener
// uses, with the real signatures (checked by tests/maven.rs, which compiles the listener against
// the real jars too).
package org.junit.platform.engine;

import java.util.Optional;

public interface ConfigurationParameters {
    Optional<Boolean> getBoolean(String key);
}
