// Compile-only stub of the JUnit Platform 1.x API (not packaged): only what nettrap's listener
// uses, with the real signatures (checked by tests/maven.rs, which compiles the listener against
// the real jars too).
package org.junit.platform.launcher;

import org.junit.platform.engine.TestExecutionResult;

public interface TestExecutionListener {
    default void testPlanExecutionStarted(TestPlan testPlan) {}

    default void testPlanExecutionFinished(TestPlan testPlan) {}

    default void dynamicTestRegistered(TestIdentifier testIdentifier) {}

    default void executionSkipped(TestIdentifier testIdentifier, String reason) {}

    default void executionStarted(TestIdentifier testIdentifier) {}

    default void executionFinished(TestIdentifier testIdentifier, TestExecutionResult result) {}
}
