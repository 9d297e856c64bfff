//! Parsing Workerman's command-line verbs.

use crate::OpsError;

/// One command-line verb (Workerman's `php start.php <verb>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// No verb: run in the foreground (as `start` without `-d`).
    Foreground,
    /// `start [-d]`: start; `-d` detaches as a daemon.
    Start {
        /// `-d`.
        daemon: bool,
    },
    /// `stop [-g]`: stop; `-g` waits for connections to finish (bounded).
    Stop {
        /// `-g`.
        graceful: bool,
    },
    /// `restart [-d] [-g]`: stop then start.
    Restart {
        /// `-d`.
        daemon: bool,
        /// `-g`.
        graceful: bool,
    },
    /// `reload [-g]`: zero-downtime replacement of the running process.
    Reload {
        /// `-g`.
        graceful: bool,
    },
    /// `status [-d]`: the status table; `-d` refreshes it every second.
    Status {
        /// `-d`.
        live: bool,
    },
    /// `connections`: every open connection.
    Connections,
    /// `metrics`: Prometheus text.
    Metrics,
}

/// Usage text listing the verbs.
pub const USAGE: &str =
    "usage: <program> [start [-d] | stop [-g] | restart [-d] [-g] | reload [-g] | status [-d] | connections | metrics]
  start        run in the foreground (-d: as a daemon)
  stop         stop (-g: graceful, wait for connections up to graceful_stop_timeout)
  restart      stop then start (-d: daemon, -g: graceful stop)
  reload       zero-downtime replacement by a fresh copy of the binary (-g: graceful)
  status       status table (-d: refresh every second)
  connections  list open connections
  metrics      Prometheus metrics";

/// Parses the verb and its flags (`args` excludes the program name and any
/// application-specific arguments). An empty list means [`Command::Foreground`].
pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Command, OpsError> {
    let Some((verb, flags)) = args.split_first() else { return Ok(Command::Foreground) };
    let mut d = false;
    let mut g = false;
    for f in flags {
        match f.as_ref() {
            "-d" => d = true,
            "-g" => g = true,
            "-q" => {}
            other => return Err(OpsError::Usage(format!("unknown flag {other:?}"))),
        }
    }
    let bad = |flag: &str| Err(OpsError::Usage(format!("{flag} is not valid for {}", verb.as_ref())));
    Ok(match verb.as_ref() {
        "start" if !g => Command::Start { daemon: d },
        "stop" if !d => Command::Stop { graceful: g },
        "restart" => Command::Restart { daemon: d, graceful: g },
        "reload" if !d => Command::Reload { graceful: g },
        "status" if !g => Command::Status { live: d },
        "connections" if !d && !g => Command::Connections,
        "metrics" if !d && !g => Command::Metrics,
        "start" | "status" => return bad("-g"),
        "stop" | "reload" | "connections" | "metrics" => return bad(if d { "-d" } else { "-g" }),
        other => return Err(OpsError::Usage(format!("unknown command {other:?}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs() {
        assert_eq!(parse::<&str>(&[]).unwrap(), Command::Foreground);
        assert_eq!(parse(&["start", "-d"]).unwrap(), Command::Start { daemon: true });
        assert_eq!(parse(&["stop", "-g"]).unwrap(), Command::Stop { graceful: true });
        assert_eq!(parse(&["restart", "-g", "-d"]).unwrap(), Command::Restart { daemon: true, graceful: true });
        assert_eq!(parse(&["reload"]).unwrap(), Command::Reload { graceful: false });
        assert_eq!(parse(&["status", "-d"]).unwrap(), Command::Status { live: true });
        assert_eq!(parse(&["connections"]).unwrap(), Command::Connections);
        assert!(parse(&["bogus"]).is_err());
        assert!(parse(&["stop", "-x"]).is_err());
        assert!(parse(&["stop", "-d"]).is_err());
    }
}
