//! The emulator's state: the tree, tokens, injected faults and counters, shared by the
//! request handler (handler.rs), the dynamic endpoints (dynamic.rs) and the control endpoints
//! (control.rs). It sits below all three, so none of them needs another to name it.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::watch;

use super::http::Response;
use super::tokens::{Millis, Tokens};
use super::tree::{Leaf, Node};

/// Everything the emulator knows; the server keeps it behind one mutex.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) tree: Node,
    pub(crate) tokens: Tokens,
    pub(crate) faults: Vec<Fault>,
    pub(crate) counters: BTreeMap<String, u64>,
    /// When the emulated instance was "created" (identity `instance_creation_timestamp`).
    pub(crate) started: Millis,
    /// When recent guest-attribute writes arrived, for the MDS's rate limit (§6).
    pub(crate) guest_writes: std::collections::VecDeque<Millis>,
    changes: watch::Sender<u64>,
}

impl State {
    pub(crate) fn new(tree: Node, lifetime: Duration, window: Duration, now: Millis) -> State {
        State {
            tree,
            tokens: Tokens::new(lifetime, window),
            faults: Vec::new(),
            counters: BTreeMap::new(),
            started: now,
            guest_writes: std::collections::VecDeque::new(),
            changes: watch::channel(0).0,
        }
    }

    /// Records that the tree changed: hanging `wait_for_change` requests re-check their ETag.
    pub(crate) fn changed(&mut self) {
        self.changes.send_modify(|v| *v += 1);
    }

    /// A receiver that wakes on the next change (subscribe *before* calling [`serve`]).
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

#[derive(Debug)]
pub(crate) enum Action {
    Respond(Response),
    /// Hang until the tree changes or `timeout` passes, then `serve` again (the request
    /// [`pinned`] to `etag`, the version it is waiting to see change).
    Wait {
        timeout: Option<Duration>,
        etag: String,
    },
    /// Close the connection without answering (an injected fault).
    Drop,
}

/// An injected fault, as posted to `/emulator/faults`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fault {
    pub(crate) prefix: String,
    pub(crate) status: Option<u16>,
    pub(crate) remaining: Option<u64>,
    pub(crate) latency: Duration,
    pub(crate) drop: bool,
    pub(crate) no_flavor: bool,
    /// Replaces the body of the normal response (e.g. undecodable token JSON).
    pub(crate) body: Option<String>,
}

/// The fault that applies to a request for `path`, consuming one use of it.
pub(crate) fn take_fault(faults: &mut Vec<Fault>, path: &str) -> Option<Fault> {
    let i = faults.iter().position(|f| path.starts_with(&f.prefix))?;
    let fault = faults[i].clone();
    if let Some(n) = &mut faults[i].remaining {
        *n -= 1;
        if *n == 0 {
            faults.remove(i);
        }
    }
    Some(fault)
}

/// The leaf text at `segs`, if any.
pub(crate) fn text_at(st: &State, segs: &[&str]) -> Option<String> {
    match st.tree.get(segs)? {
        Node::Leaf(Leaf::List(items)) => Some(items.join("\n")),
        Node::Leaf(l) => Some(l.text()),
        _ => None,
    }
}
