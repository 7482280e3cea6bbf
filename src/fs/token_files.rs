//! Token files (`token`, `access_token`, `authorization` and their query names): a token as
//! the file shows it, and how long that rendering stays the file's current version.
//!
//! `token` renders its JSON anew at every open, so its bytes are only a sample; its length
//! holds until `expires_in` loses a digit, which bounds how long the version is current.
//! `access_token` and `authorization` are fixed until the token changes. The bytes are
//! secrets: nothing here logs them, and `Version`'s `Debug` shows sizes only.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::clock::SharedClock;
use crate::fs::node::{Content, Form, Version};
use crate::token::Token;

/// A token as the file `form` shows it.
pub fn render(token: &Token, form: Form, clock: &SharedClock) -> Bytes {
    match form {
        Form::Json => Bytes::from(token.render_json(clock)),
        Form::Bare => Bytes::copy_from_slice(token.access_token().as_bytes()),
        Form::Header => Bytes::from(format!("Authorization: Bearer {}\n", token.access_token())),
    }
}

/// A token as the file `form` shows it, as the version a lookup hands the kernel.
pub(crate) fn version(form: Form, token: &Token, clock: &SharedClock) -> Content {
    let left = token.expiry().remaining(&**clock);
    let (validity, rendered) = if form == Form::Json {
        let secs = left.as_secs();
        let floor = if secs < 10 { 0 } else { 10u64.pow(secs.ilog10()) };
        (left.saturating_sub(Duration::from_secs(floor)), true)
    } else {
        (left, false)
    };
    let bytes = render(token, form, clock);
    let seen = SystemTime::now();
    let version = Version { bytes, seen, tag: token.tag(), readable: true, rendered };
    Content { version, validity }
}
