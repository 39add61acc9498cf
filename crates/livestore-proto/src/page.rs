//! Cutting a run of stored events into `PullResponse` pages (spec §6.7).
//!
//! A page holds at most [`MAX_EVENTS_PER_PAGE`] events and at most [`MAX_PAGE_BYTES`] bytes of JSON; every page but
//! the last says `MoreKnown{remaining}`, the last says `NoMore`. An event too large for any page still goes out,
//! alone in its page: refusing it would wedge every client behind it.

/// At most this many events per page (`MAX_PULL_EVENTS_PER_MESSAGE` in sync-cf).
pub const MAX_EVENTS_PER_PAGE: usize = 100;

/// At most this many bytes of `PullResponse` JSON per page (sync-cf's 900 KB rule).
pub const MAX_PAGE_BYTES: usize = 900_000;

/// Bytes a page needs besides its items: `{"batch":[`, `],"pageInfo":{"_tag":"MoreKnown","remaining":N}`,
/// `,"backendId":` and `}` with a 16-digit `remaining`.
const PAGE_OVERHEAD_BYTES: usize = 80;

/// One stored event, as the pager needs it.
#[derive(Debug, Clone, Copy)]
pub struct StoredEventRef<'a> {
    /// The event's global sequence number.
    pub seq_num: u64,
    /// The event's compact JSON (`EncodedEvent::to_json`).
    pub encoded_json: &'a str,
    /// When the server accepted the event (ISO-8601), sent as `SyncMetadata.createdAt`.
    pub created_at: &'a str,
}

/// A finished page: one `PullResponse` as JSON, ready to splice into a `Chunk`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The `PullResponse` JSON text.
    pub json: String,
    /// Sequence number of the first event, 0 for an empty page.
    pub first_seq_num: u64,
    /// Sequence number of the last event, 0 for an empty page.
    pub last_seq_num: u64,
    /// Number of events in the page.
    pub event_count: usize,
}

/// Accumulates events into pages for a pull that ends at `target_head`.
#[derive(Debug)]
pub struct PageBuilder {
    backend_id_json: String,
    target_head: u64,
    items: String,
    item_count: usize,
    first_seq_num: u64,
    last_seq_num: u64,
}

impl PageBuilder {
    /// Starts pages for a pull whose last event will be `target_head` (needed for `remaining`).
    pub fn new(backend_id: &str, target_head: u64) -> Self {
        PageBuilder {
            backend_id_json: serde_json::to_string(backend_id).expect("a &str serializes"),
            target_head,
            items: String::new(),
            item_count: 0,
            first_seq_num: 0,
            last_seq_num: 0,
        }
    }

    /// Adds an event; returns the previous page when this event does not fit in it.
    pub fn add(&mut self, event: StoredEventRef<'_>) -> Option<Page> {
        let item_len = event.encoded_json.len() + event.created_at.len() + 110;
        let full = self.item_count > 0
            && (self.item_count >= MAX_EVENTS_PER_PAGE
                || self.items.len() + item_len + self.backend_id_json.len() + PAGE_OVERHEAD_BYTES
                    > MAX_PAGE_BYTES);
        let finished = if full { Some(self.take_page()) } else { None };
        if self.item_count > 0 {
            self.items.push(',');
        } else {
            self.first_seq_num = event.seq_num;
        }
        self.items.push_str(r#"{"eventEncoded":"#);
        self.items.push_str(event.encoded_json);
        self.items.push_str(
            r#","metadata":{"_tag":"Some","value":{"_tag":"SyncMessage.SyncMetadata","createdAt":"#,
        );
        self.items.push_str(&serde_json::to_string(event.created_at).expect("a &str serializes"));
        self.items.push_str("}}}");
        self.item_count += 1;
        self.last_seq_num = event.seq_num;
        finished
    }

    /// Closes the last page, if it holds any event.
    pub fn finish(mut self) -> Option<Page> {
        if self.item_count == 0 { None } else { Some(self.take_page()) }
    }

    fn take_page(&mut self) -> Page {
        let remaining = self.target_head.saturating_sub(self.last_seq_num);
        let page_info = if remaining == 0 {
            r#"{"_tag":"NoMore"}"#.to_owned()
        } else {
            format!(r#"{{"_tag":"MoreKnown","remaining":{remaining}}}"#)
        };
        // The page is built in the items' own allocation (shifted right for the prefix), not copied into a new
        // string: with large events a page is megabytes, and every copy is memory a slow client can make us hold.
        let mut json = std::mem::take(&mut self.items);
        json.reserve(page_info.len() + self.backend_id_json.len() + 40);
        json.insert_str(0, r#"{"batch":["#);
        json.push_str(r#"],"pageInfo":"#);
        json.push_str(&page_info);
        json.push_str(r#","backendId":"#);
        json.push_str(&self.backend_id_json);
        json.push('}');
        let page = Page {
            json,
            first_seq_num: self.first_seq_num,
            last_seq_num: self.last_seq_num,
            event_count: self.item_count,
        };
        self.item_count = 0;
        self.first_seq_num = 0;
        self.last_seq_num = 0;
        page
    }
}

/// The page a pull gets when there is nothing to send: no events, `NoMore`.
pub fn empty_page(backend_id: &str) -> Page {
    Page {
        json: format!(
            r#"{{"batch":[],"pageInfo":{{"_tag":"NoMore"}},"backendId":{}}}"#,
            serde_json::to_string(backend_id).expect("a &str serializes")
        ),
        first_seq_num: 0,
        last_seq_num: 0,
        event_count: 0,
    }
}

/// Pages for a complete run of events ending at its last event (used for live fan-out of one accepted batch).
pub fn paginate<'a>(
    backend_id: &str,
    events: impl IntoIterator<Item = StoredEventRef<'a>>,
) -> Vec<Page> {
    let events: Vec<StoredEventRef<'a>> = events.into_iter().collect();
    let Some(last) = events.last() else { return vec![empty_page(backend_id)] };
    let mut builder = PageBuilder::new(backend_id, last.seq_num);
    let mut pages: Vec<Page> = events.iter().filter_map(|event| builder.add(*event)).collect();
    pages.extend(builder.finish());
    pages
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(count: u64, args_len: usize) -> Vec<(u64, String)> {
        (1..=count)
            .map(|seq| {
                let args = "x".repeat(args_len);
                (seq, format!(r#"{{"name":"e","args":"{args}","seqNum":{seq},"parentSeqNum":{},"clientId":"c","sessionId":"s"}}"#, seq - 1))
            })
            .collect()
    }

    fn refs(events: &[(u64, String)]) -> Vec<StoredEventRef<'_>> {
        events
            .iter()
            .map(|(seq, json)| StoredEventRef {
                seq_num: *seq,
                encoded_json: json,
                created_at: "2026-01-01T00:00:00.000Z",
            })
            .collect()
    }

    #[test]
    fn pages_of_at_most_100_events_with_remaining() {
        let stored = events(250, 10);
        let pages = paginate("b1", refs(&stored));
        let counts: Vec<usize> = pages.iter().map(|page| page.event_count).collect();
        assert_eq!(counts, [100, 100, 50]);
        assert!(pages[0].json.contains(r#""pageInfo":{"_tag":"MoreKnown","remaining":150}"#));
        assert!(pages[1].json.contains(r#""remaining":50}"#));
        assert!(pages[2].json.contains(r#""pageInfo":{"_tag":"NoMore"}"#));
        for page in &pages {
            let value: serde_json::Value = serde_json::from_str(&page.json).unwrap();
            assert_eq!(value["batch"].as_array().unwrap().len(), page.event_count);
            assert_eq!(value["backendId"], "b1");
        }
    }

    #[test]
    fn pages_stay_under_the_byte_limit() {
        let stored = events(40, 100_000);
        let pages = paginate("b1", refs(&stored));
        assert!(pages.len() >= 5);
        for page in &pages {
            assert!(page.json.len() <= MAX_PAGE_BYTES, "page of {} bytes", page.json.len());
        }
        assert_eq!(pages.iter().map(|page| page.event_count).sum::<usize>(), 40);
    }

    #[test]
    fn an_oversized_event_travels_alone() {
        let stored = events(3, 1_000_000);
        let pages = paginate("b1", refs(&stored));
        assert_eq!(pages.iter().map(|page| page.event_count).collect::<Vec<_>>(), [1, 1, 1]);
    }

    #[test]
    fn nothing_to_send_is_one_empty_no_more_page() {
        let pages = paginate("b1", []);
        assert_eq!(pages, [empty_page("b1")]);
        assert_eq!(pages[0].json, r#"{"batch":[],"pageInfo":{"_tag":"NoMore"},"backendId":"b1"}"#);
    }
}
