//! Which session a HELLO lands in: the server's routing rules, with no
//! registry, store or clock of their own. The server gathers the facts
//! (what it holds, what its store had), asks [`route`], and carries out
//! the answer.

use crate::codec::SessionId;

/// What the server knows when a HELLO arrives.
#[derive(Debug, Clone, Copy)]
pub struct Hello<'a> {
    /// The session the HELLO names.
    pub session: SessionId,
    /// It asks for a new session (`NEW`), rather than to resume one.
    pub new: bool,
    /// The caller's identity (the JWT's `sub`), if authentication is on.
    pub subject: Option<&'a str>,
    /// The client's resume secret, if it sent one.
    pub secret: Option<[u8; 16]>,
}

/// A session as the server's registry holds it (live, in this process).
#[derive(Debug, Clone, Copy)]
pub struct Held<'a> {
    /// The identity that made it.
    pub subject: Option<&'a str>,
    /// The secret it is bound to, if any.
    pub secret: Option<[u8; 16]>,
}

/// A session as the server's store had it.
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    /// The identity that made it.
    pub subject: Option<&'a str>,
    /// The secret it is bound to, if any.
    pub secret: Option<[u8; 16]>,
    /// Only its record is left (its state expired).
    pub expired: bool,
    /// Milliseconds since it was last written.
    pub age_ms: u64,
}

/// The server's bounds and abilities.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Sessions held now.
    pub sessions: usize,
    /// Sessions it may hold at most.
    pub max_sessions: usize,
    /// How long a record of an expired session is honoured (ms).
    pub record_ttl_ms: u64,
    /// The store keeps whole sessions (not only records).
    pub durable: bool,
}

/// Where the HELLO goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Into the session the registry holds (a resume, or a connection
    /// superseding another).
    Attach,
    /// Refused: the server holds as many sessions as it may (close 1013).
    Overloaded,
    /// The whole session from the store (a durable store, after a restart
    /// or from another node): the client resumes it without a gap.
    Restore,
    /// The session rebuilt from its record (its state expired): the client
    /// resumes it without duplicates; what the server had queued reaches it
    /// as a SKIP.
    FromRecord,
    /// A new session under the id the client chose (a `NEW` HELLO whose id
    /// is free).
    NewKeepingId,
    /// A new session under a fresh id: the client's is taken, unknown, or
    /// belongs to another identity. A client that asked to resume
    /// resynchronises.
    NewFreshId,
    /// As [`NewFreshId`](Route::NewFreshId), for a HELLO that named a
    /// session under its identity without the secret the session is bound
    /// to: someone who learned the id, not its owner (the server logs it).
    Impostor,
}

/// Whether a HELLO may resume a session bound to `bound`: any HELLO if it
/// is bound to none (a session from before secrets; the engine then binds
/// it), else one carrying the same secret, compared in constant time.
pub fn secret_fits(bound: Option<[u8; 16]>, offered: Option<[u8; 16]>) -> bool {
    match (bound, offered) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(bound), Some(offered)) => {
            bound
                .iter()
                .zip(offered.iter())
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
        }
    }
}

/// The rules, in order:
/// 1. A session is only ever resumed under the identity that made it; held
///    or stored under another, it is as good as unknown. Under the same
///    identity, a session bound to a secret is resumed only with it; a
///    HELLO without it is an [`Impostor`](Route::Impostor).
/// 2. A session the registry holds is attached to.
/// 3. Otherwise, at `max_sessions`, the HELLO is refused.
/// 4. A HELLO that resumes (not `NEW`) a session the store has: the whole
///    session if it is live and the store keeps whole sessions; else its
///    record, if younger than the record TTL.
/// 5. A `NEW` HELLO keeps its id unless the registry holds that id (under
///    another identity) or the store has it under another identity (a
///    shared store reads it for a NEW HELLO too; under the same identity
///    without the HELLO's secret it is an impostor's target, rule 1);
///    anything else gets a fresh id.
pub fn route(
    hello: Hello<'_>,
    held: Option<Held<'_>>,
    stored: Option<Stored<'_>>,
    limits: Limits,
) -> Route {
    let held_here = held.is_some();
    let mut impostor = false;
    if let Some(held) = held.filter(|held| held.subject == hello.subject) {
        if secret_fits(held.secret, hello.secret) {
            return Route::Attach;
        }
        impostor = true;
    }
    if limits.sessions >= limits.max_sessions {
        return Route::Overloaded;
    }
    if impostor {
        return Route::Impostor;
    }
    let mine = |stored: &Stored<'_>| stored.subject == hello.subject;
    if stored.is_some_and(|stored| mine(&stored) && !secret_fits(stored.secret, hello.secret)) {
        return Route::Impostor;
    }
    if !hello.new {
        match stored.filter(mine) {
            Some(stored) if !stored.expired && limits.durable => return Route::Restore,
            Some(stored) if stored.age_ms < limits.record_ttl_ms || !stored.expired => {
                return Route::FromRecord
            }
            _ => {}
        }
    }
    // A NEW HELLO keeps its id unless something holds it: here, or
    // another identity's session in a shared store (a NEW HELLO must never
    // overwrite a session it does not own).
    if hello.new && !held_here && stored.is_none_or(|stored| mine(&stored)) {
        Route::NewKeepingId
    } else {
        Route::NewFreshId
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        sessions: 1,
        max_sessions: 10,
        record_ttl_ms: 1_000,
        durable: true,
    };

    fn hello(new: bool, subject: Option<&str>) -> Hello<'_> {
        Hello {
            session: SessionId([1; 16]),
            new,
            subject,
            secret: None,
        }
    }

    fn stored(subject: Option<&str>, expired: bool, age_ms: u64) -> Option<Stored<'_>> {
        Some(Stored {
            subject,
            secret: None,
            expired,
            age_ms,
        })
    }

    #[test]
    fn a_held_session_is_attached_to_only_under_its_identity() {
        let held = Some(Held {
            subject: Some("alice"),
            secret: None,
        });
        assert_eq!(
            route(hello(false, Some("alice")), held, None, LIMITS),
            Route::Attach
        );
        assert_eq!(
            route(hello(true, Some("alice")), held, None, LIMITS),
            Route::Attach
        );
        // Another identity naming it gets a session of its own.
        assert_eq!(
            route(hello(false, Some("bob")), held, None, LIMITS),
            Route::NewFreshId
        );
        assert_eq!(
            route(hello(true, Some("bob")), held, None, LIMITS),
            Route::NewFreshId
        );
        assert_eq!(
            route(hello(false, None), held, None, LIMITS),
            Route::NewFreshId
        );
    }

    #[test]
    fn at_the_limit_only_held_sessions_are_attached_to() {
        let full = Limits {
            sessions: 10,
            ..LIMITS
        };
        let held = Some(Held {
            subject: None,
            secret: None,
        });
        assert_eq!(route(hello(false, None), held, None, full), Route::Attach);
        assert_eq!(
            route(hello(true, None), None, None, full),
            Route::Overloaded
        );
        assert_eq!(
            route(hello(false, None), None, stored(None, false, 0), full),
            Route::Overloaded
        );
    }

    #[test]
    fn a_stored_session_is_restored_whole_or_from_its_record() {
        let memory = Limits {
            durable: false,
            ..LIMITS
        };
        let live = stored(Some("a"), false, 5_000);
        assert_eq!(
            route(hello(false, Some("a")), None, live, LIMITS),
            Route::Restore
        );
        // A store of records only: the live entry is as good as a record.
        assert_eq!(
            route(hello(false, Some("a")), None, live, memory),
            Route::FromRecord
        );
        let record = stored(Some("a"), true, 999);
        assert_eq!(
            route(hello(false, Some("a")), None, record, LIMITS),
            Route::FromRecord
        );
        let old = stored(Some("a"), true, 1_000);
        assert_eq!(
            route(hello(false, Some("a")), None, old, LIMITS),
            Route::NewFreshId
        );
        // Under another identity, or asked for NEW: not resumed.
        assert_eq!(
            route(hello(false, Some("b")), None, live, LIMITS),
            Route::NewFreshId
        );
        assert_eq!(
            route(hello(true, Some("a")), None, live, LIMITS),
            Route::NewKeepingId
        );
    }

    #[test]
    fn an_unknown_session_is_new_keeping_its_id_only_when_asked_for_new() {
        assert_eq!(
            route(hello(true, None), None, None, LIMITS),
            Route::NewKeepingId
        );
        assert_eq!(
            route(hello(false, None), None, None, LIMITS),
            Route::NewFreshId
        );
    }

    #[test]
    fn a_session_bound_to_a_secret_is_resumed_only_with_it() {
        let secret = Some([5; 16]);
        let with = |new, secret| Hello {
            secret,
            ..hello(new, Some("alice"))
        };
        let held = Some(Held {
            subject: Some("alice"),
            secret,
        });
        assert_eq!(
            route(with(false, secret), held, None, LIMITS),
            Route::Attach
        );
        for offered in [None, Some([6; 16]), Some([0; 16])] {
            assert_eq!(
                route(with(false, offered), held, None, LIMITS),
                Route::Impostor,
                "{offered:?}"
            );
            assert_eq!(
                route(with(true, offered), held, None, LIMITS),
                Route::Impostor
            );
        }
        let live = Stored {
            subject: Some("alice"),
            secret,
            expired: false,
            age_ms: 0,
        };
        let stored = Some(live);
        assert_eq!(
            route(with(false, secret), None, stored, LIMITS),
            Route::Restore
        );
        assert_eq!(
            route(with(false, Some([6; 16])), None, stored, LIMITS),
            Route::Impostor
        );
        let record = Some(Stored {
            expired: true,
            ..live
        });
        assert_eq!(
            route(with(false, None), None, record, LIMITS),
            Route::Impostor
        );
        // Bound to none (a client from before secrets): any secret fits.
        let unbound = Some(Held {
            subject: Some("alice"),
            secret: None,
        });
        assert_eq!(
            route(with(false, secret), unbound, None, LIMITS),
            Route::Attach
        );
        // Another identity is another identity, secret or not.
        let bob = Hello {
            secret,
            ..hello(false, Some("bob"))
        };
        assert_eq!(route(bob, held, None, LIMITS), Route::NewFreshId);
        assert!(secret_fits(secret, secret) && !secret_fits(secret, None));
    }

    #[test]
    fn a_new_hello_never_takes_a_stored_session_it_does_not_own() {
        let stored = |subject, secret| {
            Some(Stored {
                subject,
                secret,
                expired: false,
                age_ms: 0,
            })
        };
        let new = |subject, secret| Hello {
            secret,
            ..hello(true, subject)
        };
        // Its own (a client that crashed before its first WELCOME).
        assert_eq!(
            route(
                new(None, Some([1; 16])),
                None,
                stored(None, Some([1; 16])),
                LIMITS
            ),
            Route::NewKeepingId
        );
        // Someone else's, same identity, without the secret.
        assert_eq!(
            route(new(None, None), None, stored(None, Some([1; 16])), LIMITS),
            Route::Impostor
        );
        // Another identity's.
        assert_eq!(
            route(
                new(Some("bob"), None),
                None,
                stored(Some("alice"), None),
                LIMITS
            ),
            Route::NewFreshId
        );
    }
}
