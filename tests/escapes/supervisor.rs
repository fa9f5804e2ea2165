//! The seccomp supervisor reads exactly what the kernel reads, and never fails silently: a call
//! whose arguments end where the kernel stops reading (socketcall's argument array, sendmmsg's
//! msghdr before an unmapped msg_len) is denied, not let through because an over-long read
//! failed; a call the supervisor chokes on fails the run, not the calls after it; io_uring is
//! refused in every enforce run, `--fail-on` ones included.

use crate::common::*;

const PORT: &str = "9200";

fn fx(name: &str) -> String {
    c_fixture(name).to_str().unwrap().to_string()
}

#[test]
fn a_socketcall_whose_arguments_end_at_a_page_boundary_is_denied() {
    for engine in ["seccomp", "auto"] {
        let run = run_in(
            &format!("page-socketcall-{engine}"),
            &repo(),
            &["--engine", engine, "--deny", PORT],
            &[&fx("page_edges"), "socketcall", PORT],
        );
        let out = run.stdout();
        assert!(
            out.contains("ret=-111 received=0"),
            "{engine}: {out}\n{}",
            run.stderr()
        );
        assert_eq!(run.code(), 86, "{engine}: {}", run.stderr());
        assert_eq!(run.total_calls(), 1, "{engine}");
    }
}

#[test]
fn a_sendmmsg_whose_msg_len_is_unmapped_is_denied() {
    for engine in ["seccomp", "auto"] {
        for kind in ["u", "t"] {
            let run = run_in(
                &format!("page-sendmmsg-{kind}-{engine}"),
                &repo(),
                &["--engine", engine, "--deny", PORT],
                &[&fx("page_edges"), "sendmmsg", kind, PORT],
            );
            let out = run.stdout();
            assert!(
                out.contains("ret=-1 errno=111 received=0"),
                "{engine} {kind}: {out}\n{}",
                run.stderr()
            );
            assert_eq!(run.code(), 86, "{engine} {kind}: {}", run.stderr());
        }
    }
}

#[test]
fn a_call_the_supervisor_cannot_handle_does_not_stop_it() {
    // socketcall with call number 0xffffffff once overflowed the supervisor's arithmetic (a
    // panic in debug builds): the supervisor thread died, the next connect got ENOSYS, and the
    // run said "no external calls", exit 0.
    for engine in ["seccomp", "auto"] {
        let run = run_in(
            &format!("page-badcall-{engine}"),
            &repo(),
            &["--engine", engine, "--deny", PORT],
            &[&fx("page_edges"), "badcall", PORT],
        );
        let out = run.stdout();
        assert!(
            out.contains("bad=-22 ret=-1 errno=111 received=0"),
            "{engine}: {out}\n{}",
            run.stderr()
        );
        assert_eq!(run.code(), 86, "{engine}: {}", run.stderr());
        assert!(run.report["lost"]["supervisor_error"].is_null(), "{engine}");
        assert_eq!(run.total_calls(), 1, "{engine}");
    }
}

#[test]
fn io_uring_is_refused_in_fail_on_runs_too() {
    for engine in ["seccomp", "auto"] {
        let run = run_in(
            &format!("uring-fail-on-{engine}"),
            &repo(),
            &["--engine", engine, "--fail-on", "external-api"],
            &[&fx("bypass"), "io_uring", "9"],
        );
        assert!(
            run.stdout()
                .contains("bypass io_uring: ret=-1 errno=ENOSYS"),
            "{engine}: {}",
            run.stdout()
        );
        assert_eq!(run.report["io_uring"][0]["verdict"], "refused", "{engine}");
    }
}
