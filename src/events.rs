//! One-line notes from background threads (the server, the sync engine)
//! for the shell to print above its prompt. A bounded channel: when nobody
//! reads (a headless peer) or the shell falls behind, notes are dropped,
//! never queued without end; each note's text is clipped.

use crossbeam_channel::{Receiver, Sender};

use crate::limits::{LINE_TEXT, clip};

/// Notes kept waiting for the shell at most.
const WAITING: usize = 256;

/// Where a note comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSource {
    /// A request another peer made of our server.
    Server,
    /// A sync round our own engine ran.
    Sync,
}

/// A one-line note for the shell to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub source: EventSource,
    /// As the thread wrote it: names in it come from peers and the disk,
    /// so whoever prints it escapes it.
    pub text: String,
}

impl Event {
    /// The label the shell prints before the text.
    pub fn label(&self) -> &'static str {
        match self.source {
            EventSource::Server => "[server]",
            EventSource::Sync => "[sync]",
        }
    }
}

/// The sending end, for the threads that have something to say.
#[derive(Clone)]
pub struct EventSender(Sender<Event>);

impl EventSender {
    /// A note about a request our server answered.
    pub fn server(&self, text: String) {
        self.send(EventSource::Server, text);
    }

    /// A note about a sync round our engine ran by itself.
    pub fn sync(&self, text: String) {
        self.send(EventSource::Sync, text);
    }

    fn send(&self, source: EventSource, text: String) {
        let text = clip(&text, LINE_TEXT).into_owned();
        let _ = self.0.try_send(Event { source, text });
    }
}

/// The channel of one peer's notes.
pub struct Events {
    tx: EventSender,
    rx: Receiver<Event>,
}

impl Default for Events {
    fn default() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(WAITING);
        Events {
            tx: EventSender(tx),
            rx,
        }
    }
}

impl Events {
    pub fn sender(&self) -> EventSender {
        self.tx.clone()
    }

    /// The receiving end, for the shell's printer.
    pub fn receiver(&self) -> Receiver<Event> {
        self.rx.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_labelled_clipped_and_never_pile_up() {
        let events = Events::default();
        let (tx, rx) = (events.sender(), events.receiver());
        tx.server("served x".into());
        tx.sync("x".repeat(10_000));
        let first = rx.try_recv().unwrap();
        assert_eq!(
            (first.label(), first.text.as_str()),
            ("[server]", "served x")
        );
        let second = rx.try_recv().unwrap();
        assert_eq!(second.label(), "[sync]");
        assert!(second.text.len() <= LINE_TEXT);
        for _ in 0..WAITING * 2 {
            tx.server("more".into());
        }
        assert_eq!(rx.len(), WAITING);
    }
}
