//! How a log keeps its events: compactly, because a long answer is
//! thousands of text deltas of a few bytes each, held for the resume TTL.

use std::collections::VecDeque;

use crate::event::StreamEvent;

/// The events of one log, kept compactly: a long answer is thousands of
/// text deltas of a few bytes each, held for the resume TTL. Held as typed
/// events (an `Arc` of 88 bytes, plus an allocation for the text) they cost
/// about 150 bytes of memory apiece; here a text delta costs a 12-byte
/// record plus its text, stored back to back with the others, and every
/// other event is kept whole beside them. Followers get each event rebuilt,
/// which costs what sharing a typed one saved.
#[derive(Debug, Default)]
pub(super) struct Records {
    kept: VecDeque<Record>,
    /// The events that are not text deltas, in order; boxed, because most
    /// logs hold two (the `start` and the end) and a queue of whole events
    /// would begin at room for four.
    others: VecDeque<Box<StreamEvent>>,
    /// How many of those were ever dropped from the front, wrapping: an
    /// `OTHER` record's `at` counts from there.
    others_start: u32,
    /// The text of the text deltas kept, back to back.
    text: String,
    /// Where `text` begins in all the text this log was ever given: trimmed
    /// deltas leave their text behind until it is worth moving the rest.
    text_start: u64,
}

/// One kept event. Offsets wrap at 32 bits, which is sound while the text
/// kept spans less than that; `push` keeps a delta that would break this
/// whole instead.
#[derive(Debug, Clone, Copy)]
struct Record {
    /// The kind in the top two bits, the text's length in the rest.
    kind_len: u32,
    /// The choice plus one; zero for none.
    choice: u32,
    /// A text delta's offset in all the text, or an `OTHER` event's place
    /// among all the others.
    at: u32,
}

const KIND_SHIFT: u32 = 30;
const LEN_MASK: u32 = (1 << KIND_SHIFT) - 1;
const TOKEN: u32 = 0;
const REFUSAL: u32 = 1;
const REASONING: u32 = 2;
const OTHER: u32 = 3;

impl Record {
    fn kind(self) -> u32 {
        self.kind_len >> KIND_SHIFT
    }

    fn len(self) -> usize {
        (self.kind_len & LEN_MASK) as usize
    }

    fn choice(self) -> Option<u32> {
        self.choice.checked_sub(1)
    }
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
            } => (if refusal { REFUSAL } else { TOKEN }, token, choice),
            StreamEvent::Reasoning { token, choice } => (REASONING, token, choice),
            event => {
                self.push_other(event);
                return size;
            }
        };
        let len = u32::try_from(token.len())
            .ok()
            .filter(|len| *len <= LEN_MASK);
        let choice_word = match choice {
            None => Some(0),
            Some(choice) => choice.checked_add(1),
        };
        let fits = self.text.len() + token.len() <= u32::MAX as usize;
        let (Some(len), Some(choice_word), true) = (len, choice_word, fits) else {
            self.push_other(rebuild(kind, token, choice));
            return size;
        };
        // Truncated on purpose: offsets wrap (see `Record`).
        let at = (self.text_start + self.text.len() as u64) as u32;
        self.text.push_str(&token);
        self.kept.push_back(Record {
            kind_len: kind << KIND_SHIFT | len,
            choice: choice_word,
            at,
        });
        size
    }

    fn push_other(&mut self, event: StreamEvent) {
        let at = self.others_start.wrapping_add(self.others.len() as u32);
        self.others.push_back(Box::new(event));
        self.kept.push_back(Record {
            kind_len: OTHER << KIND_SHIFT,
            choice: 0,
            at,
        });
    }

    pub(super) fn shrink_to_fit(&mut self) {
        self.kept.shrink_to_fit();
        self.others.shrink_to_fit();
        self.text.shrink_to_fit();
    }

    /// A copy of the event at `index`.
    pub(super) fn get(&self, index: usize) -> Option<StreamEvent> {
        let record = *self.kept.get(index)?;
        if record.kind() == OTHER {
            return self.other(record).cloned();
        }
        let from = self.text_offset(record);
        let token = self.text.get(from..from + record.len())?.to_owned();
        Some(rebuild(record.kind(), token, record.choice()))
    }

    /// Where a text delta's text begins in `text`.
    fn text_offset(&self, record: Record) -> usize {
        record.at.wrapping_sub(self.text_start as u32) as usize
    }

    fn other(&self, record: Record) -> Option<&StreamEvent> {
        self.others
            .get(record.at.wrapping_sub(self.others_start) as usize)
            .map(|event| &**event)
    }

    /// The last event, if it is not a text delta.
    pub(super) fn last(&self) -> Option<&StreamEvent> {
        let record = *self.kept.back()?;
        (record.kind() == OTHER)
            .then(|| self.other(record))
            .flatten()
    }

    /// Drops the oldest event; returns its size as the log's bounds count it.
    pub(super) fn pop_front(&mut self) -> Option<usize> {
        let record = self.kept.pop_front()?;
        if record.kind() == OTHER {
            self.others_start = self.others_start.wrapping_add(1);
            return self.others.pop_front().map(|event| event.size());
        }
        let dead = self.text_offset(record) + record.len();
        // Moving the live text costs at most what was freed, so trimming
        // stays linear overall.
        if dead * 2 >= self.text.len() {
            self.text.drain(..dead);
            self.text_start += dead as u64;
        }
        Some(StreamEvent::size_holding(record.len()))
    }
}

fn rebuild(kind: u32, token: String, choice: Option<u32>) -> StreamEvent {
    if kind == REASONING {
        return StreamEvent::Reasoning { token, choice };
    }
    StreamEvent::Token {
        token,
        refusal: kind == REFUSAL,
        choice,
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
    fn offsets_that_wrap_and_choices_that_do_not_fit_lose_nothing() {
        // As if this log had been given 4 GiB of text and 4 billion other
        // events already.
        let mut events = Records {
            text_start: (1 << 32) - 5,
            others_start: u32::MAX - 1,
            ..Records::default()
        };
        let given: Vec<StreamEvent> = (0..40)
            .map(|i| match i % 4 {
                0 => StreamEvent::Token {
                    token: format!("far{i}"),
                    refusal: false,
                    choice: Some(u32::MAX),
                },
                _ => sample(i),
            })
            .collect();
        let mut first = 0;
        for (i, event) in given.iter().enumerate() {
            let size = event.size();
            assert_eq!(events.push(event.clone()), size);
            if i % 3 == 2 {
                for _ in 0..2 {
                    assert_eq!(events.pop_front(), Some(given[first].size()));
                    first += 1;
                }
            }
        }
        assert_eq!(events.len(), given.len() - first);
        for (index, event) in given[first..].iter().enumerate() {
            assert_eq!(events.get(index).as_ref().map(json), Some(json(event)));
        }
    }

    #[test]
    fn a_kept_text_delta_is_12_bytes_plus_its_text() {
        assert_eq!(std::mem::size_of::<Record>(), 12);
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
