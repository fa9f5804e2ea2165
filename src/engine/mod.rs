//! Engines: how a run's calls are intercepted.
//!
//! - `preload` puts the shim into every dynamically linked process through `LD_PRELOAD`.
//! - `seccomp` traps the network system calls of every process of the tree in the kernel and
//!   hands them to a supervisor in nettrap.
//! - `auto` (the default) runs both: the shim where it can be (richer context: the live
//!   environment), the supervisor for the rest, each call counted once (see `seccomp`). Where the
//!   kernel cannot do seccomp user notification, `auto` says so in one line and uses `preload`.

pub mod preload;
pub mod seccomp;

use crate::say;
use anyhow::{Result, bail};
use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    /// LD_PRELOAD shim only (dynamically linked programs that call libc's connect)
    Preload,
    /// seccomp supervisor only (every process, static binaries and Go included)
    Seccomp,
    /// both: the shim where it is loaded, the supervisor for everything else
    Auto,
}

/// Which mechanisms a run uses.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub preload: bool,
    pub seccomp: bool,
}

impl Plan {
    pub fn name(&self) -> &'static str {
        match (self.preload, self.seccomp) {
            (true, true) => "auto",
            (false, true) => "seccomp",
            _ => "preload",
        }
    }
}

/// Starts probing the kernel where `requested` wants seccomp (see [`plan`]).
pub fn start_probe(requested: Engine) -> Option<seccomp::Probe> {
    (requested != Engine::Preload).then(seccomp::Probe::start)
}

/// Decides the mechanisms for `requested`, with the answer of the probe [`start_probe`] gave.
pub fn plan(requested: Engine, probe: Option<seccomp::Probe>) -> Result<Plan> {
    let probe = || probe.map_or_else(seccomp::probe, seccomp::Probe::finish);
    Ok(match requested {
        Engine::Preload => Plan {
            preload: true,
            seccomp: false,
        },
        Engine::Seccomp => match probe() {
            Ok(()) => Plan {
                preload: false,
                seccomp: true,
            },
            Err(why) => bail!("--engine seccomp: {why}"),
        },
        Engine::Auto => match probe() {
            Ok(()) => Plan {
                preload: true,
                seccomp: true,
            },
            Err(why) => {
                say!("nettrap: seccomp engine unavailable ({why}); using the preload engine only");
                Plan {
                    preload: true,
                    seccomp: false,
                }
            }
        },
    })
}
