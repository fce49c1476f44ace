//! The exit codes of `steadfast connect` and `steadfast replay`.

/// Everything was sent (and acknowledged, in reliable mode) and the
/// connection closed normally.
pub(crate) const OK: u8 = 0;
/// Anything else: a file that cannot be read, a message refused.
pub(crate) const FAILURE: u8 = 1;
/// Bad arguments or options.
pub(crate) const USAGE: u8 = 2;
/// The connection could not be made: refused, unknown host, timed out,
/// the upgrade refused.
pub(crate) const CONNECT: u8 = 3;
/// TLS failed: an untrusted or mismatched certificate, a client
/// certificate the server refused, unusable certificate files.
pub(crate) const TLS: u8 = 4;
/// The server closed the connection (its close code is printed) and the
/// client did not reconnect (`--no-reconnect`, or a code that means stop).
pub(crate) const CLOSED: u8 = 5;
/// The server refused the credentials: HTTP 401/403 on the upgrade, or
/// close code 1008, 4001 or 4003.
pub(crate) const AUTH: u8 = 6;
/// Ctrl-C.
pub(crate) const INTERRUPTED: u8 = 130;

/// The table printed in `--help`.
pub(crate) const HELP: &str = "\
Exit codes:
  0    done: every message sent (acknowledged in reliable mode), closed normally
  1    other failure (unreadable file, message refused)
  2    usage error
  3    could not connect (refused, unknown host, timeout, upgrade refused)
  4    TLS failure
  5    closed by the server (the close code is printed) without reconnecting
  6    credentials refused (HTTP 401/403, close 1008/4001/4003)
  130  interrupted (Ctrl-C)";

/// Close codes that mean "your credentials were refused".
pub(crate) fn is_auth_close(code: u16) -> bool {
    matches!(code, 1008 | 4001 | 4003)
}
