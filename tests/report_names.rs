//! Names in the report: a unittest suite connects to `api.payments.example` (127.0.0.2 in the
//! isolated run's private /etc/hosts) and to a bare address; the summary, the to-do list and
//! `nettrap report` show the name with its address, the address alone where no name was used,
//! and a lookup of a name no resolver answers as a lookup of that name.

mod common;
use common::*;
use std::process::Command;

const SUITE: &str = r#"
import socket
import unittest


def call(host):
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect_ex((host, 443))  # nothing listens: refused at once
    finally:
        s.close()


class Names(unittest.TestCase):
    def test_charge(self):
        call("api.payments.example")

    def test_refund(self):
        call("api.payments.example")
        call("api.payments.example")

    def test_numeric(self):
        call("127.0.0.3")

    def test_lookup(self):
        try:
            socket.getaddrinfo("api.unknown.example", 443)  # no resolver answers
        except OSError:
            pass

    def test_pure(self):
        pass
"#;

#[test]
fn names_are_shown_with_their_addresses_in_every_rendering() {
    let dir = scratch("report-names-suite");
    std::fs::write(dir.join("test_names.py"), SUITE).unwrap();
    let run = run_in(
        "report-names",
        &dir,
        &[],
        &["python3", "-m", "unittest", "-q", "test_names"],
    );
    assert_eq!(run.code(), 0, "{}", run.stderr());

    // JSON: the address and the name, both.
    let charge = &run.test("test_names.Names.test_charge")["calls"];
    assert_eq!(charge.as_array().unwrap().len(), 1, "{charge}");
    assert_eq!(charge[0]["address"], "127.0.0.2", "{charge}");
    assert_eq!(charge[0]["port"], 443, "{charge}");
    assert_eq!(charge[0]["host"], "api.payments.example", "{charge}");

    let err = run.stderr();
    for line in [
        "nettrap: 2 categories of external calls in 4 of 5 tests\n",
        "  external-api (443)    3 tests     4 calls  recorded\n",
        "    api.payments.example:443 (127.0.0.2): 2 tests, 3 calls\n",
        "    127.0.0.3:443: 1 test, 1 call\n",
        "\n    dns lookup of api.unknown.example: 1 test, ",
    ] {
        assert!(err.contains(line), "{line:?} not in:\n{err}");
    }
    let todo = &run.todo;
    for block in [
        "## external-api: 3 tests, 4 calls",
        "\n\n### api.payments.example: 2 tests, 3 calls\n\n\
         Mock the calls to api.payments.example:443 (127.0.0.2).\n\n\
         #### `test_names.py:10 in call`: 2 tests, 3 calls\n\n\
         - [ ] `test_names.Names.test_refund`: 2 calls (call 2)\n\
         - [ ] `test_names.Names.test_charge`: 1 call (call 1)\n\n",
        "### 127.0.0.3:443: 1 test, 1 call\n\n",
        "### dns lookup of api.unknown.example: 1 test, ",
        "Mock the lookup of api.unknown.example: no call to it followed.\n",
        "- [ ] `test_names.Names.test_lookup`: ",
    ] {
        assert!(todo.contains(block), "{block:?} not in:\n{todo}");
    }
    assert!(!todo.contains("### 127.0.0.2:443"), "{todo}");

    // `nettrap report` renders the saved report the same way.
    let file = run.dir.join("report.json");
    let render = |format: &str| {
        let out = Command::new(nettrap())
            .args(["report", "--format", format])
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let text = render("text");
    assert!(
        text.contains("    api.payments.example:443 (127.0.0.2): 2 tests, 3 calls\n"),
        "{text}"
    );
    assert!(err.contains(&text), "{text}\n---\n{err}");
    assert_eq!(&render("markdown"), todo);
}
