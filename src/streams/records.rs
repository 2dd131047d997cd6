//! How a log keeps its events: compactly, because a long answer is
//! thousands of text deltas of a few bytes each, held for the resume TTL.

use std::collections::VecDeque;

use crate::event::StreamEvent;

/// The events of one log, kept compactly: a long answer is thousands of
/// text deltas of a few bytes each, held for the resume TTL. Held as typed
/// events (an `Arc` of 88 bytes, plus an allocation for the text) they cost
/// about 150 bytes of memory apiece; here a text delta costs 24 bytes plus
/// its text, stored back to back with the others. Followers get each event
/// rebuilt, which costs what sharing a typed one saved.
#[derive(Debug, Default)]
pub(super) struct Records {
    kept: VecDeque<Record>,
    /// The text of the text deltas kept, back to back.
    text: String,
    /// Where `text` begins in all the text this log was ever given: trimmed
    /// deltas leave their text behind until it is worth moving the rest.
    text_start: u64,
}

#[derive(Debug)]
enum Record {
    /// A `token` or `reasoning` event, its text `len` bytes at `start`.
    Text {
        kind: TextKind,
        choice: Option<u32>,
        start: u64,
        len: u32,
    },
    Event(Box<StreamEvent>),
}

#[derive(Debug, Clone, Copy)]
enum TextKind {
    Token,
    Refusal,
    Reasoning,
}

impl Records {
    pub(super) fn len(&self) -> usize {
        self.kept.len()
    }

    /// Keeps `event`; returns its size as the log's bounds count it.
    pub(super) fn push(&mut self, event: StreamEvent) -> usize {
        let size = event.size();
        let (kind, token, choice) = match event {
            StreamEvent::Token {
                token,
                refusal,
                choice,
            } => (
                if refusal {
                    TextKind::Refusal
                } else {
                    TextKind::Token
                },
                token,
                choice,
            ),
            StreamEvent::Reasoning { token, choice } => (TextKind::Reasoning, token, choice),
            event => {
                self.kept.push_back(Record::Event(Box::new(event)));
                return size;
            }
        };
        let Ok(len) = u32::try_from(token.len()) else {
            let event = rebuild(kind, token, choice);
            self.kept.push_back(Record::Event(Box::new(event)));
            return size;
        };
        let start = self.text_start + self.text.len() as u64;
        self.text.push_str(&token);
        self.kept.push_back(Record::Text {
            kind,
            choice,
            start,
            len,
        });
        size
    }

    pub(super) fn shrink_to_fit(&mut self) {
        self.kept.shrink_to_fit();
        self.text.shrink_to_fit();
    }

    /// A copy of the event at `index`.
    pub(super) fn get(&self, index: usize) -> Option<StreamEvent> {
        Some(match self.kept.get(index)? {
            Record::Text {
                kind,
                choice,
                start,
                len,
            } => {
                let from = (start - self.text_start) as usize;
                let token = self.text[from..from + *len as usize].to_owned();
                rebuild(*kind, token, *choice)
            }
            Record::Event(event) => (**event).clone(),
        })
    }

    /// The last event, if it is not a text delta.
    pub(super) fn last(&self) -> Option<&StreamEvent> {
        match self.kept.back()? {
            Record::Event(event) => Some(event),
            Record::Text { .. } => None,
        }
    }

    /// Drops the oldest event; returns its size as the log's bounds count it.
    pub(super) fn pop_front(&mut self) -> Option<usize> {
        Some(match self.kept.pop_front()? {
            Record::Text { start, len, .. } => {
                let live = start + u64::from(len);
                let dead = (live - self.text_start) as usize;
                // Moving the live text costs at most what was freed, so
                // trimming stays linear overall.
                if dead * 2 >= self.text.len() {
                    self.text.drain(..dead);
                    self.text_start = live;
                }
                StreamEvent::size_holding(len as usize)
            }
            Record::Event(event) => event.size(),
        })
    }
}

fn rebuild(kind: TextKind, token: String, choice: Option<u32>) -> StreamEvent {
    match kind {
        TextKind::Token | TextKind::Refusal => StreamEvent::Token {
            token,
            refusal: matches!(kind, TextKind::Refusal),
            choice,
        },
        TextKind::Reasoning => StreamEvent::Reasoning { token, choice },
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::event::FinishReason;

    fn json(event: &StreamEvent) -> String {
        serde_json::to_string(event).unwrap_or_else(|error| panic!("{error}"))
    }

    pub(crate) fn sample(i: usize) -> StreamEvent {
        match i % 5 {
            0 => StreamEvent::Token {
                token: format!("tok{i} é"),
                refusal: false,
                choice: None,
            },
            1 => StreamEvent::Reasoning {
                token: format!("think{i}"),
                choice: Some(2),
            },
            2 => StreamEvent::Token {
                token: format!("no{i}"),
                refusal: true,
                choice: Some(1),
            },
            3 => StreamEvent::ToolCall {
                index: 1,
                id: Some(format!("call{i}")),
                name: None,
                arguments: Some("{}".to_owned()),
                choice: None,
            },
            _ => StreamEvent::Token {
                token: String::new(),
                refusal: false,
                choice: Some(3),
            },
        }
    }

    #[test]
    fn kept_events_come_back_exactly_as_given_after_any_trimming() {
        let mut events = Records::default();
        let mut sizes = VecDeque::new();
        let mut first = 0;
        for i in 0..1_000 {
            let event = sample(i);
            let size = event.size();
            assert_eq!(events.push(event), size);
            sizes.push_back(size);
            // Trim now and then, a varying number, as the byte bound would.
            if i % 7 == 6 {
                for _ in 0..(i % 5) {
                    assert_eq!(events.pop_front(), sizes.pop_front());
                    first += 1;
                }
            }
            for (index, seq) in (first..=i).enumerate() {
                assert_eq!(
                    events.get(index).as_ref().map(json),
                    Some(json(&sample(seq))),
                    "event {seq}"
                );
            }
        }
        assert_eq!(events.len(), sizes.len());
        assert!(events.get(events.len()).is_none());
        // The text of trimmed deltas does not pile up.
        let live: usize = (first..1_000)
            .map(|seq| match sample(seq) {
                StreamEvent::Token { token, .. } | StreamEvent::Reasoning { token, .. } => {
                    token.len()
                }
                _ => 0,
            })
            .sum();
        assert!(
            events.text.len() <= 2 * live + 16,
            "{} for {live}",
            events.text.len()
        );
    }

    #[test]
    fn a_kept_text_delta_is_24_bytes_plus_its_text() {
        assert_eq!(std::mem::size_of::<Record>(), 24);
    }

    #[test]
    fn only_a_terminal_or_other_event_is_last() {
        let mut events = Records::default();
        assert!(events.last().is_none());
        events.push(sample(0));
        assert!(events.last().is_none());
        let finish = StreamEvent::Finish {
            finish_reason: FinishReason::Stop,
            usage: None,
        };
        let expected = json(&finish);
        events.push(finish);
        assert_eq!(events.last().map(json), Some(expected));
    }
}
