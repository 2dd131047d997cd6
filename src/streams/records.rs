//! How a log keeps its events: compactly, because a long answer is
//! thousands of text deltas of a few bytes each, held for the resume TTL.

use std::collections::VecDeque;

use crate::event::StreamEvent;

/// The events of one log, kept compactly: a long answer is thousands of
/// text deltas of a few bytes each, held for the resume TTL, and held as
/// typed events (an `Arc` of 88 bytes, plus an allocation for the text)
/// they cost about 150 bytes apiece. Here a text delta is a header of
/// usually one byte followed by its text, back to back with the others in
/// one buffer, the generation's `start` a header alone (its fields are the
/// generation's), and every other event is kept whole beside them.
/// Followers get each event rebuilt, which costs what sharing a typed one
/// saved.
#[derive(Debug, Default)]
pub(super) struct Records {
    /// Every kept record, oldest first: a header (see [`Header`]), the
    /// choice when there is one, then a text delta's text.
    bytes: Vec<u8>,
    /// Where `bytes` begins among all the bytes this log was ever given:
    /// dropped records leave their bytes behind until it is worth moving
    /// the rest.
    bytes_start: u64,
    /// Where the oldest kept record begins, counted as `bytes_start` is.
    front: u64,
    /// How many records were ever dropped from the front.
    dropped: u64,
    /// How many of those were others.
    others_dropped: u64,
    /// How many records are kept.
    kept: usize,
    /// Where every `STRIDE`th record begins, from the one at or before the
    /// oldest kept: a record is found by reading forward from its mark, at
    /// most `STRIDE - 1` headers.
    marks: VecDeque<Mark>,
    /// The events that are not text deltas, in order; boxed, because most
    /// logs hold two (the `start` and the end) and a queue of whole events
    /// would begin at room for four.
    others: VecDeque<Box<StreamEvent>>,
    /// Whether the newest record is one of `others`.
    last_is_other: bool,
    /// What the log's `start` counts for against its bounds; see
    /// [`Records::push_start`].
    start_size: usize,
}

/// A record's position, and how many others came before it, both counted
/// from the log's beginning.
#[derive(Debug, Clone, Copy)]
struct Mark {
    at: u64,
    others: u64,
}

const STRIDE: u64 = 32;

const TOKEN: u64 = 0;
const REFUSAL: u64 = 1;
const REASONING: u64 = 2;
const OTHER: u64 = 3;
const HAS_CHOICE: u64 = 4;
const LEN_SHIFT: u32 = 3;

/// A record's header, as a LEB128 number: the text's length, then whether a
/// choice follows, then the kind in the lowest two bits. A delta of fewer
/// than 16 bytes without a choice, the usual one, has a one-byte header.
#[derive(Debug, Clone, Copy)]
struct Header(u64);

impl Header {
    fn kind(self) -> u64 {
        self.0 & 3
    }

    fn has_choice(self) -> bool {
        self.0 & HAS_CHOICE != 0
    }

    /// Whether this is the generation's `start`, which has no event kept.
    fn is_start(self) -> bool {
        self.0 == START
    }

    /// Whether the record's event is kept whole in `others`.
    fn is_in_others(self) -> bool {
        self.kind() == OTHER && !self.is_start()
    }

    fn len(self) -> usize {
        // Only lengths of text the log was given are ever written.
        usize::try_from(self.0 >> LEN_SHIFT).unwrap_or(usize::MAX)
    }
}

/// The header of the generation's `start`: an other without a place in
/// `others`, told apart by a length no other's header has.
const START: u64 = 1 << LEN_SHIFT | OTHER;

/// A kept event, as [`Records::get`] gives it back.
#[derive(Debug)]
pub(super) enum Kept {
    Event(StreamEvent),
    /// The generation's `start`, which it rebuilds from its own fields.
    Start,
}

/// One record read back: where it ends, and what it holds.
struct Read<'a> {
    end: usize,
    header: Header,
    choice: Option<u32>,
    text: &'a [u8],
}

impl Records {
    pub(super) fn len(&self) -> usize {
        self.kept
    }

    /// Keeps `event`; returns its size as the log's bounds count it.
    pub(super) fn push(&mut self, event: StreamEvent) -> usize {
        let size = event.size();
        self.begin_record();
        let (kind, token, choice) = match event {
            StreamEvent::Token {
                token,
                refusal,
                choice,
            } => (if refusal { REFUSAL } else { TOKEN }, token, choice),
            StreamEvent::Reasoning { token, choice } => (REASONING, token, choice),
            event => {
                put_leb128(&mut self.bytes, OTHER);
                self.others.push_back(Box::new(event));
                self.last_is_other = true;
                return size;
            }
        };
        let flag = if choice.is_some() { HAS_CHOICE } else { 0 };
        put_leb128(
            &mut self.bytes,
            (token.len() as u64) << LEN_SHIFT | flag | kind,
        );
        if let Some(choice) = choice {
            put_leb128(&mut self.bytes, u64::from(choice));
        }
        self.bytes.extend_from_slice(token.as_bytes());
        self.last_is_other = false;
        size
    }

    /// Keeps the generation's `start`, which counts for `size`, as a header
    /// alone: its fields are the generation's own, and kept here again they
    /// were four allocations in every open stream.
    pub(super) fn push_start(&mut self, size: usize) -> usize {
        self.begin_record();
        put_leb128(&mut self.bytes, START);
        self.last_is_other = false;
        self.start_size = size;
        size
    }

    /// Counts a new record, and marks where it begins every `STRIDE`th time.
    fn begin_record(&mut self) {
        if (self.dropped + self.kept as u64) % STRIDE == 0 {
            self.marks.push_back(Mark {
                at: self.bytes_start + self.bytes.len() as u64,
                others: self.others_dropped + self.others.len() as u64,
            });
        }
        self.kept += 1;
    }

    pub(super) fn shrink_to_fit(&mut self) {
        self.bytes.shrink_to_fit();
        self.marks.shrink_to_fit();
        self.others.shrink_to_fit();
    }

    /// A copy of the event at `index`.
    pub(super) fn get(&self, index: usize) -> Option<Kept> {
        if index >= self.kept {
            return None;
        }
        let seq = self.dropped + index as u64;
        let mark = self
            .marks
            .get(usize::try_from(seq / STRIDE - self.dropped / STRIDE).ok()?)?;
        let mut at = self.offset(mark.at)?;
        let mut others = mark.others;
        for _ in 0..seq % STRIDE {
            let read = self.read(at)?;
            others += u64::from(read.header.is_in_others());
            at = read.end;
        }
        let read = self.read(at)?;
        if read.header.is_start() {
            return Some(Kept::Start);
        }
        if read.header.is_in_others() {
            let place = usize::try_from(others - self.others_dropped).ok()?;
            return self
                .others
                .get(place)
                .map(|event| Kept::Event((**event).clone()));
        }
        // Only a `String`'s bytes were written here, so this never fails.
        let token = std::str::from_utf8(read.text).ok()?.to_owned();
        Some(Kept::Event(rebuild(read.header.kind(), token, read.choice)))
    }

    /// The last event, if it is not a text delta.
    pub(super) fn last(&self) -> Option<&StreamEvent> {
        (self.kept > 0 && self.last_is_other)
            .then(|| self.others.back())
            .flatten()
            .map(|event| &**event)
    }

    /// Drops the oldest event; returns its size as the log's bounds count it.
    pub(super) fn pop_front(&mut self) -> Option<usize> {
        if self.kept == 0 {
            return None;
        }
        let read = self.read(self.offset(self.front)?)?;
        let (end, len) = (read.end, read.text.len());
        let size = if read.header.is_start() {
            self.start_size
        } else if read.header.is_in_others() {
            self.others_dropped += 1;
            self.others.pop_front()?.size()
        } else {
            StreamEvent::size_holding(len)
        };
        self.front = self.bytes_start + end as u64;
        self.kept -= 1;
        self.dropped += 1;
        if self.dropped % STRIDE == 0 {
            // The front is now where the next mark is, and nothing before
            // it is read again.
            self.marks.pop_front();
            let dead = end;
            // Moving the live bytes costs at most what was freed, so
            // trimming stays linear overall.
            if dead * 2 >= self.bytes.len() {
                self.bytes.drain(..dead);
                self.bytes_start = self.front;
            }
        }
        Some(size)
    }

    /// Where a position counted from the log's beginning is in `bytes`.
    fn offset(&self, at: u64) -> Option<usize> {
        usize::try_from(at.checked_sub(self.bytes_start)?).ok()
    }

    /// The record that begins at `at` in `bytes`.
    fn read(&self, mut at: usize) -> Option<Read<'_>> {
        let header = Header(take_leb128(&self.bytes, &mut at)?);
        let choice = if header.has_choice() {
            Some(u32::try_from(take_leb128(&self.bytes, &mut at)?).ok()?)
        } else {
            None
        };
        // An other's length is not text that follows it.
        let len = if header.kind() == OTHER {
            0
        } else {
            header.len()
        };
        let end = at.checked_add(len)?;
        let text = self.bytes.get(at..end)?;
        Some(Read {
            end,
            header,
            choice,
            text,
        })
    }
}

/// Appends `value` in LEB128: seven bits a byte, lowest first, the top bit
/// set on every byte but the last.
fn put_leb128(bytes: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        bytes.push(value as u8 | 0x80);
        value >>= 7;
    }
    bytes.push(value as u8);
}

/// Reads the LEB128 number at `at` and moves `at` past it.
fn take_leb128(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn rebuild(kind: u64, token: String, choice: Option<u32>) -> StreamEvent {
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

    fn kept_json(kept: Kept) -> String {
        match kept {
            Kept::Event(event) => json(&event),
            Kept::Start => "start".to_owned(),
        }
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
                    events.get(index).map(kept_json),
                    Some(json(&sample(seq))),
                    "event {seq}"
                );
            }
        }
        assert_eq!(events.len(), sizes.len());
        assert!(events.get(events.len()).is_none());
        // The bytes of dropped records do not pile up: what is left before
        // the oldest mark is less than what follows it.
        let mut live = Records::default();
        for seq in (first / STRIDE as usize * STRIDE as usize)..1_000 {
            live.push(sample(seq));
        }
        assert!(
            events.bytes.len() < 2 * live.bytes.len(),
            "{} for {}",
            events.bytes.len(),
            live.bytes.len()
        );
    }

    #[test]
    fn any_choice_and_any_length_of_text_lose_nothing() {
        let long = "é".repeat(40_000);
        let given: Vec<StreamEvent> = (0..200)
            .map(|i| match i % 4 {
                0 => StreamEvent::Token {
                    token: format!("far{i}"),
                    refusal: false,
                    choice: Some(u32::MAX),
                },
                1 => StreamEvent::Reasoning {
                    token: long[..2 * (i % 97) * 200].to_owned(),
                    choice: Some(0),
                },
                _ => sample(i),
            })
            .collect();
        let mut events = Records::default();
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
            assert_eq!(events.get(index).map(kept_json), Some(json(event)));
        }
        while events.pop_front().is_some() {}
        assert_eq!((events.len(), events.get(0).map(kept_json)), (0, None));
        events.push(sample(3));
        assert_eq!(events.get(0).map(kept_json), Some(json(&sample(3))));
    }

    #[test]
    fn a_short_text_delta_costs_one_byte_beside_its_text() {
        let mut events = Records::default();
        let mut text = 0;
        for i in 0..150 {
            let token = format!("w{i} ");
            text += token.len();
            events.push(StreamEvent::Token {
                token,
                refusal: false,
                choice: None,
            });
        }
        assert_eq!(events.bytes.len(), text + 150);
        assert_eq!(events.marks.len(), 5);
    }

    #[test]
    fn the_start_is_one_byte_and_the_events_after_it_come_back_exactly() {
        let mut events = Records::default();
        assert_eq!(events.push_start(99), 99);
        // Across marks, so that every record after the start is found by
        // counting the others before it.
        for i in 0..70 {
            events.push(sample(i));
        }
        assert!(events.last().is_none(), "the start is not an ending");
        assert_eq!(
            events.others.len(),
            14,
            "only the tool calls are kept whole"
        );
        assert!(matches!(events.get(0), Some(Kept::Start)));
        for i in 0..70 {
            assert_eq!(
                events.get(i + 1).map(kept_json),
                Some(json(&sample(i))),
                "{i}"
            );
        }
        assert_eq!(events.pop_front(), Some(99), "trimmed, it counts as given");
        assert_eq!(events.get(0).map(kept_json), Some(json(&sample(0))));
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
