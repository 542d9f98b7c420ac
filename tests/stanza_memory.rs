//! Memory proportional to input (issue 12): reading any one stanza through the stream reader
//! (framer, parser, tree) allocates at most a small constant times its size at its peak, whatever
//! its shape. A counting allocator measures the peak of live bytes while each adversarial stanza
//! is read; the namespace-sharing case is the one that used to multiply (a long namespace URI
//! copied into every element).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use stratus::xml::{Limits, StreamEvent, spawn_stream_reader};
use tokio::io::AsyncWriteExt;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static A: Counting = Counting;

/// The bound this test holds the reader to: peak bytes per byte of stanza.
const MAX_RATIO: usize = 48;

const HEADER: &str = "<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='x'>";

/// Peak live bytes, above what was live before, while one stanza is read and handed over.
fn peak_while_reading(stanza: &str) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let input = format!("{HEADER}{stanza}</stream:stream>").into_bytes();
    rt.block_on(async move {
        // Everything from here on counts: the socket buffer, the reader's buffers, the tree.
        let before = LIVE.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let (mut rx, _task) = spawn_stream_reader(server, Limits::default(), 4);
        let writer = tokio::spawn(async move {
            client.write_all(&input).await.unwrap();
            drop(input);
        });
        assert!(matches!(rx.recv().await, Some(Ok(StreamEvent::Open(_)))));
        let got = rx.recv().await;
        assert!(
            matches!(got, Some(Ok(StreamEvent::Stanza(_)))),
            "not read as a stanza: {:?}",
            got.map(|g| g.map(|e| match e {
                StreamEvent::Rejected(r) => r.reason,
                _ => String::new(),
            }))
        );
        let peak = PEAK.load(Ordering::Relaxed) - before;
        drop(got);
        writer.await.unwrap();
        peak
    })
}

fn wrap(inner: &str) -> String {
    format!("<message from='a@b/c' to='ps.b' id='m'>{inner}</message>")
}

#[test]
fn peak_memory_is_a_small_multiple_of_the_stanza() {
    let uri = format!("urn:{}", "n".repeat(1000));
    let chunk = |el: &str, n: usize| format!("<g>{}</g>", el.repeat(n));
    let cases: Vec<(&str, String)> = vec![
        (
            "a 1000-byte namespace shared by 40,000 elements",
            wrap(&format!(
                "<p:r xmlns:p='{uri}'>{}</p:r>",
                chunk("<p:a/>", 4000).repeat(10)
            )),
        ),
        (
            "48,000 tiny elements",
            wrap(&chunk("<a/>", 4000).repeat(12)),
        ),
        (
            "64 attributes on each of 600 elements",
            wrap(&chunk(
                &format!(
                    "<a {}/>",
                    (0..63)
                        .map(|i| format!("b{i}=''"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
                600,
            )),
        ),
        (
            "nesting 47 deep, again and again",
            wrap(&format!("{}{}", "<d>".repeat(46), "</d>".repeat(46)).repeat(500)),
        ),
        ("one long text", wrap(&"t&amp;".repeat(40_000))),
        (
            "prefixed attributes",
            wrap(&format!(
                "<r xmlns:p='urn:p'>{}</r>",
                chunk("<a p:x='1'/>", 4000).repeat(4)
            )),
        ),
    ];
    for (what, stanza) in cases {
        let size = stanza.len();
        assert!(size <= Limits::default().max_stanza_bytes, "{what}: {size}");
        let peak = peak_while_reading(&stanza);
        let ratio = peak as f64 / size as f64;
        println!("{what}: {size} bytes, peak {peak} bytes ({ratio:.1}x)");
        assert!(
            peak <= MAX_RATIO * size,
            "{what}: reading {size} bytes took {peak} bytes at the peak ({ratio:.1}x > {MAX_RATIO}x)"
        );
    }
}
