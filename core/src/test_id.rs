//! Which test is running: the attribution protocol read at the moment of a call.
//!
//! In order: `NETTRAP_TEST` (any runner or adapter may set it to the current test's id, with an
//! optional ` (setup)` / ` (call)` / ` (teardown)` suffix), then pytest's `PYTEST_CURRENT_TEST`
//! (`<nodeid> (<phase>)`). No value means the call was made outside any test.

/// Environment variables consulted, first match wins.
pub const TEST_VARS: [&core::ffi::CStr; 2] = [c"NETTRAP_TEST", c"PYTEST_CURRENT_TEST"];

/// The part of a test a call was made in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    None = 0,
    Setup = 1,
    Call = 2,
    Teardown = 3,
}

impl Phase {
    pub fn from_u8(v: u8) -> Phase {
        match v {
            1 => Phase::Setup,
            2 => Phase::Call,
            3 => Phase::Teardown,
            _ => Phase::None,
        }
    }

    pub fn name(self) -> Option<&'static str> {
        match self {
            Phase::Setup => Some("setup"),
            Phase::Call => Some("call"),
            Phase::Teardown => Some("teardown"),
            Phase::None => None,
        }
    }
}

/// Splits `"tests/a.py::test_x (call)"` into the id and the phase. A value without a known phase
/// suffix is all id.
pub fn split(value: &[u8]) -> (&[u8], Phase) {
    for (suffix, phase) in [
        (&b" (setup)"[..], Phase::Setup),
        (&b" (call)"[..], Phase::Call),
        (&b" (teardown)"[..], Phase::Teardown),
    ] {
        if let Some(id) = value.strip_suffix(suffix) {
            return (id, phase);
        }
    }
    (value, Phase::None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_pytest_values() {
        assert_eq!(
            split(b"t.py::a[x (call)] (call)"),
            (&b"t.py::a[x (call)]"[..], Phase::Call)
        );
        assert_eq!(
            split(b"t.py::a (teardown)"),
            (&b"t.py::a"[..], Phase::Teardown)
        );
        assert_eq!(split(b"pkg/TestFoo"), (&b"pkg/TestFoo"[..], Phase::None));
    }
}
