//! Token files (`token`, `access_token`, `authorization` and their query names): a token as
//! the file shows it, and how long that version of the file stays current.
//!
//! What a file holds is fixed when its name is looked up (an inode's bytes never change), so
//! the entry TTL a version gets is what keeps it honest:
//! - `token` says `expires_in` as of the lookup, in whole seconds rounded down, and stays
//!   current only until the true time left drops below that number: any read of it says at
//!   most the seconds truly left and at most one second less. A new version a second at most.
//! - `access_token` and `authorization` are fixed until the token changes; the token store
//!   tells the kernel to forget them when a refreshed token is installed.
//! - None outlives the token's serving window: a token with under [`MIN_LEFT`] left is never
//!   served, so no version stays current past that point.
//!
//! The bytes are secrets: nothing here logs them, and `Version`'s `Debug` shows sizes only.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::clock::SharedClock;
use crate::fs::node::{Content, Form, Version};
use crate::token::{Token, MIN_LEFT};

/// A token as the file `form` shows it.
pub fn render(token: &Token, form: Form, clock: &SharedClock) -> Bytes {
    match form {
        Form::Json => Bytes::from(token.render_json(clock)),
        Form::Bare => Bytes::copy_from_slice(token.access_token().as_bytes()),
        Form::Header => Bytes::from(format!("Authorization: Bearer {}\n", token.access_token())),
    }
}

/// A token as the file `form` shows it, as the version a lookup hands the kernel. `horizon`
/// is how much time left the store wants a token it serves to have (`Tokens::horizon`).
pub(crate) fn version(
    form: Form,
    token: &Token,
    clock: &SharedClock,
    horizon: Duration,
) -> Content {
    let (bytes, shown) = match form {
        Form::Json => {
            let secs = token.expires_in(clock);
            (Bytes::from(token.render_json_with(secs)), Some(Duration::from_secs(secs)))
        }
        _ => (render(token, form, clock), None),
    };
    // Read after rendering: the time left can only be less than at rendering, so the
    // validity computed from it never runs past the second `expires_in` was rounded from.
    let left = token.expiry().remaining(&**clock);
    let window = left.saturating_sub(horizon.max(MIN_LEFT));
    let validity = match shown {
        Some(shown) => left.saturating_sub(shown).min(window),
        None => window,
    };
    let version = Version { bytes, seen: SystemTime::now(), tag: token.tag(), readable: true };
    Content { version, validity }
}
