//! How a generation's log is laid out in its Redis Stream, written by the
//! mirror and read by remote followers: several events to an entry, so that
//! Redis is asked for one command per flush rather than one per token.
//!
//! An entry's id is `<end>-<beat>`: `end` is the sequence number after its
//! last event, so the entries a client needs from position `n` on are those
//! after id `<n>-0`; `beat` counts the event-less entries the runner writes
//! while its upstream is silent, which tell followers it is still there.
//! Fields: `o`, the owner; `e`, the events as a JSON array (absent on a
//! heartbeat); `d`, present on the last entry of a finished log.

use redis::streams::StreamId as RedisEntry;

use crate::event::StreamEvent;

/// An entry's place in the log: after `end` events, the `beat`-th entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Place {
    pub(super) end: u64,
    pub(super) beat: u64,
}

impl Place {
    pub(super) fn parse(id: &str) -> Option<Self> {
        let (end, beat) = id.split_once('-')?;
        Some(Self {
            end: end.parse().ok()?,
            beat: beat.parse().ok()?,
        })
    }

    /// The id to read after for the events from sequence number `seq` on:
    /// the entries that end past it, and the heartbeats at it.
    pub(super) fn before(seq: u64) -> Self {
        Self { end: seq, beat: 0 }
    }

    pub(super) fn id(self) -> String {
        format!("{}-{}", self.end, self.beat)
    }
}

/// One entry, read back.
#[derive(Debug)]
pub(super) struct Stored {
    pub(super) place: Place,
    pub(super) owner: Option<String>,
    pub(super) events: Vec<StreamEvent>,
    pub(super) done: bool,
}

impl Stored {
    /// `None` when the entry is not one of ours, or its events do not parse.
    pub(super) fn read(entry: &RedisEntry) -> Option<Self> {
        let events = match entry.get::<Vec<u8>>("e") {
            Some(json) => serde_json::from_slice(&json).ok()?,
            None => Vec::new(),
        };
        Some(Self {
            place: Place::parse(&entry.id)?,
            owner: entry.get("o"),
            events,
            done: entry.contains_key("d"),
        })
    }

    /// The sequence number of the entry's first event.
    pub(super) fn first(&self) -> u64 {
        self.place.end.saturating_sub(self.events.len() as u64)
    }
}

/// Events waiting for the next flush, already in their stored form.
#[derive(Debug, Default)]
pub(super) struct Pending {
    json: Vec<u8>,
    count: usize,
    /// The sequence number after the last event (once there is one).
    end: u64,
}

impl Pending {
    pub(super) fn push(&mut self, seq: u64, event: &StreamEvent) {
        self.json.push(if self.count == 0 { b'[' } else { b',' });
        // Serialising our own event type into memory cannot fail.
        let _ = serde_json::to_writer(&mut self.json, event);
        self.count += 1;
        self.end = seq + 1;
    }

    pub(super) fn count(&self) -> usize {
        self.count
    }

    pub(super) fn bytes(&self) -> usize {
        self.json.len()
    }

    /// Where the entry holding these events goes after `top`, the last one
    /// written: a heartbeat when there are none.
    pub(super) fn place_after(&self, top: Place) -> Place {
        if self.count == 0 {
            Place {
                end: top.end,
                beat: top.beat + 1,
            }
        } else {
            Place {
                end: self.end,
                beat: 0,
            }
        }
    }

    /// The `e` field's value, emptying the batch; `None` for a heartbeat.
    pub(super) fn take(&mut self) -> Option<Vec<u8>> {
        if self.count == 0 {
            return None;
        }
        self.count = 0;
        let mut json = std::mem::take(&mut self.json);
        json.push(b']');
        Some(json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ErrorCode;

    fn entry(id: &str, fields: &[(&str, &[u8])]) -> RedisEntry {
        RedisEntry {
            id: id.to_owned(),
            map: fields
                .iter()
                .map(|(name, value)| ((*name).to_owned(), redis::Value::BulkString(value.to_vec())))
                .collect(),
            ..RedisEntry::default()
        }
    }

    fn json(events: &[StreamEvent]) -> serde_json::Value {
        serde_json::to_value(events).unwrap_or_default()
    }

    #[test]
    fn places_order_by_end_then_beat_and_read_back() {
        assert_eq!(Place::parse("12-3"), Some(Place { end: 12, beat: 3 }));
        assert_eq!(
            Place::parse("18446744073709551615-0").map(|place| place.end),
            Some(u64::MAX)
        );
        assert_eq!(Place::parse("junk"), None);
        assert_eq!(Place::parse("1-x"), None);
        assert!(Place { end: 3, beat: 9 } < Place { end: 4, beat: 0 });
        assert_eq!(Place::before(7).id(), "7-0");
    }

    #[test]
    fn pending_events_become_one_entry_and_a_silence_a_heartbeat() {
        let mut pending = Pending::default();
        let top = Place { end: 5, beat: 2 };
        assert_eq!(pending.place_after(top), Place { end: 5, beat: 3 });
        assert_eq!(pending.take(), None);
        let events = [
            StreamEvent::Reasoning {
                token: "a".to_owned(),
                choice: None,
            },
            StreamEvent::error(ErrorCode::UpstreamError, "b"),
        ];

        pending.push(5, &events[0]);
        pending.push(6, &events[1]);
        assert_eq!(pending.count(), 2);
        assert_eq!(pending.place_after(top), Place { end: 7, beat: 0 });
        let taken = pending.take().unwrap_or_default();
        let stored = Stored::read(&entry(
            "7-0",
            &[("o", b"key:x"), ("e", &taken), ("d", b"1")],
        ))
        .unwrap_or_else(|| panic!("unreadable: {}", String::from_utf8_lossy(&taken)));

        assert_eq!(stored.place, Place { end: 7, beat: 0 });
        assert_eq!(stored.owner.as_deref(), Some("key:x"));
        assert_eq!(json(&stored.events), json(&events));
        assert!(stored.done);
        assert_eq!(stored.first(), 5);
        assert_eq!((pending.count(), pending.bytes()), (0, 0), "taken");
    }

    #[test]
    fn an_entry_that_is_not_ours_is_refused() {
        assert!(Stored::read(&entry("3-0", &[("e", b"[{\"type\":")])).is_none());
        assert!(Stored::read(&entry("x", &[("o", b"key:x")])).is_none());
        let beat = Stored::read(&entry("3-1", &[("o", b"key:x")]));
        assert_eq!(
            beat.map(|stored| (stored.events.len(), stored.done)),
            Some((0, false))
        );
    }
}
